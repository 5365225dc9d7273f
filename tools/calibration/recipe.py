"""Recipe readings from scratch (calibration record): the CLI's `stm train` at the proxy setting,
several seeds, two one-thread runs side by side; prints each run's validation curve.

    python tools/calibration/recipe.py MODEL EPOCHS SEEDS [VARIANT=EXTRA-FLAGS ...]
    e.g. python tools/calibration/recipe.py tsn-diff 8 0,1,2 base= warmup2='--warmup-epochs 2'

Runs go to runs/calibration/_runs/recipe-VARIANT-MODEL-eEPOCHS-sSEED (metrics and run.json kept,
checkpoints not committed); a finished run is not trained again.
"""
import csv
import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

RECORD = Path(__file__).resolve().parents[2] / "runs" / "calibration"   # where the readings are kept
BASE = "--dataset proxy-temporal --frames 8 --input-size 64 --width-mult 0.25 --batch-size 16 --lr 0.02"


def run(model, epochs, seed, variant, extra):
    out = RECORD / "_runs" / f"recipe-{variant}-{model}-e{epochs}-s{seed}"
    if not (out / "metrics.csv").is_file() or len(curve(out)) < epochs:
        cmd = [sys.executable, "-m", "stm_lib.cli", "train", *shlex.split(BASE), "--model", model,
               "--epochs", str(epochs), "--seed", str(seed), "--out", str(out), *shlex.split(extra)]
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return variant, seed, curve(out)


def curve(out):
    try:
        with open(out / "metrics.csv") as f:
            return [float(r["val_top1"]) for r in csv.DictReader(f)]
    except (OSError, KeyError, ValueError):
        return []


if __name__ == "__main__":
    model, epochs, seeds, *variants = sys.argv[1:]
    jobs = [(model, int(epochs), int(s), *v.split("=", 1)) for v in variants for s in seeds.split(",")]
    with ThreadPoolExecutor(2) as pool:
        for variant, seed, c in pool.map(lambda j: run(*j), jobs):
            print(f"{variant:10s} seed {seed}: " + " ".join(f"{x:.3f}" for x in c), flush=True)
