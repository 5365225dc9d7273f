"""Kill-and-resume: a `stm train` process killed with SIGKILL in the middle of an epoch and
resumed with --resume ends with the same metrics and weights as an uninterrupted run (CPU,
--deterministic, no loader workers)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch


def _cmd(out: Path, cache: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "stm_lib.cli", "train", "--dataset", "proxy-temporal",
            "--proxy-cache", str(cache), "--proxy-videos", "80", "--proxy-classes", "4",
            "--proxy-frames", "8", "--proxy-resolution", "32", "--model", "stm", "--frames", "4",
            "--input-size", "32", "--width-mult", "0.25", "--epochs", "2", "--batch-size", "8",
            "--lr", "0.01", "--lr-steps", "1", "--num-workers", "0", "--deterministic",
            "--no-progress", "--no-tensorboard", "--out", str(out), *extra]


def _env():
    # PASSIVE: OpenMP threads sleep instead of spinning when other processes share the cores
    return {**os.environ, "OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1"}


def _metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in rows]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path, proxy_cache):
    """Killed in the middle of the last epoch (2 of 2, after the lr step): the resumed run
    restores weights, optimiser, schedule and RNG from the epoch-1 checkpoint."""
    cache = proxy_cache
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    subprocess.run(_cmd(ref, cache), check=True, env=_env(), capture_output=True, timeout=900)
    epoch_time = json.loads((ref / "metrics.jsonl").read_text().splitlines()[1])["epoch_time_s"]

    proc = subprocess.Popen(_cmd(cut, cache), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 600
        while not ((cut / "metrics.jsonl").exists() and (cut / "metrics.jsonl").read_text().strip()):
            assert proc.poll() is None and time.time() < deadline, "training ended before epoch 1 was written"
            time.sleep(0.2)
        time.sleep(0.25 * epoch_time)  # inside epoch 2, the last (early: margin for a faster machine)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert len(_metrics(cut)) == 1  # killed mid-run: one finished epoch on disk
    assert torch.load(cut / "checkpoint_last.pt", weights_only=True)["epoch"] == 1

    r = subprocess.run(_cmd(cut, cache, "--resume"), env=_env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming" in r.stdout
    assert _metrics(cut) == _metrics(ref)
    a = torch.load(ref / "checkpoint_last.pt", weights_only=True)
    b = torch.load(cut / "checkpoint_last.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    run = json.loads((cut / "run.json").read_text())
    assert run["status"] == "finished" and run["sessions"][-1]["resumed_from_epoch"] == 1
    assert (cut / "command.txt").read_text().count("--resume") == 1
