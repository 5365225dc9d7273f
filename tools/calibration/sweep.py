"""Proxy calibration runs (issue 10 item 6): train a *reference* model (tsn, tsn-diff) on a proxy
generated with other difficulty constants, without editing the library.

    OMP_NUM_THREADS=1 python tools/calibration/sweep.py NAME 'SCENE={"hue_jitter": 0.7}' -- \
        --dataset proxy-scene --model tsn --frames 8 --input-size 64 --width-mult 0.25 --epochs 8 \
        --batch-size 16 --lr 0.02

The constants are set on stm_lib.data.proxy before `stm train` runs; the proxy is generated into
its own cache folder (runs/calibration/_proxy/NAME, not committed) since its key does not carry
them, and the run goes to runs/calibration/_runs/NAME (metrics and run.json are what is kept).
"""
import json
import sys
from pathlib import Path

from stm_lib.cli import main
from stm_lib.data import proxy

name, *rest = sys.argv[1:]
sep = rest.index("--")
for assign in rest[:sep]:
    var, _, value = assign.partition("=")
    getattr(proxy, var).update(json.loads(value))
record = Path(__file__).resolve().parents[2] / "runs" / "calibration"   # where the readings are kept
sys.exit(main(["train", *rest[sep + 1:], "--proxy-cache", str(record / "_proxy" / name),
               "--out", str(record / "_runs" / name)]))
