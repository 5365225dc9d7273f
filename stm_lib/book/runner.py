"""Run one table: `run(TABLES["5"], "proxy", seeds=3) -> Result`.

    profile (tables.PROFILES) < table (Table.parts' data) < notebook overrides
        -> one `Config` per (row, seed) -> engine train + evaluate -> `Row.seeds` -> claims -> Result

Seeds vary the initialisation, sampling and order (`train.seed`); the proxy data itself is fixed
(`data.proxy_seed` is the table's). A run is identified by its resolved config (model, data,
recipe, seed; `cache_key`), trained once into `<cache_dir>/<key>/` and reused by every table that
needs it. The page reads only the Result, so nothing here draws or writes prose.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import shutil
import time
from pathlib import Path

from stm_lib.book import stats
from stm_lib.book.result import Complexity, Result, Row, SeedRun, Speed, make_claims, paper_text
from stm_lib.book.tables import GPU_SEEDS, GPU_SPEED, Table, check_profile, get
from stm_lib.config import Config, full_recipe
from stm_lib.models import describe_widths, get_variant
from stm_lib.io import atomic_copy, atomic_write_json, atomic_write_text, locked

# small files of a cached run copied next to results.json (checkpoints stay in the cache)
RUN_FILES = ("config.yaml", "command.txt", "metrics.csv", "metrics.jsonl", "run.json")
BACKBONE = "backbone.pth"   # a pre-training run's weights without fc: what its fine-tunes start from
# Bump when a code change alters what an unchanged Config trains (engine, models, data): every
# cached run is then trained again. Each cached run records the commit that trained it.
CACHE_EPOCH = 1
# A proxy generator's version enters a run's key after the versions the committed runs were trained
# on (temporal 4, scene 5), so their keys stay as recorded; a later generator gives new keys rather
# than a run trained on the old clips.
_KEYED_AFTER = {"proxy-temporal": 4, "proxy-scene": 5}
# Config fields that do not change what a run computes (left out of its identity)
_NOT_IDENTITY = {"train": ("out", "resume", "progress", "tensorboard", "checkpoint_every_steps", "device", "compile_mode"),
                 "data": ("num_workers", "proxy_cache", "data_root")}


def run(table: str | Table, profile: str = "proxy", seeds: int | list[int] | None = None, *,
        dataset: str | None = None, data_root: str | None = None, frames: int | None = None,
        epochs: int | None = None, device: str = "auto", out_dir: str = "runs/scratch",
        overrides: dict | None = None, models: list[str] | None = None, threads: int | None = None,
        cache_dir: str | None = None) -> Result:
    """Train and evaluate every trainable row of `table` under `profile` with `seeds` (a count,
    or explicit seed values; None: the profile's count, GPU_SEEDS for proxy on a GPU)."""
    r = _make(table, profile, seeds, dataset, data_root, frames, epochs, device, out_dir, overrides, models, cache_dir)
    _set_threads(threads if threads is not None else r.p.get("threads"))
    r.out.mkdir(parents=True, exist_ok=True)
    return r.go()


def plan(table: str | Table, profile: str = "proxy", seeds: int | list[int] | None = None, *,
         dataset: str | None = None, data_root: str | None = None, frames: int | None = None,
         epochs: int | None = None, device: str = "auto", overrides: dict | None = None,
         models: list[str] | None = None) -> list[tuple[str, str, int, Config]]:
    """Every run `run` would train, without training anything: (row id, part, seed, Config).
    Fine-tuning runs (Table 4) name their pre-trained weights "<pretrain:MODEL:sSEED>"."""
    r = _make(table, profile, seeds, dataset, data_root, frames, epochs, device, "runs/scratch", overrides, models,
              None)
    rows, out = r.rows(), []
    parts = ([r.t.pretrain] if r.t.pretrain else []) + list(r.t.parts)
    for part in parts:
        for row in rows:
            if row.reason or (part is r.t.pretrain and "Kinetics" not in str(row.info.get("pretrain", ""))):
                continue
            for seed in r.seeds:
                init = (f"<pretrain:{row.model}:s{seed}>" if r.t.pretrain and part is not r.t.pretrain
                        and "Kinetics" in str(row.info.get("pretrain", "")) else None)
                out.append((row.id, part.name, seed, r.config(row.model, row.run_frames, part.name, seed, init,
                                                              finetune=init is not None)))
    return out


def _make(table, profile, seeds, dataset, data_root, frames, epochs, device, out_dir, overrides, models,
          cache_dir) -> "_Run":
    t = get(table.id if isinstance(table, Table) else table)
    p = check_profile(profile)
    if profile == "full" and not data_root:
        raise ValueError("profile 'full' trains on the real dataset: pass data_root (make reproduce ... "
                         "DATA_ROOT=/path/to/dataset)")
    return _Run(t, profile, p, _seeds(seeds, profile), dataset, data_root, frames, epochs, device, Path(out_dir),
                overrides or {}, models, Path(cache_dir) if cache_dir else Path(out_dir) / "_cache")


def _seeds(seeds, profile: str) -> list[int]:
    if isinstance(seeds, (list, tuple)):
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds: give distinct seed values, got {seeds!r}")
        return [int(s) for s in seeds]
    if seeds is None:
        import torch

        seeds = GPU_SEEDS if profile == "proxy" and torch.cuda.is_available() else check_profile(profile)["seeds"]
    if int(seeds) < 1:
        raise ValueError(f"seeds: at least 1, got {seeds}")
    return list(range(int(seeds)))


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _set_threads(n) -> None:
    """Tiny proxy models are dominated by per-op overhead: on a CPU shared with other jobs one
    thread was 3-5x faster than two here (measured), so smoke/proxy use 1 unless told."""
    import torch

    if n and not torch.cuda.is_available():
        torch.set_num_threads(int(n))


@dataclasses.dataclass
class _Run:
    t: Table
    profile: str
    p: dict
    seeds: list[int]
    dataset: str | None
    data_root: str | None
    frames: int | None
    epochs: int | None
    device: str
    out: Path
    overrides: dict
    models: list[str] | None
    cache: Path

    def go(self) -> Result:
        t0 = time.time()
        rows = self.rows()
        if self.t.complexity:
            self.measure_complexity(rows)
        if self.t.speed:
            self.measure_speed(rows)
        pretrained = self.pretrain(rows) if self.t.pretrain else {}
        for part in self.t.parts:
            self.train_part(rows, part, pretrained)
        chance = {part.metric: self.t.chance(self.profile, part.name) for part in self.t.parts}
        by_id = {r.id: r for r in rows}
        claims = make_claims(by_id, [(a, b, part.metric) for part in self.t.parts for a, b in self.t.claims
                                     if a in by_id and b in by_id], chance)
        return Result(self.t.id, self.profile, self.t.title, self.t.caption, rows, claims, self.settings(),
                      self.seeds, chance, extra={"speed_setting": getattr(self, "speed_setting", None),
                                                 "notebook_seconds": round(time.time() - t0, 1)})

    # ---- rows ------------------------------------------------------------------------------
    def rows(self) -> list[Row]:
        rows = []
        for d in self.t.paper_rows():
            paper = {k.removeprefix("paper_"): paper_text(v) for k, v in d.items() if k.startswith("paper_") and v is not None}
            info = {k: v for k, v in d.items()
                    if k not in ("id", "setting", "model", "frames") and not k.startswith("paper_")}
            rows.append(Row(d["id"], d["setting"], d["model"], d["frames"], "not_run", "", info=info, paper=paper))
        if self.profile != "full":
            for model, setting in self.t.references:
                rows.append(Row(model, setting, model, 8, "not_run", "", reference=True))
        known = {r.id for r in rows} | {r.model for r in rows}
        for name in self.models or []:   # your own variant (book: "Run your own ablation")
            if name not in known:
                from stm_lib.models import get_variant

                get_variant(name)   # an unknown name fails here, with the list of known ones
                rows.append(Row(name, f"{name} (your variant)", name, 8, "not_run", "", reference=True))
        for r in rows:
            why = self.wanted(r, rows)
            r.reason = "" if why is True else why
            if why is True:
                r.run_frames = self.run_frames(r)
        return rows

    def wanted(self, row: Row, rows: list[Row]) -> bool | str:
        """True to train `row`, else the reason it is not run."""
        if row.model is None:
            return "other method"
        if self.models is not None and row.id not in self.models and row.model not in self.models:
            return "not selected"
        has_8 = any(r.model == row.model and r.frames == 8 for r in rows)
        if row.frames == 16 and has_8 and self.profile != "full" and not self.p["sixteen_frames"] and not self.frames:
            return "budget (16 frames)"
        if row.frames == 16 and has_8 and self.frames and self.frames != 16:
            return "duplicate of the 8-frame row at this frame count"
        return True

    def run_frames(self, row: Row) -> int:
        """Frames a row is trained with: the paper's at full scale, the profile's otherwise."""
        if self.frames:
            return int(self.frames)
        if self.profile == "full":
            return int(row.frames)
        return int(self.p["frames"]) * (2 if int(row.frames) == 16 and self.p["sixteen_frames"] else 1)

    # ---- configuration ----------------------------------------------------------------------
    def config(self, model: str, frames: int, part: str, seed: int, pretrained: str | None = None,
               finetune: bool = False) -> Config:
        """One run's Config: profile, then table, then notebook overrides."""
        p = self.p
        base_ep, base_steps, lr_mult = p["epochs"], p["lr_steps"], 1.0
        if finetune and self.profile == "full":   # section 4.2: fine-tune at lr 0.001, 25 epochs, x0.1 at 15
            base_ep, base_steps, lr_mult = 25, (15,), 0.1
        ep = self.epochs or base_ep
        steps = [s for s in (round(s * ep / base_ep) for s in base_steps) if 0 < s < ep]
        data = self.t.data(self.profile, part)
        if self.dataset:
            data["dataset"] = self.dataset
        root = self.data_root
        if self.profile == "full" and self.t.pretrain and root:   # Table 4: <root>/{kinetics400,ucf101,hmdb51}
            root = str(Path(root) / data["dataset"])
        batch = full_recipe(frames)["batch_size"] if self.profile == "full" else p["batch_size"]
        if get_variant(model).flow_stack and data["dataset"].startswith("proxy-"):   # two-stream: the proxy's flow
            from stm_lib.config import DataConfig
            from stm_lib.data.proxy import proxy_path

            data["flow_root"] = str(proxy_path(data["dataset"].split("-", 1)[1], DataConfig(**data))[0] / "flow")
        pre = pretrained if pretrained is not None else p["pretrained"]
        if pre and pre.startswith("runs/"):   # the shared start, committed in this repository (stm pretrain)
            from stm_lib.pretrain import verify
            from stm_lib.provenance import ROOT

            pre = verify(ROOT / pre)
        d = {
            "model": dict(name=model, frames=frames, num_classes=0, width_mult=p["width_mult"], pretrained=pre),
            "data": dict(data, data_root=root, input_size=p["input_size"], num_workers=p["num_workers"],
                         test_clips=p["clips"], test_crops=p["crops"]),
            "train": dict(epochs=ep, batch_size=batch, lr=p["lr"] * lr_mult, lr_steps=steps, device=self.device,
                          seed=seed, tensorboard=False, progress=False, **p.get("train", {})),
        }
        return Config.from_dict(d).merge(self.overrides)

    def settings(self) -> dict:
        p, part = self.p, (self.t.pretrain or self.t.parts[0]).name
        d = self.t.data(self.profile, part)
        return {"table": self.t.id, "profile": self.profile, "dataset": self.dataset or d["dataset"],
                "data_root": self.data_root, "frames": self.frames or p["frames"], "epochs": self.epochs or p["epochs"],
                "lr_steps": list(p["lr_steps"]), "width_mult": p["width_mult"], "input_size": p["input_size"],
                "batch_size": p["batch_size"], "lr": p["lr"], "device": self.device, "seeds": self.seeds,
                "recipe_changes": p.get("train") or None, "eval_views": f"{p['clips']} clip x {p['crops']} crop",
                "proxy": {k: v for k, v in d.items() if k.startswith("proxy_")} or None,
                "parts": {x.name: self.t.data(self.profile, x.name) for x in self.t.parts if x.name},
                "overrides": self.overrides or None, "models": self.models,
                "convergence_rule": stats.CONVERGENCE_RULE, "frames_semantics": self.t.frames,
                "stm_channels": describe_widths(self.config("stm", 8, part, 0).model) if self.t.train else None,
                "torch_threads": _torch_threads()}

    # ---- training ---------------------------------------------------------------------------
    def train_part(self, rows: list[Row], part, pretrained: dict) -> None:
        m1 = part.metric
        m5 = m1.replace("top1", "top5")
        for r in rows:
            if r.reason:
                continue
            for seed in self.seeds:
                init = pretrained.get((r.model, seed))
                cfg = self.config(r.model, r.run_frames, part.name, seed, init, finetune=init is not None)
                sr, ev = self.train_eval(cfg, self.label(r, part.name, seed))
                if cfg.data.flow_root and cfg.data.dataset.startswith("proxy-"):   # what the motion stream cost
                    r.info.setdefault("flow_cost", {})[part.name] = _prepare_proxy(cfg)
                r.seeds.setdefault(m1, []).append(ev["top1"])
                r.seeds.setdefault(m5, []).append(ev["top5"])
                r.n_val[m1] = r.n_val[m5] = ev["n"]
                sr.part, sr.metrics = part.name, {m1: ev["top1"], m5: ev["top5"]}
                r.runs.append(sr)
            r.status = self.profile

    def pretrain(self, rows: list[Row]) -> dict:
        """Table 4: pre-train every row whose paper pre-training includes Kinetics on the scene proxy
        (full: Kinetics-400); {(model, seed): backbone weights} to fine-tune from, seed by seed."""
        out, part = {}, self.t.pretrain
        for r in rows:
            if r.reason or "Kinetics" not in str(r.info.get("pretrain", "")):
                continue
            for seed in self.seeds:
                if (r.model, seed) in out:
                    continue
                cfg = self.config(r.model, r.run_frames, part.name, seed)
                sr, ev = self.train_eval(cfg, self.label(r, part.name, seed), need_weights=True)
                r.seeds.setdefault(part.metric, []).append(ev["top1"])
                r.n_val[part.metric] = ev["n"]
                sr.part, sr.metrics = part.name, {part.metric: ev["top1"]}
                r.runs.append(sr)
                out[(r.model, seed)] = export_backbone(self.cache.resolve() / sr.cache)
        return out

    def label(self, r: Row, part: str, seed: int) -> str:
        return f"{r.id}{'-' + part if part else ''}-s{seed}"

    def train_eval(self, cfg: Config, label: str, need_weights: bool = False) -> tuple[SeedRun, dict]:
        """One cached run: train if its config was never trained, evaluate, copy its small files
        to train/<label>/ beside results.json, and return its record."""
        t0 = time.time()
        print(f"[{label}] {cfg.model.name}, {cfg.model.frames} frames, {cfg.data.dataset}, {cfg.train.epochs} epochs, "
              f"seed {cfg.train.seed}", flush=True)
        key, run_dir, ev, cached = train_cached(cfg, self.cache, self.profile, need_weights)
        hist = read_metrics(run_dir)
        val = [100 * h["val_top1"] for h in hist if h.get("val_top1") is not None]
        local = self.out / "train" / label
        local.mkdir(parents=True, exist_ok=True)
        for name in (*RUN_FILES, *([ev["file"]] if ev.get("file") else [])):
            src = run_file(run_dir, name, run_dir / "done.json")   # a plain file of this run folder, or refused
            if src.is_file():
                atomic_copy(src, local / name)
        print(f"  -> top-1 {ev['top1']:.1f}%  top-5 {ev['top5']:.1f}%  on {ev['n']} clips  "
              f"({'cached run ' + key if cached else f'{time.time() - t0:.0f} s'})", flush=True)
        sr = SeedRun(cfg.train.seed, str(local.relative_to(self.out)), epochs=len(hist), val_top1=val,
                     train_loss=[h["train_loss"] for h in hist if h.get("train_loss") is not None],
                     converged=stats.converged(val), config=json.loads(json.dumps(cfg.to_dict(), default=list)),
                     wall_time_s=ev.get("train_seconds"), cache=key, commit=(ev.get("git") or {}).get("commit"),
                     trained_on=trained_on(run_dir))
        return sr, ev

    # ---- complexity and speed (Tables 8, 9) -------------------------------------------------
    def measure_complexity(self, rows: list[Row]) -> None:
        """Params and FLOPs at the paper's scale (224 px, 174 classes, width 1), whatever the
        profile: they need no data, so they are exact and compared at the paper's precision."""
        from stm_lib.profile import profile_model

        for r in rows:
            if r.model is None:
                continue
            c = profile_model(r.model, int(r.frames), 174, 224, 1.0)
            r.complexity = Complexity(int(c["params"]), int(c["flops"]),
                                      {"frames": int(r.frames), "input_size": 224, "num_classes": 174, "width_mult": 1.0})
            if r.status == "not_run" and r.exact("params_m") is not False and r.exact("flops_g") is not False:
                r.status = "exact"   # becomes the profile's once its accuracy is trained
            print(f"{r.id}: {r.complexity.params_m:.2f}M params, {r.complexity.flops_g:.3f}G FLOPs", flush=True)

    def measure_speed(self, rows: list[Row]) -> None:
        """Videos/s of the forward pass (Table 9 protocol: batch 16, data loading excluded) of TSN,
        TSM and every row's model at the table's `speed_frames`, all in this process on the same
        device; TSN / TSM rows the table lacks are added as speed references."""
        from stm_lib.config import ModelConfig
        from stm_lib.engine.distributed import resolve_device
        from stm_lib.models import build_model
        from stm_lib.profile import measure_throughput

        models = list(dict.fromkeys(["tsn", "tsm"] + [r.model for r in rows if r.model]))
        frames = self.t.speed_frames
        sp = dict(self.p["speed"])
        dev = resolve_device(self.device)
        if dev.type == "cuda" and self.profile == "proxy":
            sp.update(GPU_SPEED)
        measured = {}
        for t in frames:
            for name in models:
                m = build_model(ModelConfig(name=name, frames=t, num_classes=174, width_mult=sp["width_mult"]))
                measured[(name, t)] = measure_throughput(m, t, sp["input_size"], sp["batch_size"], str(dev),
                                                         sp["warmup"], sp["repeats"])
                print(f"{name} {t}F: {measured[(name, t)]['videos_per_s']:.2f} videos/s", flush=True)
                del m
        by_model = {(r.model, r.frames): r for r in rows if r.model}
        for (name, t), res in measured.items():
            if (name, t) not in by_model:
                by_model[(name, t)] = Row(f"{name}-{t}", f"{name.upper()} (speed reference)", name, t, "not_run",
                                          "speed reference", reference=True)
                rows.append(by_model[(name, t)])
            by_model[(name, t)].speed = Speed(res["videos_per_s"], res["device"],
                                              res["videos_per_s"] / measured[("tsn", t)]["videos_per_s"],
                                              res["videos_per_s"] / measured[("tsm", t)]["videos_per_s"], sp)
        self.speed_setting = {**sp, "device": next(iter(measured.values()))["device"]}


# ---- the run cache ------------------------------------------------------------------------------

def cache_key(cfg: Config, cache_dir: str | Path | None = None) -> str:
    """What a run computes (model, data and its proxy generator's version, recipe, seed, evaluation
    views), hashed: the same key is the same run. Paths inside the cache (a pre-trained backbone)
    count by their cache location."""
    d = cfg.to_dict()
    for section, names in _NOT_IDENTITY.items():
        for n in names:
            d[section].pop(n, None)
    if d["data"].get("flow_root"):   # where the flow lies is not what it is (unset: keys as before)
        d["data"]["flow_root"] = "set"
    pre = d["model"].get("pretrained")
    if pre and cache_dir and Path(pre).is_absolute() and Path(pre).is_relative_to(Path(cache_dir).resolve()):
        d["model"]["pretrained"] = "cache:" + str(Path(pre).relative_to(Path(cache_dir).resolve()))
    elif pre and (Path(pre).parent / "pretrain.json").is_file():   # the shared start: what it is, not where
        from stm_lib.pretrain import RECORD

        d["model"]["pretrained"] = "start:" + json.loads((Path(pre).parent / RECORD).read_text())["sha256"]
    ds = d["data"].get("dataset")
    if ds in _KEYED_AFTER:
        from stm_lib.data import proxy

        v = proxy.version(ds.removeprefix("proxy-"))
        if v > _KEYED_AFTER[ds]:
            d["data"]["proxy_version"] = v
    blob = json.dumps({"cache_epoch": CACHE_EPOCH, **d}, sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def train_cached(cfg: Config, cache_dir: str | Path, profile: str, need_weights: bool = False,
                 resume: bool = False) -> tuple[str, Path, dict, bool]:
    """`_train_cached` holding the cache entry's lock (`<cache>/.<key>.lock`): one writer per run.
    Without it a second `stm reproduce` in the same tree took the first's unfinished run folder
    for an interrupted one and deleted it; now it waits, then reuses the finished run."""
    cache_dir = Path(cache_dir).resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(cfg, cache_dir)
    wait = lambda: print(f"  waiting: another process is training run {key}", flush=True)  # noqa: E731
    with locked(cache_dir / f".{key}.lock", on_wait=wait):
        return _train_cached(cfg, cache_dir, profile, need_weights, resume)


def _train_cached(cfg: Config, cache_dir: str | Path, profile: str, need_weights: bool = False,
                  resume: bool = False) -> tuple[str, Path, dict, bool]:
    """(key, run folder, evaluation, whether it was cached). A run folder without its `done.json`
    (interrupted), or without weights when `need_weights` (its last checkpoint, or the backbone a
    fine-tune starts from: checkpoints are not committed), is trained again from scratch, unless
    `resume` and it holds a checkpoint: then the engine resumes it from that checkpoint (a job
    requeued after preemption or its time limit, stm_lib/launch.py; bit for bit on CPU)."""
    from stm_lib.engine import checkpoint as ckpt
    from stm_lib.engine import evaluate

    cache_dir = Path(cache_dir).resolve()
    key = cache_key(cfg, cache_dir)
    run_dir = cache_dir / key
    done = run_dir / "done.json"
    if done.is_file() and (not need_weights or (run_dir / ckpt.LAST).is_file() or (run_dir / BACKBONE).is_file()):
        return key, run_dir, check_done(run_dir), True
    resuming = resume and (run_dir / ckpt.LAST).is_file() and not done.is_file()
    if run_dir.exists() and not resuming:
        shutil.rmtree(run_dir)
    cfg = cfg.update("train", out=str(run_dir))
    t0 = time.time()
    _prepare_proxy(cfg)
    run_full_or_local(cfg.update("train", resume=True) if resuming else cfg)
    seconds = time.time() - t0
    if resuming:   # every session's training time (run.json sums them), not only this one's
        try:
            seconds = float(json.loads((run_dir / "run.json").read_text())["wall_time_s"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    res = evaluate(run_dir, clips=cfg.data.test_clips, crops=cfg.data.test_crops, device=cfg.train.device,
                   checkpoint="last", progress=False)
    (run_dir / "checkpoint_best.pt").unlink(missing_ok=True)   # the reported weights are the last ones
    ev_file = next((f.name for f in sorted(run_dir.glob(f"eval_val_{cfg.data.test_clips}x{cfg.data.test_crops}*.json"))),
                   None)
    from stm_lib.provenance import git_state

    ev = {"key": key, "top1": 100 * res["top1"], "top5": 100 * res["top5"], "n": int(res["n"]), "file": ev_file,
          "train_seconds": round(seconds, 1), "profile": profile, "git": git_state(), "config": cfg.to_dict()}
    atomic_write_json(done, ev)
    return key, run_dir, ev, False


def run_file(run_dir: str | Path, name, where) -> Path:
    """`run_dir / name` when `name` is a plain file name inside the run folder (no separator, no
    `..`, not absolute, not a link, resolving inside the folder); ValueError naming `where` else.
    A run record (done.json) is data another machine may have written: it names no other path."""
    run_dir = Path(run_dir)
    if not isinstance(name, str) or not name or name in (".", "..") or any(c in name for c in "/\\\0") \
            or Path(name).is_absolute():
        raise ValueError(f"{where}: file {str(name)[:80]!r} is not a plain file name inside its run folder")
    p = run_dir / name
    if p.is_symlink() or p.resolve().parent != run_dir.resolve():
        raise ValueError(f"{where}: file {name!r} is a link or leads out of its run folder")
    return p


def check_done(run_dir: str | Path, ev=None) -> dict:
    """A cached run's record (`<run>/done.json`, read when `ev` is None) after checking it as
    untrusted data: top1 / top5 finite percentages in [0, 100], n a positive integer, `file` a
    plain file of the run folder; top-1 and top-5 equal to that evaluation file's, and top-1 to
    the run's last per-epoch validation (metrics.jsonl) when the evaluation is 1 clip x 1 crop
    (the same view), within one clip. ValueError in one line naming the file and the field."""
    run_dir = Path(run_dir)
    where = run_dir / "done.json"
    if ev is None:
        try:
            ev = json.loads(where.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{where}: not a readable run record ({e})") from None
    if not isinstance(ev, dict):
        raise ValueError(f"{where}: expected a JSON object")
    for k in ("top1", "top5"):
        if not stats.finite(ev.get(k)) or not 0 <= ev[k] <= 100:
            raise ValueError(f"{where}: {k} must be a finite percentage in [0, 100], got {ev.get(k)!r}")
    n = ev.get("n")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"{where}: n must be a positive integer (validation clips), got {n!r}")
    if ev.get("train_seconds") is not None and not stats.finite(ev["train_seconds"]):
        raise ValueError(f"{where}: train_seconds must be a number, got {ev['train_seconds']!r}")
    for k in ("git", "config"):
        if ev.get(k) is not None and not isinstance(ev[k], dict):
            raise ValueError(f"{where}: {k} must be an object, got {type(ev[k]).__name__}")
    if ev.get("file") is not None:
        f = run_file(run_dir, ev["file"], where)
        if f.is_file():
            try:
                got = json.loads(f.read_text())
                theirs = {k: 100 * got[k] for k in ("top1", "top5")}
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{where}: its evaluation file {f.name} is unreadable ({e!r})") from None
            for k, v in theirs.items():
                if not (stats.finite(v) and abs(v - ev[k]) <= 1e-6):
                    raise ValueError(f"{where}: {k} {ev[k]!r} is not its evaluation file's ({f.name}: {v!r})")
    data = (ev.get("config") or {}).get("data") or {}
    if data.get("test_clips", 1) == 1 and data.get("test_crops", 1) == 1 and (run_dir / "metrics.jsonl").is_file() \
            and not (run_dir / "metrics.jsonl").is_symlink():
        try:
            last = [h for h in read_metrics(run_dir) if isinstance(h, dict) and h.get("val_top1") is not None][-1:]
        except ValueError as e:
            raise ValueError(f"{run_dir / 'metrics.jsonl'}: not valid JSON lines ({e})") from None
        if last:
            v = last[0]["val_top1"]
            v = 100 * v if stats.finite(v) else v
            if not stats.finite(v) or abs(v - ev["top1"]) > 100 / n + 1e-6:
                raise ValueError(f"{where}: top1 {ev['top1']!r} disagrees with the run's last validation top-1 in "
                                 f"metrics.jsonl ({v!r}, epoch {last[0].get('epoch', '?')})")
    return ev


def trained_on(run_dir: Path) -> str | None:
    """Where a cached run was trained, from its run.json: the GPU's name, else "CPU (<model>)"."""
    try:
        hw = json.loads((Path(run_dir) / "run.json").read_text()).get("hardware") or {}
    except (OSError, ValueError):
        return None
    if str(hw.get("device", "")).startswith("cuda") and hw.get("gpus"):
        return hw["gpus"][0]
    return f"CPU ({hw['cpu']})" if hw.get("cpu") else None


def export_backbone(run_dir: Path) -> str:
    """A trained run's last weights without fc, as a state dict a new model can start from."""
    from stm_lib.engine import checkpoint as ckpt

    path = run_dir / BACKBONE
    if not path.is_file():
        state = ckpt.load(run_dir / ckpt.LAST, map_location="cpu")
        ckpt.atomic_save({k: v for k, v in state["model"].items() if not k.startswith("fc.")}, path)
    return str(path)


# ---- launching -----------------------------------------------------------------------------------

def run_full_or_local(cfg: Config) -> Path:
    """Train in this process, or, with several GPUs visible, through torchrun with the resolved
    Config written to YAML (`stm train --config`), so every field reaches every rank."""
    import subprocess

    import torch

    from stm_lib.engine import train

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n > 1 and cfg.train.device in ("auto", "cuda"):
        from stm_lib.engine.distributed import torchrun_command, write_config   # issue 9 item 4

        path = Path(cfg.train.out).with_suffix(".launch.yaml")
        write_config(cfg, path)
        cmd = torchrun_command(cfg, n, path)
        print("  multi-GPU:", cmd, flush=True)
        subprocess.run(cmd, shell=True, check=True)
        return Path(cfg.train.out)
    return train(cfg, command=f"stm_lib.book.runner (in-process train of {cfg.model.name})")


def _prepare_proxy(cfg: Config, progress: bool = False) -> dict | None:
    """Generate a proxy dataset (or find it in the cache) before training, quietly unless
    `progress` (a page shows no progress bar on stderr), and its optical flow when the run reads
    flow; the flow's cost record, else None."""
    if cfg.data.dataset.startswith("proxy-"):
        from stm_lib.data import flow, proxy

        proxy.ensure_proxy(cfg.data.dataset.split("-", 1)[1], cfg.data, progress=progress)
        if cfg.data.flow_root:
            return flow.proxy_flow(cfg.data.dataset, cfg.data, progress=progress)
    return None


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---- files ---------------------------------------------------------------------------------------

def save(result: Result, out_dir: str | Path, figures=()) -> Path:
    """Write `figures` (matplotlib Figures; file name from fig.get_label() or figN) under
    figures/, a flat CSV of the rows, and result.json (stm reproduce adds provenance and renames it
    results.json)."""
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    for i, fig in enumerate(figures):
        name = (fig.get_label() or f"fig{i + 1}").replace(" ", "_").replace("/", "_")
        path = out / "figures" / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        rel = str(path.relative_to(out))
        if rel not in result.figures:
            result.figures.append(rel)
        plt.close(fig)
    atomic_write_text(out / f"{get(result.table).notebook}.csv", to_csv(result))
    return result.save(out / "result.json")


def to_csv(result: Result) -> str:
    """One line per row: paper values, measured mean/std/seeds, status."""
    metrics = result.metrics()
    paper = list(dict.fromkeys(m for r in result.rows for m in r.paper))
    cols = ["id", "setting", "model", "frames", "run_frames", "status", "reason"] + [f"paper_{m}" for m in paper]
    for m in metrics:
        cols += [m, f"{m}_std", f"{m}_seeds"]
    cols += ["params", "flops", "videos_per_s", "speed_device"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    for r in result.rows:
        d = {"id": r.id, "setting": r.setting, "model": r.model, "frames": r.frames, "run_frames": r.run_frames,
             "status": r.status, "reason": r.reason, **{f"paper_{m}": v for m, v in r.paper.items()}}
        for m in r.seeds:
            d.update({m: r.value(m), f"{m}_std": r.std(m), f"{m}_seeds": " ".join(f"{x:g}" for x in r.seeds[m])})
        if r.complexity:
            d.update(params=r.complexity.params, flops=r.complexity.flops)
        if r.speed:
            d.update(videos_per_s=r.speed.videos_per_s, speed_device=r.speed.device)
        w.writerow(d)
    return buf.getvalue()
