"""DDP: `torchrun --nproc_per_node 2` with gloo on CPU trains, and follows a single-process run
with the same global batch (each rank takes half of every global batch; gradients averaged).
Only BatchNorm statistics (per rank, as on the paper's 8 GPUs) and dropout masks differ."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


def _args(out: Path, cache: Path) -> list[str]:
    return ["-m", "stm_lib.cli", "train", "--dataset", "proxy-temporal", "--proxy-cache", str(cache),
            "--proxy-videos", "80", "--proxy-classes", "4", "--proxy-frames", "8", "--proxy-resolution", "32",
            "--model", "tsm", "--frames", "4", "--input-size", "32", "--width-mult", "0.25", "--epochs", "2",
            "--batch-size", "16", "--lr", "0.01", "--lr-steps", "1", "--dropout", "0", "--num-workers", "0",
            "--no-progress", "--no-tensorboard", "--out", str(out)]


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_torchrun_two_processes_matches_single_process(tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    subprocess.run([sys.executable, *_args(single, cache)], check=True, env=env, capture_output=True, timeout=900)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        *_args(ddp, cache)],
                       env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert r.stdout.count("epoch 2/2") == 1  # logging on rank 0 only

    run = json.loads((ddp / "run.json").read_text())
    assert run["world_size"] == 2 and run["global_batch"] == 16 and run["status"] == "finished"
    s, d = _rows(single), _rows(ddp)
    assert [x["epoch"] for x in d] == [1, 2]
    for a, b in zip(s, d):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=0.05)
        assert b["lr"] == a["lr"]
    # same global batches, same schedule: the weights stay close (BN statistics are per rank)
    wa = torch.load(single / "checkpoint_last.pt", weights_only=True)["model"]
    wb = torch.load(ddp / "checkpoint_last.pt", weights_only=True)["model"]
    num = sum(float((wa[k].float() - wb[k].float()).norm() ** 2) for k in wa if wa[k].is_floating_point())
    den = sum(float(wa[k].float().norm() ** 2) for k in wa if wa[k].is_floating_point())
    assert (num / den) ** 0.5 < 0.05
