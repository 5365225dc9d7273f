"""The fast proxy pipeline: clips decoded once into a uint8 array give exactly the clips the JPEG
reader gives (so runs and resumes do not change), the array is keyed and written atomically, the
loader keeps in-memory data in-process, and `stm data pipeline-bench` measures and records."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from stm_lib.config import DataConfig
from stm_lib.data import build_dataset, make_loader, proxy
from stm_lib.data.datasets import VideoDataset

ROOT = Path(__file__).resolve().parents[1]


def _cfg(cache, **kw) -> DataConfig:
    return DataConfig(dataset="proxy-temporal", proxy_cache=str(cache), proxy_videos=24, proxy_classes=4,
                      proxy_frames=6, proxy_resolution=32, input_size=32, **kw)


def _jpeg_path(cfg, split, train, monkeypatch) -> VideoDataset:
    monkeypatch.setenv("STM_PROXY_ARRAYS", "0")
    ds = build_dataset(cfg, split, frames=4, train=train)
    monkeypatch.delenv("STM_PROXY_ARRAYS")
    return ds


def test_decoded_array_gives_the_jpeg_readers_clips(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path)
    for split, train in (("train", True), ("val", False)):
        fast = build_dataset(cfg, split, frames=4, train=train)
        slow = _jpeg_path(cfg, split, train, monkeypatch)
        assert isinstance(fast, proxy.DecodedProxy) and type(slow) is VideoDataset
        assert [s.id for s in fast.samples] == [s.id for s in slow.samples]
        for i in range(len(fast)):
            fast.reseed(1000 + i)  # the engine's per-clip seed (SampleSeeded)
            slow.reseed(1000 + i)
            (a, ya), (b, yb) = fast[i], slow[i]
            assert ya == yb and torch.equal(a, b), f"{split} clip {i}"
    # and the array holds the decoded JPEG frames themselves
    from PIL import Image

    s = fast.samples[3]
    arr = np.load(fast.array_path)[3]
    assert arr.shape == (6, 32, 32, 3) and arr.dtype == np.uint8
    assert np.array_equal(arr[5], np.asarray(Image.open(s.path / "00006.jpg").convert("RGB")))


def test_array_key_follows_what_changes_the_pixels(tmp_path):
    cfg = _cfg(tmp_path)
    a = build_dataset(cfg, "train", frames=4, train=True).array_path
    assert a.is_file() and a.parent.name == "decoded" and a.name.startswith("train-")
    assert build_dataset(cfg, "train", frames=4, train=True).array_path == a  # reused
    assert build_dataset(cfg, "val", frames=4, train=False).array_path != a
    # a scale size that makes the JPEG reader downscale in the DCT: another array, smaller frames
    small = build_dataset(_cfg(tmp_path, scale_size=8), "train", frames=4, train=True)
    assert small.array_path != a and np.load(small.array_path, mmap_mode="r").shape[2] < 32
    # another proxy (any parameter of its cache key): another folder, hence another array
    other = build_dataset(DataConfig(**{**cfg.__dict__, "proxy_seed": 1}), "train", frames=4, train=True)
    assert other.array_path.parents[1] != a.parents[1]


def test_interrupted_decode_leaves_no_array(tmp_path, monkeypatch):
    from stm_lib.data import decode

    cfg = _cfg(tmp_path)
    root = proxy.ensure_proxy("temporal", cfg, progress=False)
    calls = {"n": 0}
    real = decode.FrameFolder.read

    def failing(self, idx):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return real(self, idx)

    monkeypatch.setattr(decode.FrameFolder, "read", failing)
    with pytest.raises(KeyboardInterrupt):
        build_dataset(cfg, "train", frames=4, train=True)
    assert not (root / "decoded").exists() or list((root / "decoded").iterdir()) == []


def test_loader_reads_in_memory_data_in_process(tmp_path):
    ds = build_dataset(_cfg(tmp_path), "train", frames=4, train=True)
    assert make_loader(ds, 4, train=True, num_workers=2).num_workers == 0
    twin = pickle.loads(pickle.dumps(ds))  # what a worker would get: the map reopened, not copied
    assert twin._array is None
    ds.reseed(7)
    twin.reseed(7)
    assert torch.equal(ds[2][0], twin[2][0])


def test_switch_off_and_flow_fall_back_to_the_jpeg_reader(tmp_path, monkeypatch):
    monkeypatch.setenv("STM_PROXY_ARRAYS", "0")
    assert type(build_dataset(_cfg(tmp_path), "train", frames=4, train=True)) is VideoDataset
    monkeypatch.delenv("STM_PROXY_ARRAYS")
    (tmp_path / "flow").mkdir()
    ds = build_dataset(_cfg(tmp_path, flow_root=str(tmp_path / "flow")), "train", frames=4, train=True)
    assert type(ds) is VideoDataset


def test_pipeline_bench_prints_and_records(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "stm_lib.cli", "data", "pipeline-bench", "--proxy-cache", str(tmp_path / "c"),
           "--proxy-videos", "24", "--proxy-classes", "4", "--proxy-frames", "4", "--proxy-resolution", "32",
           "--frames", "2", "--input-size", "32", "--batch-size", "4", "--steps", "1", "--repeats", "1",
           "--out", str(out)]
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ratio" in r.stdout and "bare loop" in r.stdout
    res = json.loads(out.read_text())
    assert res["engine_clips_per_s"] > 0 and res["bare_clips_per_s"] > 0
    b = res["bare_repeats"]
    assert len(b) == 2 and res["ratio"] == pytest.approx(res["engine_repeats"][0] / ((b[0] + b[1]) / 2))
    assert res["provenance"]["git"]["commit"] and res["provenance"]["parameters"]["steps"] == 1
    bad = subprocess.run(cmd[:5] + ["--steps", "0"], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "--steps" in bad.stderr
