"""stm_lib.data: the six dataset layouts and the TSM list, read through the public API from tiny
fixtures the tests write themselves (PIL JPEG frames, PyAV mp4 / webm / avi).

Every fixture frame encodes what it is: red = 40 * label + 20, green = 10 * frame index + 5,
so a decoded, normalised tensor tells which clip and which frames were read.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from stm_lib.config import DataConfig
from stm_lib.data import DATASETS, NO_FLIP, DecodeError, build_dataset, load_clip, make_loader
from stm_lib.data import sampling, transforms
from stm_lib.data.datasets import Sample, VideoDataset

S = 32          # network input side in these tests
W, H = 64, 48   # fixture frame size (landscape)
MEAN = torch.tensor(transforms.IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(transforms.IMAGENET_STD).view(3, 1, 1)


# --- fixture writers ---------------------------------------------------------------------------

def clip_array(label: int, n: int) -> np.ndarray:
    a = np.zeros((n, H, W, 3), np.uint8)
    a[..., 0] = 40 * label + 20
    a[..., 1] = (10 * np.arange(n) + 5)[:, None, None]
    a[..., 2] = 128
    return a


def write_frames(folder: Path, arr: np.ndarray, name="{:05d}.jpg") -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, fr in enumerate(arr):
        Image.fromarray(fr).save(folder / name.format(i + 1), quality=95)
    return folder


def write_video(path: Path, arr: np.ndarray, codec: str) -> Path:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=25)
        s.height, s.width = arr.shape[1:3]
        s.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        if codec in ("libx264", "mpeg4"):  # near-lossless: the colour code must survive
            s.options = {"qp": "0"} if codec == "libx264" else {"qscale": "1"}
        elif codec.startswith("libvpx"):
            s.bit_rate = 4_000_000
        for fr in arr:
            for p in s.encode(av.VideoFrame.from_ndarray(fr, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def decoded_ids(clip: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(labels, frame indices) read back from the colour code of a (..., 3, S, S) tensor."""
    rgb = (clip * STD + MEAN).mul(255).mean(dim=(-1, -2))
    labels = np.rint((rgb[..., 0].numpy() - 20) / 40).astype(int)
    frames = np.rint((rgb[..., 1].numpy() - 5) / 10).astype(int)
    return labels, frames


# Layout fixtures: 3 classes, per split 2 clips of class 0, 1 of class 1, 1 of class 2 (train),
# one clip per class (val). Clip lengths differ so sampling is exercised.
TRAIN = [(0, 20), (0, 16), (1, 24), (2, 18)]
VAL = [(0, 17), (1, 21), (2, 19)]


