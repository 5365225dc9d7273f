"""The same run (same cache key: model, data, recipe, seed) trained on the CPU and on a GPU:
how far apart are their top-1s? The CPU values come from the committed tables' results.json
(each seed's run names its cache key), the GPU values from a run cache trained on a GPU (what
`stm runs unpack` puts into a cache, or the packed runs' folder).

    python tools/compare_cpu_gpu.py runs/gpu/2026-12-04-h200/cache > runs/gpu/2026-12-04-h200/cpu_vs_gpu.txt
"""
import json
import math
import statistics
import sys
from pathlib import Path

gpu = Path(sys.argv[1])
cpu = {}
for res in sorted(Path("runs").glob("*/proxy/results.json")):
    for row in json.loads(res.read_text())["rows"]:
        for run in row.get("runs", []):
            if run.get("cache") and run.get("metrics"):
                cpu.setdefault(run["cache"], (res.parent.parent.name, row["id"], run["seed"], next(iter(run["metrics"].values()))))
diffs = []
print(f"{'key':16s}  {'table':9s} {'row':8s} seed   CPU    GPU   GPU-CPU")
for done in sorted(gpu.glob("*/done.json")):
    key = done.parent.name
    if key in cpu:
        table, row, seed, c = cpu[key]
        g = json.loads(done.read_text())["top1"]
        diffs.append(g - c)
        print(f"{key}  {table:9s} {row:8s} {seed:4d}  {c:5.1f}  {g:5.1f}  {g - c:+6.1f}")
n = len(diffs)
m, sd = statistics.mean(diffs), statistics.stdev(diffs)
print(f"\n{n} runs on both devices: GPU - CPU = {m:+.1f} +- {sd:.1f} points (mean +- std), "
      f"t = {m / (sd / math.sqrt(n)):.2f} on {n - 1} df; mean |difference| {statistics.mean(map(abs, diffs)):.1f}, "
      f"largest {max(diffs, key=abs):+.1f}")
