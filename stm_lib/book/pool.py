"""Train every distinct run a set of tables needs, several at a time, before their notebooks run.

Tiny proxy models are dominated by per-op overhead: on 2 cores two one-thread runs side by side
finish far sooner than one run with two threads (runs/pipeline_bench/README.md). So
`stm reproduce --jobs N` first plans every (row, part, seed) of the tables asked for
(`runner.plan`), keeps one of each run identity (`runner.cache_key`: Tables 1, 5, 6, 7 share
their TSN and STM runs), and trains them into the run cache with N worker processes of one
thread each. The notebooks then execute as usual and find every run cached, so a page is the
same whether it was prefetched or trained in its own notebook.

Fine-tuning runs (Table 4) start from a pre-training run's weights: they form a second wave once
the first has finished. A failing run does not stop the others; its log stays in the cache.

The worker pool is the default launcher; `launcher=` hands the same runs, identified the same way,
to another one (`stm reproduce --launcher local | slurm`: one submitit job per run,
stm_lib/launch.py). Every launcher trains a run through `runner.train_cached` under its lock.
"""
from __future__ import annotations

import contextlib
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from stm_lib.book import runner
from stm_lib.book.tables import get

_PLACEHOLDER = "<pretrain:"


def default_jobs(profile: str, device: str = "auto") -> int:
    """One-thread workers: one per core (at most 8) for CPU smoke/proxy runs, 1 otherwise (a GPU,
    or full-profile runs, which use their own data-loader workers)."""
    import torch

    on_gpu = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if profile == "full" or on_gpu:
        return 1
    return max(1, min(8, os.cpu_count() or 1))


def plan_runs(tables: list[str], profile: str, seeds: int | None, cache_dir: Path, *, device: str = "auto",
              data_root: str | None = None, params: dict | None = None) -> tuple[dict, dict, dict]:
    """Every run `tables` need, each identity once: (cache key -> (label, cfg, need_weights),
    label -> cfg of each fine-tune still naming "<pretrain:MODEL:sSEED>", (model, seed) -> the key
    of its pre-training run). `params` as `prefetch`'s."""
    kw = {k: v for k, v in (params or {}).items() if k in ("dataset", "frames", "epochs", "overrides", "models")}
    first, second, pretrain_key = {}, {}, {}
    for t in tables:
        if not get(t).train:
            continue
        kw_t = {**kw, "models": kw["models"].get(t)} if isinstance(kw.get("models"), dict) else kw
        for row_id, part, seed, cfg in runner.plan(t, profile, seeds, data_root=data_root, device=device, **kw_t):
            label = f"table {t} {row_id}{'-' + part if part else ''} seed {seed}"
            if (cfg.model.pretrained or "").startswith(_PLACEHOLDER):
                second[label] = cfg
                continue
            key = runner.cache_key(cfg, cache_dir)
            if part == "pretrain":
                pretrain_key[(cfg.model.name, seed)] = key
            need = part == "pretrain"   # a pre-training run must keep its weights for the fine-tunes
            if key in first:
                label, cfg, need = first[key][0], first[key][1], first[key][2] or need
            first[key] = (label, cfg, need)
    return first, second, pretrain_key


def pretrain_of(cfg) -> tuple[str, int]:
    """(model, seed) of the pre-training run a fine-tune's "<pretrain:MODEL:sSEED>" names."""
    model, seed = cfg.model.pretrained[len(_PLACEHOLDER):-1].rsplit(":s", 1)
    return model, int(seed)


def prefetch(tables: list[str], profile: str, seeds: int | None, cache_dir: str | Path, jobs: int, *,
             device: str = "auto", data_root: str | None = None, params: dict | None = None,
             log=print, launcher=None) -> list[str]:
    """Train the runs of `tables` not yet in `cache_dir` with `jobs` workers; the failures, one line
    each (empty when every run is cached). `params["models"]` names the rows to train: one list for
    every table, or a dict table -> list (None: the table's own rows). `launcher(pending, cache_dir,
    profile, log) -> failures` trains them instead of the pool (stm_lib.launch.Launcher)."""
    cache_dir = Path(cache_dir).resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    first, second, pretrain_key = plan_runs(tables, profile, seeds, cache_dir, device=device, data_root=data_root,
                                            params=params)
    failures = _train_all(first, cache_dir, profile, jobs, log, launcher)
    if second:
        fine = {}
        for label, cfg in second.items():
            key = pretrain_key.get(pretrain_of(cfg))
            run_dir = cache_dir / key if key else None
            if run_dir is None or not (run_dir / "done.json").is_file():
                failures.append(f"{label}: its pre-training run did not finish")
                continue
            cfg = cfg.update("model", pretrained=runner.export_backbone(run_dir))
            fine.setdefault(runner.cache_key(cfg, cache_dir), (label, cfg, False))
        failures += _train_all(fine, cache_dir, profile, jobs, log, launcher)
    return failures


def _train_all(todo: dict, cache_dir: Path, profile: str, jobs: int, log, launcher=None) -> list[str]:
    from stm_lib.engine import checkpoint as ckpt

    pending = {k: v for k, v in todo.items()   # weights: its last checkpoint, or the backbone (runner._train_cached)
               if not ((cache_dir / k / "done.json").is_file() and (not v[2] or (cache_dir / k / ckpt.LAST).is_file()
                                                                  or (cache_dir / k / runner.BACKBONE).is_file()))}
    if not pending:
        return []
    for _, cfg, _ in pending.values():   # generate each proxy once, before workers race for it
        runner._prepare_proxy(cfg, progress=True)
    if launcher is not None:
        if len(pending) < len(todo):
            log(f"{len(todo) - len(pending)} run(s) cached", flush=True)
        return launcher(pending, cache_dir, profile, log)
    log(f"training {len(pending)} run(s) ({len(todo) - len(pending)} cached) with {jobs} worker(s) "
        f"of 1 thread; logs in {cache_dir}/<key>.log", flush=True)
    failures, t0, done = [], time.time(), 0
    import multiprocessing as mp

    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"), initializer=_one_thread) as ex:
        # seed-major: a prefetch stopped early leaves every row with its first seeds, not some rows with all
        order = sorted(pending.items(), key=lambda kv: kv[1][1].train.seed)
        futures = {ex.submit(_train_one, cfg, str(cache_dir), profile, need): (key, label)
                   for key, (label, cfg, need) in order}
        for f in as_completed(futures):
            key, label = futures[f]
            done += 1
            try:
                top1, seconds = f.result()
                log(f"  [{done}/{len(pending)}] {label}: top-1 {top1:.1f}% ({seconds:.0f} s; "
                    f"{(time.time() - t0) / 60:.1f} min so far)", flush=True)
            except Exception as e:   # noqa: BLE001 - one line per failed run, the others go on
                msg = str(e).strip().splitlines()[-1][:200] if str(e).strip() else type(e).__name__
                failures.append(f"{label}: {msg} (log: {cache_dir / (key + '.log')})")
                log(f"  [{done}/{len(pending)}] {label}: FAILED: {msg}", flush=True)
    return failures


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def _train_one(cfg, cache_dir: str, profile: str, need_weights: bool) -> tuple[float, float]:
    """In a worker: one cached run, its output to `<cache>/<key>.log`."""
    key = runner.cache_key(cfg, cache_dir)
    t0 = time.time()
    with open(Path(cache_dir) / f"{key}.log", "a") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        _, _, ev, _ = runner.train_cached(cfg, cache_dir, profile, need_weights)
    return ev["top1"], time.time() - t0
