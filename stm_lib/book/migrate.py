"""Convert schema-1 results.json files (written by the former book/experiments.py: string-keyed rows,
status prose, one seed) into the `Result` schema, in place:

    python -m stm_lib.book.migrate runs        # every runs/*/*/results.json still in schema 1

Each measured value becomes a one-seed list (`top1_seeds = [value]`), the status prose becomes a
status value and a reason, verdicts are recomputed with `stats.compare` (one seed -> "not
resolved", ceiling / chance -> "uninformative"), curves come from the run folders' metrics.jsonl
when they are committed, and the original provenance is kept with a note saying it was migrated.
This module parses prose once, here, so that nothing else ever has to.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from stm_lib.book import stats
from stm_lib.book.result import Complexity, Result, Row, SeedRun, Speed, make_claims, paper_text
from stm_lib.book.tables import TABLES

NOTE = "migrated from schema 1 (book/experiments.py, one seed per row); verdicts recomputed with the seed rule"
# schema-1 measured keys -> (metric, part, n_val key)
_MEASURED = {"top1": ("", "n_val"), "top5": ("", "n_val"), "top1_ucf101": ("ucf101", "n_val-ucf101"),
             "top5_ucf101": ("ucf101", "n_val-ucf101"), "top1_hmdb51": ("hmdb51", "n_val-hmdb51"),
             "top5_hmdb51": ("hmdb51", "n_val-hmdb51"), "top1_pretrain": ("pretrain", None),
             "corr_with_flow": ("", None)}
_LEGACY_ONLY = {"status", "reference", "run_frames", "params", "flops", "params_m", "flops_g", "videos_per_s",
                "speed_device", "speed_ratio_vs_tsn", "speed_ratio_vs_tsm", "status_complexity"}


def status_of(prose: str, profile: str, has_complexity: bool) -> tuple[str, str]:
    """Schema 1's status prose -> (status, reason). E.g. "exact (params, FLOPs); speed: measured
    here; not run: budget (16 frames)" -> ("exact", "budget (16 frames)")."""
    parts = [p.strip() for p in (prose or "").split(";") if p.strip()]
    for p in parts:
        if p.startswith("top-1: "):
            return p.removeprefix("top-1: ").split()[0], ""
    for p in parts:
        if p.startswith("not run: "):
            return ("exact" if has_complexity else "not_run"), p.removeprefix("not run: ")
    for p in parts:
        word = p.split()[0]
        if word in ("proxy", "smoke", "full"):
            return word, p[len(word):].strip(" ()")
    if any("reference row" in p for p in parts):
        return "not_run", "speed reference" if any(p.startswith("speed") for p in parts) else "reference row"
    if has_complexity:
        return "exact", ""
    return "not_run", prose or "unknown (schema 1)"


def from_legacy(doc: dict, run_dir: str | Path | None = None) -> Result:
    """`doc`: a schema-1 results.json; `run_dir`: its folder (for curves, configs, n_val)."""
    if "version" in doc:
        raise ValueError(f"not a schema-1 results.json (version {doc['version']})")
    tid, profile = str(doc["table"]), doc["profile"]
    t = TABLES[tid]
    settings = doc.get("settings") or {}
    seed = int(settings.get("seed", 0) or 0)
    run_dir = Path(run_dir) if run_dir else None
    rows = [_row(d, profile, seed, run_dir) for d in doc["rows"]]
    chance = {}
    for part in t.parts:
        if any(part.metric in r.seeds for r in rows) and tid != "figure1":
            chance[part.metric] = _chance(t, profile, part.name, settings)
    by_id = {r.id: r for r in rows}
    claims = make_claims(by_id, [(a, b, m) for m in chance for a, b in t.claims if a in by_id and b in by_id], chance)
    extra = {k: doc[k] for k in ("notebook_seconds", "written") if k in doc}
    return Result(tid, profile, t.title, doc.get("caption") or t.caption, rows, claims, settings,
                  [seed] if any(r.seeds for r in rows) and tid != "figure1" else [], chance,
                  figures=list(doc.get("figures", [])), notes=list(doc.get("notes", [])) + [NOTE], extra=extra,
                  provenance={**doc.get("provenance", {}), "migrated": NOTE})


