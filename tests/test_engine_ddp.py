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
            "--batch-size", "16", "--lr", "0.005", "--fc-lr-mult", "1", "--lr-steps", "1", "--dropout", "0", "--num-workers", "0",
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
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=0.03)
        assert b["lr"] == a["lr"]
    # same global batches, same schedule: the two runs move the weights the same way; what
    # separates them (per-rank BN statistics, augmentation draws) is small next to the update
    state = torch.load(single / "checkpoint_last.pt", weights_only=True)
    wa, wb = state["model"], torch.load(ddp / "checkpoint_last.pt", weights_only=True)["model"]
    w0 = _initial_weights(state["config"])
    keys = [k for k in wa if "running_" not in k and wa[k].is_floating_point()]  # parameters only
    dist = lambda x, y: sum(float((x[k] - y[k]).norm() ** 2) for k in keys) ** 0.5  # noqa: E731
    moved, apart = dist(wa, w0), dist(wa, wb)
    print(f"weights moved {moved:.4f} from init; DDP vs single process {apart:.4f}")
    assert moved > 0 and apart < 0.1 * moved, (apart, moved)


def _initial_weights(cfg_dict: dict) -> dict:
    """The weights both runs started from (train() seeds the model init this way on every rank)."""
    from stm_lib.config import Config
    from stm_lib.engine import checkpoint
    from stm_lib.engine.train import _segment_seed
    from stm_lib.models import build_model

    cfg = Config.from_dict(cfg_dict)
    checkpoint.seed_everything(_segment_seed(cfg.train.seed, 0, 0, 0))
    return build_model(cfg.model).state_dict()
