"""Optical flow for the two-stream Spatiotemporal ResNet: TV-L1 against a known displacement,
8-bit coding, the TSN folder layout, stacking, the dataset's extra channels, `stm data flow`, and
a tiny `stm train --model st-resnet` end to end."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stm_lib.cli import main
from stm_lib.data import flow, flow_fields, transforms
from stm_lib.data.datasets import Sample, VideoDataset
from test_data import TRAIN, VAL, make_ssv1

S = 32


def texture(h: int, w: int, shift: int) -> np.ndarray:
    """A smooth random texture moved `shift` px to the right (wrapping)."""
    rng = np.random.default_rng(0)
    base = rng.random((h // 4, w // 4))
    img = np.array(Image.fromarray((base * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC))
    return np.repeat(np.roll(img, shift, axis=1)[..., None], 3, axis=2)


def test_tvl1_recovers_a_known_translation():
    frames = np.stack([texture(48, 64, 0), texture(48, 64, 2), texture(48, 64, 4)])
    f = flow.tvl1(frames)
    assert f.shape == (2, 48, 64, 2)
    inner = f[:, 8:-8, 8:-8]                        # away from the wrapped border
    assert abs(float(np.median(inner[..., 0])) - 2.0) < 0.3
    assert abs(float(np.median(inner[..., 1]))) < 0.3
    with pytest.raises(ValueError, match="at least 2 frames"):
        flow.tvl1(frames[:1])


def test_encode_decode_clip_and_quantise():
    f = np.array([-30.0, -20.0, -1.0, 0.0, 3.3, 20.0, 25.0], np.float32)
    u8 = flow_fields.encode(f)
    assert u8.dtype == np.uint8 and u8[0] == u8[1] == 0 and u8[-1] == u8[-2] == 255
    assert u8[3] in (127, 128)                       # zero motion sits mid-range
    back = flow_fields.decode(u8)
    assert np.all(np.abs(back[1:-1] - f[1:-1]) <= 20.0 / 255 + 1e-6)


def write_fields(d, values):
    """Field i gets constant images: u = values[i], v = values[i] + 1 (hand-made flow folder)."""
    d.mkdir(parents=True, exist_ok=True)
    for i, v in enumerate(values):
        x, y = flow_fields.field_names(i)
        Image.fromarray(np.full((12, 16), v, np.uint8)).save(d / x, quality=100)
        Image.fromarray(np.full((12, 16), v + 1, np.uint8)).save(d / y, quality=100)
    return d


def test_read_stacks_interleaves_and_clamps(tmp_path):
    d = write_fields(tmp_path / "clip", [10, 50, 90, 130])
    st = flow_fields.read_stacks(d, [0, 2], 3)
    assert st.shape == (2, 12, 16, 6)
    means = st.reshape(2, -1, 6).mean(1).round()
    assert means[0].tolist() == [10, 11, 50, 51, 90, 91]        # u0 v0 u1 v1 u2 v2
    assert means[1].tolist() == [90, 91, 130, 131, 130, 131]    # past the last field: repeated
    with pytest.raises(FileNotFoundError, match="stm data flow"):
        flow_fields.read_stacks(tmp_path / "nope", [0], 2)


def test_extract_clip_is_atomic_and_readable(tmp_path):
    frames = np.stack([texture(24, 32, s) for s in (0, 1, 2, 3)])
    n = flow.extract_clip(frames, tmp_path / "a" / "clip")
    assert n == 3 and flow_fields.is_complete(tmp_path / "a" / "clip") and flow_fields.count_fields(tmp_path / "a" / "clip") == 3
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["clip"]      # no temporary left behind
    st = flow_fields.read_stacks(tmp_path / "a" / "clip", [0], 3)
    assert st.shape == (1, 24, 32, 6)
    assert np.median(st[0, 4:-4, 4:-4, 0]) > 130                          # u > 0: moving right

    class Boom(Exception):
        pass

    def bad(*a, **k):
        raise Boom()
    orig, flow.tvl1 = flow.tvl1, bad
    try:
        with pytest.raises(Boom):
            flow.extract_clip(frames, tmp_path / "b" / "clip")
    finally:
        flow.tvl1 = orig
    assert not (tmp_path / "b" / "clip").exists() and not list((tmp_path / "b").iterdir())


def test_clips_extracted_side_by_side_match_one_at_a_time(tmp_path):
    """`jobs` > 1 (threads) writes the very fields one worker writes, for every clip, and
    reports an unreadable clip without stopping the others."""
    clips = {f"c{i}": np.stack([texture(24, 32, s * (i + 1)) for s in range(3)]) for i in range(4)}
    samples = [Sample(k, tmp_path / k, 0) for k in [*clips, "broken"]]

    def read(s):
        if s.id == "broken":
            raise OSError("cannot decode")
        return clips[s.id]

    one = flow.extract_dataset(samples, tmp_path / "one", read, progress=False, jobs=1)
    many = flow.extract_dataset(samples, tmp_path / "many", read, progress=False, jobs=3)
    assert one["extracted"] == many["extracted"] == 4 and many["failed"] == [("broken", "OSError: cannot decode")]
    for k in clips:
        for i in range(2):
            for name in flow_fields.field_names(i):
                a = np.asarray(Image.open(tmp_path / "one" / k / name))
                b = np.asarray(Image.open(tmp_path / "many" / k / name))
                assert np.array_equal(a, b), (k, name)
    again = flow.extract_dataset(samples, tmp_path / "many", read, progress=False, jobs=3)
    assert again["extracted"] == 0 and again["already_there"] == 4


def position_ramps(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose value encodes the pixel's position: 255 * (x + 0.5) / w and the same in y,
    so the same region of a 64x48 frame and of a 32x24 flow field holds the same values."""
    x = np.broadcast_to(255 * (np.arange(w) + 0.5) / w, (h, w))
    y = np.broadcast_to(255 * (np.arange(h)[:, None] + 0.5) / h, (h, w))
    return np.rint(x).astype(np.uint8), np.rint(y).astype(np.uint8)


