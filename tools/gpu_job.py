"""A time-boxed job on a GPU machine (a cloud instance, a cluster node you hold for a while): time
the models with `stm bench` on the GPU alone, train the runs of some tables into a run cache, and
pack what finished with `stm runs pack`, all within BUDGET_S seconds. Copy the pack back and
`stm runs unpack` it; `stm reproduce --table T` then renders the pages without training.

    python tools/gpu_job.py OUT BUDGET_S --tables 1 2 3 4 5 6 7 --seeds 10 --jobs 10 [--bench-models tsn tsm stm]

Each step has a deadline inside the budget; what finished is packed even when training runs out
of time (the pool trains every row's first seed before any second, so what is left unfinished is
the last seeds, which another job or the CPU trains). Two-stream runs (TV-L1 flow first) train in
a pool of their own beside the others. OUT receives `runs.tar.gz`, `bench.json` and the logs.
This script only calls the library (`stm bench`, `stm_lib.book.pool.prefetch`, `stm runs pack`).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

T0 = time.time()
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # this checkout's stm_lib, installed or not
PACK_S = 30   # kept for packing at the end


def log(msg: str) -> None:
    print(f"[{time.time() - T0:6.0f} s] {msg}", flush=True)


def run(cmd: list[str], deadline: float, logfile: Path) -> int | None:
    """A subprocess with its output in `logfile`, killed at `deadline` (None: killed)."""
    with open(logfile, "w") as fh:
        p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            return p.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="folder for the pack, the bench results and the logs")
    ap.add_argument("budget", type=float, help="seconds for the whole job")
    ap.add_argument("--tables", nargs="+", default=["relatives"])
    ap.add_argument("--models", nargs="+", help="only these rows of the tables")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per row (default: the profile's; 10 for "
                    "proxy on a GPU)")
    ap.add_argument("--jobs", type=int, default=8, help="runs trained side by side")
    ap.add_argument("--bench-models", nargs="*", default=[])
    ap.add_argument("--bench-budget", type=float, default=100)
    ap.add_argument("--profile", default="proxy")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--cache", default=str(ROOT / "runs" / "_cache"), help="the run cache to train into")
    a = ap.parse_args()
    out, end = Path(a.out), T0 + a.budget - PACK_S
    out.mkdir(parents=True, exist_ok=True)
    py = [sys.executable, "-m", "stm_lib.cli"]
    import torch

    log(f"torch {torch.__version__}, cuda {torch.cuda.is_available()}, "
        f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-'}, {os.cpu_count()} cores")

    if a.bench_models:   # alone on the machine: its timings see no other job
        rc = run([*py, "bench", "--device", "cuda", "--models", *a.bench_models,
                  "--frames", "8", "--modes", "inference", "train", "--precision", "fp32", "bf16",
                  "--channels-last", "off", "on", "--compile", "off", "--warmup", "3", "--repeats", "8",
                  "--note", "eager only (torch.compile rows not run in a time-boxed job)",
                  "--out", str(out / "bench.json")], min(end, time.time() + a.bench_budget), out / "bench.log")
        log(f"bench: rc {rc}")

    from stm_lib.book import runner
    from stm_lib.data.proxy import ensure_proxy

    plans = {t: [cfg for *_, cfg in runner.plan(t, a.profile, a.seeds, device=a.device, models=a.models)]
             for t in a.tables}
    for cfg in (c for cs in plans.values() for c in cs):   # each proxy once, before two pools race for it
        if cfg.data.dataset.startswith("proxy-"):
            ensure_proxy(cfg.data.dataset.split("-", 1)[1], cfg.data, progress=False)
    log("proxies ready")
    # two-stream runs (TV-L1 first) go to a pool of their own beside the plain runs; a table's
    # `models` names only its own rows (another table's name would add a row)
    flow = {t: sorted({c.model.name for c in cs if c.data.flow_root}) for t, cs in plans.items()}
    plain = {t: sorted({c.model.name for c in cs} - set(flow[t])) if flow[t] else a.models for t, cs in plans.items()}
    flow = {t: m for t, m in flow.items() if m}
    code = ("import sys, json; from stm_lib.book.pool import prefetch; a = json.loads(sys.argv[1]); "
            "f = prefetch(list(a['models']), a['profile'], a['seeds'], a['cache'], a['jobs'], device=a['device'], "
            "params={'models': a['models']}); print('failures', json.dumps(f))")
    procs = []
    for name, models, jobs in (("plain", plain, a.jobs), ("flow", flow, max(1, a.jobs // 2))):
        if models:   # table -> its rows to train (None: all of them)
            spec = {"models": models, "profile": a.profile, "seeds": a.seeds, "cache": a.cache, "jobs": jobs,
                    "device": a.device}
            fh = open(out / f"train_{name}.log", "w")
            procs.append((subprocess.Popen([sys.executable, "-c", code, json.dumps(spec)], stdout=fh,
                                           stderr=subprocess.STDOUT, cwd=ROOT), fh))
    for p, fh in procs:
        try:
            p.wait(timeout=max(1.0, end - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            log("training: deadline reached, unfinished runs left out")
        fh.close()
    log("training: rc " + ", ".join(str(p.returncode) for p, _ in procs))

    pack = [*py, "runs", "pack", "--cache", a.cache, "--out", str(out / "runs.tar.gz"), "--table", *a.tables,
            "--profile", a.profile, *(["--seeds", str(a.seeds)] if a.seeds else []),
            *(["--models", *a.models] if a.models else [])]
    rc = subprocess.run(pack, cwd=ROOT).returncode
    log(f"pack: rc {rc}: {out / 'runs.tar.gz'}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
