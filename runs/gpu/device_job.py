"""One call on a lent GPU machine (issue 10 item 8, issue 13): train a table's proxy runs with 5
seeds into a run cache, time the models with `stm bench` on the GPU, and pack what the CPU side
needs to render the page from that cache (`stm reproduce --seeds 5` finds every run cached).

    python3 runs/gpu/device_job.py OUT BUDGET_S --tables relatives --bench-models tsn tsm ...

Each step has a deadline inside BUDGET_S; what finished is packed even when a later step runs
out of time (a run left unfinished is simply absent from the cache). Checkpoints stay behind:
the page needs each run's metrics, evaluation and provenance, not its weights; only Table 4's
pre-training backbones come back, since its fine-tunes' cache keys name them.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

T0 = time.time()
ROOT = Path(__file__).resolve().parents[2]
KEEP = ("done.json", "run.json", "config.yaml", "command.txt", "metrics.csv", "metrics.jsonl")


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
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("budget", type=float)
    ap.add_argument("--tables", nargs="+", default=["relatives"])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--bench-models", nargs="*", default=[])
    ap.add_argument("--bench-budget", type=float, default=100)
    ap.add_argument("--profile", default="proxy")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--cache", default=str(ROOT / "runs" / "_cache"), help="the run cache to train into")
    a = ap.parse_args()
    out, end = Path(a.out), T0 + a.budget - 25   # 25 s kept for packing
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    import torch

    log(f"torch {torch.__version__}, cuda {torch.cuda.is_available()}, "
        f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-'}, {os.cpu_count()} cores")
    from stm_lib.provenance import git_state
    log(f"git: {git_state()}")

    if a.bench_models:   # alone on the machine: its timings see no other job
        rc = run([py, "-m", "stm_lib.cli", "bench", "--device", "cuda", "--models", *a.bench_models,
                  "--frames", "8", "--modes", "inference", "train", "--precision", "fp32", "bf16",
                  "--channels-last", "off", "on", "--compile", "off", "--warmup", "3", "--repeats", "8",
                  "--note", "proxy-era GPU bench: eager only (torch.compile rows not run: one device call)",
                  "--out", str(out / "bench.json")], min(end, time.time() + a.bench_budget), out / "bench.log")
        log(f"bench: rc {rc}")

    from stm_lib.book import runner
    from stm_lib.data.proxy import digest, proxy_path
    plans = {t: [cfg for *_, cfg in runner.plan(t, a.profile, a.seeds, device=a.device)] for t in a.tables}
    cfgs = [cfg for c in plans.values() for cfg in c]
    digests = {}
    for cfg in cfgs:   # each proxy once, before any worker (a table may read several: Table 4)
        root = proxy_path(cfg.data.dataset.split("-", 1)[1], cfg.data)[0]
        if root.name not in digests:
            runner._prepare_proxy(cfg.update("data", flow_root=None))
            digests[root.name] = digest(root)
    log(f"proxies ready: {digests}")
    # two-stream runs (TV-L1 first, threads of one core each) go to a pool of their own beside the
    # plain runs; a table's `models` names only its own rows (another table's name would add a row)
    flow = {t: sorted({c.model.name for c in c_t if c.data.flow_root}) for t, c_t in plans.items()}
    plain = {t: sorted({c.model.name for c in c_t} - set(flow[t])) if flow[t] else None for t, c_t in plans.items()}
    flow = {t: m for t, m in flow.items() if m}
    pool = [py, "-c", "import sys, json; from stm_lib.book.pool import prefetch; a = json.loads(sys.argv[1]); "
                      "f = prefetch(list(a['models']), a['profile'], a['seeds'], a['cache'], a['jobs'], device=a['device'], "
                      "params={'models': a['models']}); print('failures', json.dumps(f))"]
    procs = []
    for name, models, jobs in (("plain", plain, a.jobs), ("flow", flow, max(1, a.jobs // 2))):
        if models:
            spec = {"models": models, "profile": a.profile, "seeds": a.seeds, "cache": a.cache, "jobs": jobs,
                    "device": a.device}
            with open(out / f"train_{name}.log", "w") as fh:
                procs.append(subprocess.Popen(pool + [json.dumps(spec)], stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT))
    for p in procs:
        try:
            p.wait(timeout=max(1.0, end - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            log("training: deadline reached, unfinished runs left out")
    log("training: " + ", ".join(str(p.returncode) for p in procs))

    cache = Path(a.cache)
    flows = {}
    for cfg in cfgs:
        if cfg.data.flow_root and (Path(cfg.data.flow_root) / "flow.json").is_file():
            flows[Path(cfg.data.flow_root).parent.name] = json.loads((Path(cfg.data.flow_root) / "flow.json").read_text())
    done = sorted(p.parent.name for p in cache.glob("*/done.json"))
    summary = {"proxy_digests": digests, "cache": str(cache.resolve()), "flow": flows, "runs_done": done,
               "planned": len(cfgs), "seconds": round(time.time() - T0)}   # unpack.py checks the first two
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    with tarfile.open(out / "cache.tar.gz", "w:gz") as tar:
        for key in done:
            for f in sorted((cache / key).iterdir()):
                if f.name in (*KEEP, runner.BACKBONE) or f.name.startswith(("eval_", "confusion_")):
                    tar.add(f, arcname=f"{key}/{f.name}")
            if (cache / f"{key}.log").is_file():
                tar.add(cache / f"{key}.log", arcname=f"{key}.log")
    log(f"packed {len(done)} of {len(cfgs)} planned runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