def test_dataset_adds_flow_channels_with_the_same_crop_and_flip(tmp_path):
    """Frames 64x48 with flow fields stored at 32x24, both carrying position ramps (R and u: x,
    G and v: y). Whatever random multi-scale crop is drawn, the flow channels must show the same
    region as the RGB ones (u follows R, v follows G); a mirrored clip mirrors both and moves the
    other way (u -> 255 - u, so u follows 255 - R). Channels in [-1, 1] with 128 = no motion."""
    from test_data import MEAN, STD, write_frames

    n = 20
    rx, ry = position_ramps(48, 64)
    write_frames(tmp_path / "frames" / "1001", np.repeat(np.stack([rx, ry, np.zeros_like(rx)], -1)[None], n, 0))
    flows = tmp_path / "flow" / "1001"
    flows.mkdir(parents=True)
    ux, vy = position_ramps(24, 32)
    for i in range(n - 1):
        x, y = flow_fields.field_names(i)
        Image.fromarray(ux).save(flows / x, quality=100)
        Image.fromarray(vy).save(flows / y, quality=100)
    s = Sample("1001", tmp_path / "frames" / "1001", 0)
    ds = VideoDataset([s], ["a"], 4, train=True, input_size=S, flow_root=flows.parent, flow_stack=2)
    assert ds.item_shape == (4, 7, S, S)
    # The box is rounded to the flow's pixel grid (half a flow pixel at each edge): one flow
    # pixel of ramp, plus 2 for JPEG. A different crop is off by 60+ (a quarter of the frame).
    tol_x, tol_y = 255 / 32 + 2, 255 / 24 + 2
    ds.rng = np.random.default_rng(0)
    lefts, flipped = set(), []
    for _ in range(16):
        clip = ds[0][0]
        assert clip.shape == (4, 7, S, S)
        rgb = (clip[:, :3] * STD + MEAN) * 255
        fl = clip[:, 3:] * 128 + 128
        r_cols, g_rows = rgb[:, 0].mean((0, 1)), rgb[:, 1].mean((0, 2))         # per column / per row
        u_cols, v_rows = fl[:, 0::2].mean((0, 1, 2)), fl[:, 1::2].mean((0, 1, 3))
        flip = bool(r_cols[0] > r_cols[-1])                                     # the x ramp runs backwards
        want_u = 255 - r_cols if flip else r_cols
        inner = slice(3, -3)                                                    # clear of the resize borders
        assert (u_cols - want_u)[inner].abs().max() < tol_x, (flip, u_cols, want_u)
        assert (v_rows - g_rows)[inner].abs().max() < tol_y, (v_rows, g_rows)
        lefts.add(int(r_cols[0] if not flip else r_cols[-1]) // 8)
        flipped.append(flip)
    assert len(lefts) >= 3 and 0 < sum(flipped) < 16        # the draws really varied crop and mirror
    test = VideoDataset([s], ["a"], 4, train=False, input_size=S, flow_root=flows.parent, flow_stack=2, test_crops=3)
    views = test[0][0]
    assert views.shape == (3, 4, 7, S, S)
    for v in views:                                       # the three test crops: same regions too
        r_cols = ((v[:, 0] * STD[0] + MEAN[0]) * 255).mean((0, 1))
        u_cols = (v[:, 3::2] * 128 + 128).mean((0, 1, 2))
        assert (u_cols - r_cols)[3:-3].abs().max() < tol_x
    with pytest.raises(FileNotFoundError, match="optical flow root"):
        VideoDataset([s], ["a"], 4, train=True, flow_root=tmp_path / "none")


def test_scale_box_maps_regions():
    assert transforms.scale_box((16, 8, 32, 32), (48, 64), (12, 16)) == (4, 2, 8, 8)
    assert transforms.scale_box((0, 0, 64, 48), (48, 64), (48, 64)) == (0, 0, 64, 48)


@pytest.mark.slow   # end to end (TV-L1 on 7 clips, a two-stream run, evaluate); the parts have fast unit tests above
def test_flow_command_then_train_st_resnet(tmp_path, capsys):
    root = make_ssv1(tmp_path / "ss")
    out = tmp_path / "flow"
    assert main(["data", "flow", "--dataset", "ssv1", "--data-root", str(root), "--out", str(out),
                 "--max-side", "32"]) == 0
    assert f"{len(TRAIN) + len(VAL)} clips extracted, 0 already there, 0 failed" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [str(1001 + i) for i in range(len(TRAIN) + len(VAL))]
    assert flow_fields.count_fields(out / "1001") == TRAIN[0][1] - 1
    assert main(["data", "flow", "--dataset", "ssv1", "--data-root", str(root), "--out", str(out)]) == 0
    assert f"0 clips extracted, {len(TRAIN) + len(VAL)} already there" in capsys.readouterr().out

    common = ["train", "--model", "st-resnet", "--dataset", "ssv1", "--data-root", str(root), "--frames", "4",
              "--width-mult", "0.25", "--input-size", "32", "--epochs", "1", "--batch-size", "2", "--lr", "0.01",
              "--num-workers", "0", "--no-tensorboard"]
    assert main(common + ["--out", str(tmp_path / "r0")]) == 2       # a user error, before any step
    assert "takes 23 channels per frame, the data gives 3: it needs optical flow" in capsys.readouterr().err
    assert main(common + ["--flow-root", str(out), "--out", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "checkpoint_last.pt").is_file()
    assert main(["evaluate", "--run", str(tmp_path / "run"), "--clips", "2", "--json"]) == 0


def test_flow_command_covers_every_fold(tmp_path, capsys):
    """HMDB-51 folds leave clips out (tag 0): a clip unused in fold 1 still gets its flow."""
    from test_data import HMDB_CLASSES, make_hmdb51

    root = make_hmdb51(tmp_path / "hmdb")
    split1 = root / "testTrainMulti_7030_splits" / f"{HMDB_CLASSES[0]}_test_split1.txt"
    lines = split1.read_text().splitlines()
    left_out = lines[0].split()[0]
    split1.write_text("\n".join([f"{left_out} 0 "] + lines[1:]) + "\n")
    out = tmp_path / "flow"
    assert main(["data", "flow", "--dataset", "hmdb51", "--data-root", str(root), "--out", str(out),
                 "--max-side", "16"]) == 0
    n = len(TRAIN) + len(VAL)
    assert f"{n} clips extracted" in capsys.readouterr().out
    assert Path(left_out).stem in {p.name for p in out.iterdir()}
