"""End to end at CPU scale, through the command line of the issue (`stm train --dataset ssv1
--data-root DIR ...`, the temporal proxy being written in the Something-Something v1 layout):

- a model that reads motion (the frame-difference reference, `tsn-diff`) ends clearly above TSN
  on the temporal proxy, and TSN stays near chance (the gap of the paper's Table 5: TSN averages
  frames, so it cannot tell a clip from the same clip played backwards; the proxy's classes come
  in such time-reversed pairs; since version 4 a fifth of the clips do not move and some move very
  slowly, so a motion reader is capped near 0.9);
- STM trains through the same command line, evaluates under the 1x1 and 10x3 protocols and
  predicts on a real video file.

Whether STM itself learns the motion is not asserted here: from scratch at this size one seed's
outcome is a draw that floating-point details change (this test's seed gave STM 0.64 before
issue 29's fast paths and 0.54 after, TSN 0.48 both times); the book's Table 5 measures it over
five seeds with a stated test.
"""
from __future__ import annotations

import json

import pytest

# Settings measured on 2 CPU cores (numbers in the engine report). Two classes: one motion
# pattern and the same clips played backwards, so TSN is at chance by construction. 64 px: at
# 32 px the proxy's motion is sub-pixel after the stem and nothing learns. With 4 classes STM
# also wins but, from scratch at this size, sometimes stalls at 0.5 (pair found, direction not):
# too seed-dependent for a test. fc lr x1: x5 (the fine-tuning recipe) is unstable from scratch.
CLASSES, VIDEOS, RES, FRAMES = 2, 500, 64, 4
TRAIN = ["--frames", str(FRAMES), "--input-size", str(RES), "--width-mult", "0.25", "--epochs", "6",
         "--batch-size", "8", "--lr", "0.01", "--lr-steps", "5", "--warmup-epochs", "1", "--dropout", "0.2",
         "--fc-lr-mult", "1",
         "--num-workers", "0", "--deterministic", "--no-progress", "--no-tensorboard"]


@pytest.fixture(scope="module")
def proxy_root(tmp_path_factory):
    from stm_lib.data.proxy import make_proxy

    return make_proxy("temporal", tmp_path_factory.mktemp("proxy") / "temporal", videos=VIDEOS,
                      classes=CLASSES, frames=8, resolution=RES, progress=False)


def _mp4(path, frames: int, size: int):
    """A real H.264 (or MPEG-4) file written with PyAV: gratings drifting right."""
    import av
    import numpy as np

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=12)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        x = np.arange(size)
        for t in range(frames):
            row = (127 + 120 * np.sin(2 * np.pi * (x - 2 * t) / 16)).astype(np.uint8)
            img = np.repeat(np.tile(row, (size, 1))[..., None], 3, axis=2)
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def _train(root, model, out):
    from stm_lib.cli import main

    assert main(["train", "--dataset", "ssv1", "--data-root", str(root), "--model", model, *TRAIN,
                 "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return rows


@pytest.mark.slow
def test_motion_reader_far_above_tsn_on_the_temporal_proxy_then_stm_evaluates_and_predicts(proxy_root, tmp_path,
                                                                                          capsys):
    from stm_lib.cli import main

    ref = _train(proxy_root, "tsn-diff", tmp_path / "ref")
    tsn = _train(proxy_root, "tsn", tmp_path / "tsn")
    stm = _train(proxy_root, "stm", tmp_path / "stm")
    chance = 1 / CLASSES
    ref_top1, tsn_top1, stm_top1 = ref[-1]["val_top1"], tsn[-1]["val_top1"], stm[-1]["val_top1"]
    with capsys.disabled():
        print(f"\ntemporal proxy, val top-1 after {len(ref)} epochs: frame-difference reference {ref_top1:.3f}  "
              f"TSN {tsn_top1:.3f}  STM {stm_top1:.3f}  (chance {chance:.2f})")
    assert tsn_top1 <= chance + 0.15, "TSN should stay near chance on time-reversed classes"
    assert ref_top1 >= 0.58 and ref_top1 - tsn_top1 >= 0.08, (ref_top1, tsn_top1)
    assert len(stm) == 6 and all(0 <= r["val_top1"] <= 1 for r in stm)

    capsys.readouterr()
    results = {}
    for clips, crops in ((1, 1), (10, 3)):
        assert main(["evaluate", "--run", str(tmp_path / "stm"), "--clips", str(clips), "--crops", str(crops),
                     "--json"]) == 0
        results[clips, crops] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    one, multi = results[1, 1], results[10, 3]
    assert one["top1"] == pytest.approx(max(r["val_top1"] for r in stm))  # best checkpoint, same protocol
    assert multi["views"] == 30 and multi["top1"] >= one["top1"] - 0.1
    assert (tmp_path / "stm" / "eval_val_10x3.json").is_file()
    assert (tmp_path / "stm" / "confusion_val_10x3.csv").is_file()
    with capsys.disabled():
        print(f"STM evaluate: 1x1 top-1 {one['top1']:.3f}, 10x3 top-1 {multi['top1']:.3f}")

    video = _mp4(tmp_path / "real.mp4", frames=32, size=96)
    assert main(["predict", str(video), "--run", str(tmp_path / "stm"), "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    top = json.loads(out[-1])["top"]
    classes = json.loads((tmp_path / "stm" / "eval_val_1x1.json").read_text())["per_class"]
    assert len(top) == CLASSES and {t["class"] for t in top} == set(classes)