def _chance(t, profile: str, part: str, settings: dict) -> float:
    classes = (settings.get("proxy") or {}).get("proxy_classes") if not part and profile != "full" else None
    return stats.chance(classes) if classes else t.chance(profile, part)


def _row(d: dict, profile: str, seed: int, run_dir: Path | None) -> Row:
    paper = {k.removeprefix("paper_"): paper_text(v) for k, v in d.items() if k.startswith("paper_") and v is not None}
    has_cx = d.get("params") is not None
    status, reason = status_of(d.get("status", ""), profile, has_cx)
    info = {k: v for k, v in d.items() if k not in ("id", "setting", "model", "frames") and not k.startswith("paper_")
            and k not in _MEASURED and k not in _LEGACY_ONLY and not k.startswith(("n_val", "run"))}
    r = Row(d["id"], d["setting"], d.get("model"), d.get("frames"), status, reason, run_frames=d.get("run_frames"),
            info=info, paper=paper, reference=bool(d.get("reference")))
    runs = {}
    for key, (part, nkey) in _MEASURED.items():
        if d.get(key) is None:
            continue
        r.seeds[key] = [float(d[key])]
        run = d.get("run-" + part if part else "run")
        n = d.get(nkey) if nkey else None
        if n is None and run and run_dir:
            n = _eval_n(run_dir / run)
        if n is not None:
            r.n_val[key] = int(n)
        if run:
            sr = runs.get(run) or runs.setdefault(run, _seed_run(seed, run, part, run_dir))
            sr.metrics[key] = float(d[key])
    r.runs = list(runs.values())
    if has_cx:
        r.complexity = Complexity(int(d["params"]), int(d["flops"]), {"frames": d.get("frames"), "input_size": 224,
                                                                      "num_classes": 174, "width_mult": 1.0})
    if d.get("videos_per_s") is not None:
        r.speed = Speed(float(d["videos_per_s"]), d.get("speed_device") or "?", d.get("speed_ratio_vs_tsn"),
                        d.get("speed_ratio_vs_tsm"))
    return r


def _seed_run(seed: int, run: str, part: str, run_dir: Path | None) -> SeedRun:
    sr = SeedRun(seed, run, part)
    if run_dir is None:
        return sr
    folder = run_dir / run
    path = folder / "metrics.jsonl"
    if path.is_file():
        hist = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        sr.val_top1 = [100 * h["val_top1"] for h in hist if h.get("val_top1") is not None]
        sr.train_loss = [h["train_loss"] for h in hist if h.get("train_loss") is not None]
        sr.epochs = len(hist)
        sr.converged = stats.converged(sr.val_top1)
    if (folder / "config.yaml").is_file():
        import yaml

        sr.config = yaml.safe_load((folder / "config.yaml").read_text())
    if (folder / "run.json").is_file():
        sr.wall_time_s = json.loads((folder / "run.json").read_text()).get("wall_time_s")
    return sr


def _eval_n(folder: Path) -> int | None:
    for f in sorted(folder.glob("eval_val_*.json")):
        return json.loads(f.read_text()).get("n")
    return None


def migrate(runs: str | Path = "runs") -> list[Path]:
    """Convert every schema-1 runs/*/*/results.json in place; returns the files converted."""
    done = []
    for path in sorted(Path(runs).glob("*/*/results.json")):
        doc = json.loads(path.read_text())
        if "version" in doc or "rows" not in doc or "table" not in doc:
            continue
        res = from_legacy(doc, path.parent)
        Result.from_json(res.to_json(), str(path))   # what we write must read back
        res.save(path)
        done.append(path)
    return done


if __name__ == "__main__":
    for p in migrate(sys.argv[1] if len(sys.argv) > 1 else "runs"):
        print("migrated", p)