def _ss_frames(root: Path, frames_dir: str, prefix: str, classes: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{prefix}-labels.csv").write_text("\n".join(classes) + "\n")
    n = 0
    for split, items in (("train", TRAIN), ("validation", VAL)):
        lines = []
        for label, length in items:
            n += 1
            write_frames(root / frames_dir / str(1000 + n), clip_array(label, length))
            lines.append(f"{1000 + n};{classes[label]}")
        (root / f"{prefix}-{split}.csv").write_text("\n".join(lines) + "\n")
    return root


def make_ssv1(root: Path) -> Path:
    return _ss_frames(root, "20bn-something-something-v1", "something-something-v1",
                      ["Pushing something from left to right", "Pushing something from right to left", "Holding something"])


def make_jester(root: Path) -> Path:
    return _ss_frames(root, "20bn-jester-v1", "jester-v1", ["Swiping Left", "Swiping Right", "Doing other things"])


def make_ssv2(root: Path) -> Path:
    templates = ["Moving [something] up", "Moving [something] down", "Pretending to pick [something] up"]
    plain = [t.replace("[", "").replace("]", "") for t in templates]
    root.mkdir(parents=True, exist_ok=True)
    (root / "something-something-v2-labels.json").write_text(json.dumps({p: str(i) for i, p in enumerate(plain)}))
    n = 0
    for split, items in (("train", TRAIN), ("validation", VAL)):
        entries = []
        for label, length in items:
            n += 1
            codec = "libvpx" if n % 2 else "libvpx-vp9"  # VP8 and VP9, as SSv2 mixes both
            write_video(root / "20bn-something-something-v2" / f"{n}.webm", clip_array(label, length), codec)
            entries.append({"id": str(n), "label": "moving a cup", "template": templates[label], "placeholders": ["a cup"]})
        (root / f"something-something-v2-{split}.json").write_text(json.dumps(entries))
    return root


K400_CLASSES = ["abseiling", "playing guitar", "zumba"]


def make_kinetics(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    n = 0
    for split, items in (("train", TRAIN), ("val", VAL)):
        rows = ["label,youtube_id,time_start,time_end,split,is_cc"]
        for label, length in items:
            n += 1
            yid = f"yt{n:09d}"
            write_video(root / split / K400_CLASSES[label] / f"{yid}_000010_000020.mp4", clip_array(label, length), "libx264")
            rows.append(f"{K400_CLASSES[label]},{yid},10,20,{split},0")
        (root / f"kinetics-400_{split}.csv").write_text("\n".join(rows) + "\n")
    return root


UCF_CLASSES = ["ApplyEyeMakeup", "Basketball", "YoYo"]


def make_ucf101(root: Path) -> Path:
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(UCF_CLASSES)))
    rels = []
    for g, (label, length) in enumerate(TRAIN + VAL):
        c = UCF_CLASSES[label]
        rel = f"{c}/v_{c}_g{g + 1:02d}_c01.avi"
        write_video(root / "UCF-101" / rel, clip_array(label, length), "mpeg4" if g % 2 else "mjpeg")
        rels.append((rel, label))
    for fold in (1, 2, 3):  # fold k: a different clip of each class goes to test
        test = {rels[(fold - 1 + i) % len(rels)][0] for i in (0, 5)}
        (lists / f"trainlist0{fold}.txt").write_text("".join(f"{r} {l + 1}\n" for r, l in rels if r not in test))
        (lists / f"testlist0{fold}.txt").write_text("".join(f"{r}\n" for r, _ in rels if r in test))
    return root


HMDB_CLASSES = ["brush_hair", "cartwheel", "wave"]


def make_hmdb51(root: Path) -> Path:
    sdir = root / "testTrainMulti_7030_splits"
    sdir.mkdir(parents=True)
    per_class: dict[int, list[str]] = {0: [], 1: [], 2: []}
    for g, (label, length) in enumerate(TRAIN + VAL):
        name = f"clip_{HMDB_CLASSES[label]}_{g}.avi"
        write_video(root / "hmdb51_org" / HMDB_CLASSES[label] / name, clip_array(label, length), "mpeg4")
        per_class[label].append(name)
    for fold in (1, 2, 3):
        for label, names in per_class.items():
            tags = ["2" if i == 0 else "1" for i in range(len(names))]
            if fold == 2:
                tags = ["0"] * len(names)  # unused in fold 2
            (sdir / f"{HMDB_CLASSES[label]}_test_split{fold}.txt").write_text(
                "".join(f"{n} {t} \n" for n, t in zip(names, tags)))
    return root


def make_list(root: Path) -> tuple[Path, Path]:
    lines = {"train": [], "val": []}
    for split, items in (("train", TRAIN), ("val", VAL)):
        for i, (label, length) in enumerate(items):
            write_frames(root / "frames" / f"{split}{i}", clip_array(label, length), name="img_{:05d}.jpg")
            lines[split].append(f"frames/{split}{i} {length} {label}")
    for split in lines:
        (root / f"{split}_list.txt").write_text("\n".join(lines[split]) + "\n")
    return root / "train_list.txt", root / "val_list.txt"


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """One root per dataset layout (written once for the module)."""
    base = tmp_path_factory.mktemp("layouts")
    roots = {name: fn(base / name) for name, fn in (
        ("ssv1", make_ssv1), ("jester", make_jester), ("ssv2", make_ssv2), ("kinetics400", make_kinetics),
        ("ucf101", make_ucf101), ("hmdb51", make_hmdb51))}
    (base / "list").mkdir()
    roots["list"] = base / "list"
    roots["list_files"] = make_list(base / "list")
    return roots


