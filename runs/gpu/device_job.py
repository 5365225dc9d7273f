"""One call on a lent GPU machine (issue 10 item 8, issue 13): train a table's proxy runs with 5
seeds into a run cache, time the models with `stm bench` on the GPU, and pack what the CPU side
needs to render the page from that cache (`stm reproduce --seeds 5` finds every run cached).

    python3 runs/gpu/device_job.py OUT BUDGET_S --tables relatives --bench-models tsn tsm ...

Each step has a deadline inside BUDGET_S; what finished is packed even when a later step runs
out of time (a run left unfinished is simply absent from the cache). Checkpoints stay behind:
the page needs each run's metrics, evaluation and provenance, not its weights.
"""
from __future__ import annotations

import argparse
import hashlib
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


def proxy_digest(root: Path) -> str:
    """sha256 of every JPEG of a proxy, in path order: the same digest on two machines is the same data."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.jpg")):
        if "flow" not in p.parts:
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


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
    cfgs = [cfg for t in a.tables for *_, cfg in runner.plan(t, a.profile, a.seeds, device=a.device)]
    digests = {}
    for cfg in {c.data.dataset + str(c.data.flow_root is not None): c for c in cfgs}.values():
        runner._prepare_proxy(cfg.update("data", flow_root=None))   # the proxy itself, once, before any worker
    from stm_lib.data.proxy import proxy_path
    for cfg in cfgs:
        root = proxy_path(cfg.data.dataset.split("-", 1)[1], cfg.data)[0]
        digests.setdefault(str(root.name), proxy_digest(root))
    log(f"proxies ready: {digests}")
    flow_models = sorted({c.model.name for c in cfgs if c.data.flow_root})
    plain = sorted({c.model.name for c in cfgs} - set(flow_models))
    procs = []
    pool = [py, "-c", "import sys, json; from stm_lib.book.pool import prefetch; "
                      "f = prefetch(sys.argv[1].split(), sys.argv[5], int(sys.argv[2]), 'runs/_cache', int(sys.argv[3]), "
                      "device=sys.argv[6], params={'models': sys.argv[4].split()}); print('failures', json.dumps(f))"]
    with open(out / "train_plain.log", "w") as fh:
        procs.append(subprocess.Popen(pool + [" ".join(a.tables), str(a.seeds), str(a.jobs), " ".join(plain), a.profile, a.device],
                                      stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT))
    if flow_models:   # TV-L1 (threads, one core each) beside the plain runs, then the two-stream runs
        fjobs = max(1, a.jobs // 2)
        with open(out / "train_flow.log", "w") as fh:
            procs.append(subprocess.Popen(pool + [" ".join(a.tables), str(a.seeds), str(fjobs), " ".join(flow_models), a.profile,
                                                 a.device],
                                          stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT))
    for p in procs:
        try:
            p.wait(timeout=max(1.0, end - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            log("training: deadline reached, unfinished runs left out")
    log("training: " + ", ".join(str(p.returncode) for p in procs))

    cache = ROOT / "runs" / "_cache"
    flows = {}
    for cfg in cfgs:
        if cfg.data.flow_root and (Path(cfg.data.flow_root) / "flow.json").is_file():
            flows[Path(cfg.data.flow_root).parent.name] = json.loads((Path(cfg.data.flow_root) / "flow.json").read_text())
    done = sorted(p.parent.name for p in cache.glob("*/done.json"))
    (out / "summary.json").write_text(json.dumps({"proxy_digests": digests, "flow": flows, "runs_done": done,
                                                  "planned": len(cfgs), "seconds": round(time.time() - T0)}, indent=1))
    with tarfile.open(out / "cache.tar.gz", "w:gz") as tar:
        for key in done:
            for f in sorted((cache / key).iterdir()):
                if f.name in KEEP or f.name.startswith(("eval_", "confusion_")):
                    tar.add(f, arcname=f"{key}/{f.name}")
            if (cache / f"{key}.log").is_file():
                tar.add(cache / f"{key}.log", arcname=f"{key}.log")
    log(f"packed {len(done)} of {len(cfgs)} planned runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
