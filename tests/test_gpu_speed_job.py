"""tools/gpu_speed_job.py, the issue-29 GPU speed check, in its CPU smoke mode (--tiny: width
0.25, 4 frames, 32 px, batches 2 and 4, 2 x 2 training steps, eager): every stage runs and the
output folder holds what a device call brings back (at most 8 files, one folder deep)."""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_speed_job_tiny(tmp_path):
    sys.path.insert(0, str(ROOT / "tools"))
    import gpu_speed_job

    out = tmp_path / "out"
    assert gpu_speed_job.main(["--out", str(out), "--work", str(tmp_path / "work"), "--tiny",
                               "--models", "tsn", "stm", "--budget-s", "1800"]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["bench_eager.json", "log.txt", "summary.json", "train_stm.json", "train_torchrun.json"]
    assert len(files) <= 8 and all(p.is_file() for p in out.iterdir())
    s = json.loads((out / "summary.json").read_text())
    assert s["cut"] == [] and s["batch_size"] == 4          # the largest batch that ran
    bench = json.loads((out / "bench_eager.json").read_text())
    assert {r["batch_size"] for r in bench["rows"]} == {2, 4} and not any(r["error"] for r in bench["rows"])
    assert all(r["breakdown"]["total_ms"] > 0 for r in bench["rows"])
    for name in ("stm", "torchrun"):
        run = s[f"train_{name}"]
        assert run["rc"] == 0 and run["steps"] == 4 and run["videos_per_s"] > 0 and run["mfu"] > 0
        assert run["loader_wait_s"]["median"] >= 0
        rec = json.loads((out / f"train_{name}.json").read_text())
        assert [r["global_step"] for r in rec["steps"]] == [1, 2, 3, 4] and len(rec["metrics"]) == 2
    assert "torch.distributed.run" in json.loads((out / "train_torchrun.json").read_text())["command"]


def test_summarize_run_by_hand():
    sys.path.insert(0, str(ROOT / "tools"))
    from gpu_speed_job import WARM_STEPS, summarize_run

    steps = [{"step_s": 10.0 if i == 0 else 0.5, "loader_wait_s": 0.1, "loss": 5.0 - i / 100,
              "max_memory_allocated": 1000 + i} for i in range(WARM_STEPS + 20)]
    r = summarize_run(steps, batch=64, flops_per_clip=10**9, peak=10**12)
    assert r["timed_steps"] == 20 and r["first_step_s"] == 10.0 and r["median_step_s"] == 0.5
    assert r["videos_per_s"] == 128.0 and r["videos_per_s_end_to_end"] == pytest.approx(64 / 0.6)
    assert r["mfu"] == pytest.approx(6 * 10**9 * 128 / 10**12)       # 2 flops x 3 forwards per training clip
    assert r["loader_wait_share"] == pytest.approx(0.1 / 0.6) and r["peak_memory_bytes"] == 1000 + WARM_STEPS + 19


def test_sharded_ssv1_data_reads_as_ssv1(tmp_path):
    """The job's data: shards generated in parallel, merged into one SSv1 folder that the ssv1
    reader takes, every clip once, labels kept."""
    sys.path.insert(0, str(ROOT / "tools"))
    import time

    from gpu_speed_job import finish_ssv1, start_ssv1
    from stm_lib.data.datasets import read_ssv1

    procs = start_ssv1(tmp_path, 2, train=8, val=4, classes=2, frames=2, res=16)
    assert finish_ssv1(procs, tmp_path, tmp_path / "ssv1", time.time() + 300) is None
    classes, train = read_ssv1(tmp_path / "ssv1", "train")
    _, val = read_ssv1(tmp_path / "ssv1", "val")
    assert len(train) == 8 and len(val) == 4 and len(classes) == 2
    assert len({s.id for s in train + val}) == 12
    assert all(s.path.is_dir() and len(list(s.path.glob("*.jpg"))) == 2 for s in train + val)