def cfg_for(layouts, name: str, **kw) -> DataConfig:
    c = DataConfig(dataset=name, data_root=str(layouts[name]), input_size=S, **kw)
    if name == "list":
        c.list_file, c.val_list_file = map(str, layouts["list_files"])
    return c


# --- the six layouts + list -----------------------------------------------------------------------

EXPECTED = {  # dataset -> (train counts per class, val counts per class) for split 1
    "ssv1": ([2, 1, 1], [1, 1, 1]), "jester": ([2, 1, 1], [1, 1, 1]), "ssv2": ([2, 1, 1], [1, 1, 1]),
    "kinetics400": ([2, 1, 1], [1, 1, 1]), "list": ([2, 1, 1], [1, 1, 1]),
    "ucf101": ([2, 1, 2], [1, 1, 0]), "hmdb51": ([2, 1, 1], [1, 1, 1]),
}


def test_dataset_names():
    assert set(DATASETS) == {"ssv1", "ssv2", "jester", "kinetics400", "ucf101", "hmdb51", "list",
                             "proxy-temporal", "proxy-scene"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_layout_labels_counts_and_shapes(layouts, name):
    want_train, want_val = EXPECTED[name]
    for split, want in (("train", want_train), ("val", want_val)):
        ds = build_dataset(cfg_for(layouts, name), split, frames=4, train=False)
        assert ds.num_classes == 3 and len(ds.classes) == 3
        assert np.bincount([s.label for s in ds.samples], minlength=3).tolist() == want
        for i, s in enumerate(ds.samples):
            clip, label = ds[i]
            assert clip.shape == (1, 4, 3, S, S) and clip.dtype == torch.float32
            labels, frames = decoded_ids(clip)
            assert label == s.label and (labels == s.label).all(), (name, s.id)
            assert frames[0].tolist() == sampling.test_indices(s.num_frames, 4)[0].tolist()
    tr = build_dataset(cfg_for(layouts, name), "train", frames=4, train=True)
    clip, label = tr[0]
    assert clip.shape == (4, 3, S, S)


def test_class_names(layouts):
    assert build_dataset(cfg_for(layouts, "kinetics400"), "val", 4, False).classes == K400_CLASSES
    assert build_dataset(cfg_for(layouts, "ucf101"), "val", 4, False).classes == UCF_CLASSES
    assert build_dataset(cfg_for(layouts, "hmdb51"), "val", 4, False).classes == HMDB_CLASSES
    assert build_dataset(cfg_for(layouts, "ssv2"), "val", 4, False).classes[2] == "Pretending to pick something up"


def test_ucf_hmdb_splits(layouts):
    ids = {k: [s.id for s in build_dataset(cfg_for(layouts, "ucf101", split=k), "val", 4, False).samples] for k in (1, 2, 3)}
    assert ids[1] != ids[2] != ids[3] and all(len(v) == 2 for v in ids.values())
    with pytest.raises(ValueError, match="no samples"):  # fold 2 of the fixture marks every clip unused
        build_dataset(cfg_for(layouts, "hmdb51", split=2), "train", 4, False)
    with pytest.raises(ValueError, match="1, 2 or 3"):
        build_dataset(cfg_for(layouts, "ucf101", split=4), "train", 4, False)


def test_ssv2_frames_extracted_instead_of_webm(layouts, tmp_path):
    """An annotation naming `<id>.webm` also finds an extracted frame folder `<id>/`."""
    root = make_ssv2(tmp_path / "ssv2")
    ds0 = build_dataset(cfg_for({"ssv2": root}, "ssv2"), "val", 4, False)
    s = ds0.samples[0]
    s.path.unlink()
    write_frames(s.path.with_suffix(""), clip_array(s.label, 12))
    clip, label = ds0[0]
    assert decoded_ids(clip)[0].tolist() == [[label] * 4]


# --- sampling ----------------------------------------------------------------------------------

def test_train_sampling_formula():
    rng = np.random.default_rng(0)
    for n, T in ((40, 8), (17, 8), (8, 8), (100, 16)):
        avg = n // T
        for _ in range(20):
            idx = sampling.train_indices(n, T, rng)
            off = idx - np.arange(T) * avg
            assert ((off >= 0) & (off < avg)).all()
    assert sampling.train_indices(5, 8, rng).tolist() == [0, 0, 1, 1, 2, 3, 3, 4]  # short: repeat evenly


def test_test_sampling_formula():
    for n, T in ((40, 8), (17, 8), (100, 16), (5, 8)):
        tick = n / T
        assert sampling.test_indices(n, T)[0].tolist() == [min(int(tick / 2 + tick * i), n - 1) for i in range(T)]
    two = sampling.test_indices(40, 8, clips=2)
    assert two[1].tolist() == [int(5 * i) for i in range(8)]  # TSM twice_sample: segment starts
    ten = sampling.test_indices(160, 8, clips=10)
    assert ten.shape == (10, 8) and len({tuple(r) for r in ten}) == 10
    assert (ten.max(0) - ten.min(0) < 20).all()  # every clip stays inside each segment


def test_train_items_sample_inside_segments(layouts):
    ds = build_dataset(cfg_for(layouts, "ssv1"), "train", frames=4, train=True)
    ds.reseed(0)
    seen = set()
    for _ in range(5):
        for i, s in enumerate(ds.samples):
            clip, _ = ds[i]
            _, frames = decoded_ids(clip)
            avg = s.num_frames // 4
            assert ((frames - np.arange(4) * avg >= 0) & (frames - np.arange(4) * avg < avg)).all()
            seen.add(tuple(frames))
    assert len(seen) > 4  # offsets are random


def test_multi_clip_multi_crop(layouts):
    ds = build_dataset(cfg_for(layouts, "kinetics400", test_clips=2, test_crops=3), "val", 4, False)
    clip, label = ds[0]
    assert clip.shape == (6, 4, 3, S, S) and ds.item_shape == (6, 4, 3, S, S)
    _, frames = decoded_ids(clip)
    want = sampling.test_indices(ds.samples[0].num_frames, 4, clips=2)
    assert frames.tolist() == [want[0].tolist()] * 3 + [want[1].tolist()] * 3  # clip-major, crops inner


# --- transforms ---------------------------------------------------------------------------------

def test_fixed_offsets_and_scales():
    offs = transforms.fixed_offsets(256, 256, 168, 168)
    assert len(offs) == 13 and len(set(offs)) == 13
    assert (0, 0) in offs and (88, 88) in offs and (44, 44) in offs
    rng = np.random.default_rng(0)
    sizes = {transforms.multiscale_crop_size(341, 256, 224, rng) for _ in range(400)}
    assert sizes <= {(w, h) for w in (256, 224, 192, 168) for h in (256, 224, 192, 168)}
    assert (224, 224) in sizes and (168, 256) not in sizes  # aspect changes at most one step


def test_test_crops_geometry():
    assert transforms.center_box(240, 320, 224, 256) == (54, 15, 210, 210)  # 341x256 -> (58, 16, 224)
    boxes = transforms.three_crop_boxes(240, 320, 256)
    assert [b[0] for b in boxes] == [0, 39, 80] and all(b[2:] == (240, 240) for b in boxes)
    boxes = transforms.three_crop_boxes(320, 240, 256)  # portrait: along the height
    assert [b[1] for b in boxes] == [0, 39, 80]


def test_normalisation():
    frames = np.full((2, 10, 10, 3), 128, np.uint8)
    out = transforms.crop_resize(frames, (0, 0, 10, 10), 8)
    assert out.shape == (2, 3, 8, 8)
    want = (128 / 255 - torch.tensor(transforms.IMAGENET_MEAN)) / torch.tensor(transforms.IMAGENET_STD)
    assert torch.allclose(out.mean(dim=(0, 2, 3)), want, atol=1e-4)


def _left_dark_frames(folder: Path) -> Path:
    a = np.full((8, H, W, 3), 230, np.uint8)
    a[:, :, : W // 2] = 20
    return write_frames(folder, a)


@pytest.mark.parametrize("name,flips", [("ssv1", False), ("ssv2", False), ("jester", False), ("proxy-temporal", False),
                                        ("kinetics400", True), ("ucf101", True), ("hmdb51", True), ("proxy-scene", True)])
def test_flip_default_per_dataset(tmp_path, name, flips):
    """Flip is off for Something-Something and Jester: left/right is the class there."""
    folder = _left_dark_frames(tmp_path / "c")
    ds = VideoDataset([Sample("c", folder, 0)], ["c"], 4, train=True, input_size=S, flip=name not in NO_FLIP)
    ds.reseed(0)
    flipped = 0
    for _ in range(30):
        x, _ = ds[0]
        gray = x.mean(dim=(0, 1))
        flipped += int(gray[:, : S // 4].mean() > gray[:, -S // 4:].mean())
    assert (flipped > 0) == flips


def test_flip_off_in_built_ssv1_dataset(layouts):
    assert build_dataset(cfg_for(layouts, "ssv1"), "train", 4, True).flip is False
    assert build_dataset(cfg_for(layouts, "jester"), "train", 4, True).flip is False
    assert build_dataset(cfg_for(layouts, "ucf101"), "train", 4, True).flip is True
    assert build_dataset(cfg_for(layouts, "ssv1", flip=True), "train", 4, True).flip is True


# --- bad input: clear errors naming the file or line ---------------------------------------------

def test_wrong_field_count_names_line(tmp_path):
    root = make_ssv1(tmp_path / "ss")
    f = root / "something-something-v1-train.csv"
    f.write_text(f.read_text() + "1999;Holding something;extra\n")
    with pytest.raises(ValueError, match=r"something-something-v1-train\.csv:5: expected 2 fields"):
        build_dataset(cfg_for({"ssv1": root}, "ssv1"), "train", 4, True)


def test_unknown_label_names_line(tmp_path):
    root = make_ssv1(tmp_path / "ss")
    f = root / "something-something-v1-validation.csv"
    f.write_text(f.read_text() + "1999;Juggling something\n")
    with pytest.raises(ValueError, match=r"validation\.csv:4: unknown label 'Juggling something'"):
        build_dataset(cfg_for({"ssv1": root}, "ssv1"), "val", 4, False)


@pytest.mark.parametrize("name,edit,pattern", [
    ("list", lambda r: (r / "train_list.txt").write_text("frames/train0 20\n"), r"train_list\.txt:1: expected 3 fields"),
    ("ucf101", lambda r: (r / "ucfTrainTestlist/testlist01.txt").write_text("Basketball/v_x.avi 2 3\n"), r"testlist01\.txt:1: expected 1"),
    ("ucf101", lambda r: (r / "ucfTrainTestlist/testlist01.txt").write_text("Fencing/v_x.avi\n"), r"testlist01\.txt:1: unknown label 'Fencing'"),
    ("hmdb51", lambda r: (r / "testTrainMulti_7030_splits/wave_test_split1.txt").write_text("a.avi 7\n"), r"wave_test_split1\.txt:1: split tag"),
    ("kinetics400", lambda r: (r / "kinetics-400_val.csv").write_text("label,youtube_id,time_start,time_end,split\nzumba,abc,1\n"), r"kinetics-400_val\.csv:2: expected 5 fields"),
    ("kinetics400", lambda r: (r / "kinetics-400_val.csv").write_text("label,youtube_id,time_start,time_end,split\nyodel,abc,1,2,val\n"), r"kinetics-400_val\.csv:2: unknown label 'yodel'"),
    ("ssv2", lambda r: (r / "something-something-v2-validation.json").write_text('[{"id": "9", "template": "Flying [something]"}]'), r"validation\.json: entry 0 \(id 9\): unknown label"),
])
def test_annotation_errors_name_file_and_line(tmp_path, name, edit, pattern):
    makers = {"list": make_list, "ucf101": make_ucf101, "hmdb51": make_hmdb51, "kinetics400": make_kinetics, "ssv2": make_ssv2}
    root = tmp_path / name
    if name == "list":
        root.mkdir()
        layout = {"list": root, "list_files": make_list(root)}
    else:
        layout = {name: makers[name](root)}
    edit(root)
    with pytest.raises(ValueError, match=pattern):
        for split in ("train", "val"):
            build_dataset(cfg_for(layout, name), split, 4, False)


def test_missing_root_and_annotation(tmp_path):
    with pytest.raises(FileNotFoundError, match="data root not found"):
        build_dataset(DataConfig(dataset="ssv1", data_root=str(tmp_path / "nope")), "train", 4, True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="something-something-v1-labels.csv"):
        build_dataset(DataConfig(dataset="ssv1", data_root=str(tmp_path / "empty")), "train", 4, True)
    with pytest.raises(ValueError, match="unknown dataset 'kinetics700'"):
        build_dataset(DataConfig(dataset="kinetics700", data_root=str(tmp_path)), "train", 4, True)


def test_missing_folder_empty_and_truncated_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "gone")):
        load_clip(tmp_path / "gone", 4, S)
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(DecodeError, match=r"empty\.mp4: empty file"):
        load_clip(tmp_path / "empty.mp4", 4, S)
    good = write_video(tmp_path / "good.mp4", clip_array(1, 24), "libx264").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(good[: len(good) // 2])
    with pytest.raises(DecodeError, match=r"cut\.mp4: cannot decode video"):
        load_clip(tmp_path / "cut.mp4", 4, S)
    (tmp_path / "nojpeg").mkdir()
    (tmp_path / "nojpeg" / "00001.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DecodeError, match=r"00001\.jpg: cannot read frame image"):
        load_clip(tmp_path / "nojpeg", 4, S)
    (tmp_path / "noframes").mkdir()
    with pytest.raises(DecodeError, match="no frame images"):
        load_clip(tmp_path / "noframes", 4, S)


def test_bad_item_is_skipped_with_warning_and_counted(tmp_path):
    root = make_ssv1(tmp_path / "ss")
    ds = build_dataset(cfg_for({"ssv1": root}, "ssv1"), "train", 4, True)
    bad = ds.samples[1]
    for f in bad.path.iterdir():
        f.unlink()
    bad.path.rmdir()
    with pytest.warns(RuntimeWarning, match=f"skipping clip {bad.id} .*does not exist"):
        assert ds[1] is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batches = list(make_loader(ds, batch_size=2, train=False, num_workers=0))
        assert sum(b[2] for b in batches) == 1 and sum(len(b[1]) for b in batches) == 3
        for f in ds.samples[0].path.iterdir():
            f.write_bytes(b"")  # both items of the first batch now fail
        clips, labels, skipped = next(iter(make_loader(ds, batch_size=2, train=False, num_workers=0)))
    assert skipped == 2 and clips.shape == (0, 4, 3, S, S) and labels.shape == (0,)


# --- loader ----------------------------------------------------------------------------------

def test_loader_batches_and_determinism(layouts):
    ds = build_dataset(cfg_for(layouts, "ssv1"), "train", 4, True)

    def epoch(seed, workers):
        return [(c.clone(), l.clone()) for c, l, _ in make_loader(ds, 2, True, workers, seed=seed)]

    a, b, c = epoch(3, 0), epoch(3, 0), epoch(4, 0)
    assert len(a) == 2 and a[0][0].shape == (2, 4, 3, S, S)
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))
    assert not all(torch.equal(x[0], y[0]) for x, y in zip(a, c))
    w1, w2 = epoch(5, 2), epoch(5, 2)
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(w1, w2))
    loader = make_loader(ds, 2, True, 2, seed=0)
    assert loader.persistent_workers and loader.drop_last
    assert loader.pin_memory == torch.cuda.is_available()


def test_load_clip_video_and_frames(tmp_path):
    arr = clip_array(2, 25)
    for path in (write_video(tmp_path / "v.avi", arr, "mpeg4"), write_frames(tmp_path / "f", arr)):
        x = load_clip(path, frames=8, input_size=S, clips=2, crops=3)
        assert x.shape == (6, 8, 3, S, S)
        labels, frames = decoded_ids(x)
        assert (labels == 2).all() and frames[0].tolist() == sampling.test_indices(25, 8)[0].tolist()


def test_decord_and_pyav_agree(tmp_path):
    path = write_video(tmp_path / "v.mp4", clip_array(1, 20), "libx264")
    a = load_clip(path, 8, S, backend="decord")
    b = load_clip(path, 8, S, backend="pyav")
    assert torch.allclose(a, b, atol=0.05)
