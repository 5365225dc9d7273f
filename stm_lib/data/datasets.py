"""Annotation readers for the six datasets in the layouts they ship in, the TSM list format,
and the `VideoDataset` that turns a sample into a clip tensor.

Each reader returns `(classes, samples)` for one split and fails with a message naming the
file (and line) at fault. Layouts: notes/implementation-facts.md, "Dataset layouts".
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stm_lib.data import decode, flow_fields, sampling, transforms

SPLITS = ("train", "val")


@dataclass
class Sample:
    id: str
    path: Path                   # frame folder or video file (may not exist: `stm data check` says so)
    label: int
    num_frames: int | None = None  # known up front only for `list`; filled in once the clip is opened


def _need_file(p: Path, what: str) -> Path:
    if not p.is_file():
        raise FileNotFoundError(f"{what} not found: {p}")
    return p


def _need_dir(p: Path, what: str) -> Path:
    if not p.is_dir():
        raise FileNotFoundError(f"{what} not found: {p}")
    return p


def _text(path: Path) -> str:
    """A text file's content; bytes that are not UTF-8 are named by file and line."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        no = data.count(b"\n", 0, e.start) + 1
        raise ValueError(f"{path}:{no}: not UTF-8 text (byte 0x{data[e.start]:02x}); "
                         "save the file as UTF-8") from None


def _lines(path: Path):
    """(line number, stripped text) of the non-blank lines of a text file."""
    for no, line in enumerate(_text(path).split("\n"), 1):
        line = line.strip()
        if line:
            yield no, line


MAX_CLASSES = 100_000  # a label beyond this is a typo or a corrupt file, not a class index


def confined(rel: str, where: str) -> str:
    """A clip id or relative path read from an annotation file, refused when it could leave the
    dataset folder: an absolute path or a `..` part (`../../victim`). Checked on the text, so a
    dataset whose folders are symlinks to another disk still works. `where`: file:line."""
    t = str(rel).replace("\\", "/")
    if not t.strip() or t.startswith("/") or os.path.isabs(rel) or ".." in t.split("/") or t.strip() == ".":
        raise ValueError(f"{where}: clip id {rel!r} is not a path inside the dataset folder "
                         "(absolute or with '..'); refused")
    return rel


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return split


# --- Something-Something v1 and Jester: frame folders, `id;label text` csv files -------------

def _read_semicolon_csv(root: Path, split: str, frames_dir: str, prefix: str):
    split = {"train": "train", "val": "validation"}[_check_split(split)]
    labels_file = _need_file(root / f"{prefix}-labels.csv", "label file")
    classes = [text for _, text in _lines(labels_file)]
    index = {c: i for i, c in enumerate(classes)}
    if len(index) != len(classes):
        raise ValueError(f"{labels_file}: duplicate class names")
    ann = _need_file(root / f"{prefix}-{split}.csv", "annotation file")
    fdir = _need_dir(root / frames_dir, "frame folder root")
    samples = []
    for no, line in _lines(ann):
        fields = line.split(";")
        if len(fields) != 2:
            raise ValueError(f"{ann}:{no}: expected 2 fields 'id;label', got {len(fields)}: {line!r}")
        vid, text = fields[0].strip(), fields[1].strip()
        if text not in index:
            raise ValueError(f"{ann}:{no}: unknown label {text!r} (not in {labels_file.name})")
        samples.append(Sample(vid, fdir / confined(vid, f"{ann}:{no}"), index[text]))
    return classes, samples


def read_ssv1(root: Path, split: str, **_):
    return _read_semicolon_csv(root, split, "20bn-something-something-v1", "something-something-v1")


def read_jester(root: Path, split: str, **_):
    return _read_semicolon_csv(root, split, "20bn-jester-v1", "jester-v1")


# --- Something-Something v2: webm videos, json annotations ------------------------------------

def _load_json(path: Path):
    try:
        return json.loads(_text(_need_file(path, "annotation file")))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None


def read_ssv2(root: Path, split: str, **_):
    split = {"train": "train", "val": "validation"}[_check_split(split)]
    labels_file = root / "something-something-v2-labels.json"
    labels = _load_json(labels_file)
    if not isinstance(labels, dict):
        raise ValueError(f"{labels_file}: expected a mapping 'template' -> 'index'")
    try:
        by_index = sorted((int(v), k) for k, v in labels.items())
    except (TypeError, ValueError):
        raise ValueError(f"{labels_file}: class indices must be integers") from None
    if [i for i, _ in by_index] != list(range(len(by_index))):
        raise ValueError(f"{labels_file}: class indices must be 0..{len(by_index) - 1}")
    classes = [k for _, k in by_index]
    ann = root / f"something-something-v2-{split}.json"
    entries = _load_json(ann)
    if not isinstance(entries, list):
        raise ValueError(f"{ann}: expected a list of {{'id', 'template', ...}} entries")
    vdir = root / "20bn-something-something-v2"
    vdir = vdir if vdir.is_dir() else root
    samples = []
    for n, e in enumerate(entries):
        if not isinstance(e, dict) or "id" not in e or "template" not in e:
            raise ValueError(f"{ann}: entry {n} lacks 'id' or 'template': {e!r}"[:300])
        text = e["template"].replace("[", "").replace("]", "")
        if text not in labels:
            raise ValueError(f"{ann}: entry {n} (id {e['id']}): unknown label {text!r}")
        vid = confined(str(e["id"]), f"{ann}: entry {n}")
        samples.append(Sample(vid, vdir / f"{vid}.webm", int(labels[text])))
    return classes, samples


# --- Kinetics-400: <split>/<class>/<youtube_id>_<start>_<end>.mp4, csv annotations -------------

_K400_SPLIT_NAMES = {"train": ("train",), "val": ("val", "validate", "validation", "valid")}


def _k400_csv(root: Path, split: str) -> Path:
    for s in _K400_SPLIT_NAMES[split]:
        for name in (f"kinetics-400_{s}.csv", f"kinetics_400_{s}.csv", f"kinetics400_{s}.csv",
                     f"kinetics_{s}.csv", f"{s}.csv", f"annotations/{s}.csv"):
            if (root / name).is_file():
                return root / name
    raise FileNotFoundError(f"Kinetics-400 annotation for split '{split}' not found in {root} "
                            f"(looked for kinetics-400_{split}.csv, annotations/{split}.csv, ...)")


def _k400_rows(path: Path):
    rows = list(csv.reader(io.StringIO(_text(path), newline="")))
    if not rows:
        raise ValueError(f"{path}: empty annotation file")
    header = [h.strip() for h in rows[0]]
    need = ("label", "youtube_id", "time_start", "time_end")
    if any(h not in header for h in need):
        raise ValueError(f"{path}:1: header must contain {','.join(need)}, got {','.join(header)}")
    col = {h: i for i, h in enumerate(header)}
    for no, row in enumerate(rows[1:], 2):
        if not row:
            continue
        if len(row) != len(header):
            raise ValueError(f"{path}:{no}: expected {len(header)} fields, got {len(row)}: {','.join(row)}")
        try:
            yield no, row[col["label"]], row[col["youtube_id"]], int(float(row[col["time_start"]])), int(float(row[col["time_end"]]))
        except ValueError:
            raise ValueError(f"{path}:{no}: time_start/time_end must be numbers: {','.join(row)}") from None


def read_kinetics400(root: Path, split: str, **_):
    _check_split(split)
    train_csv = _k400_csv(root, "train")
    classes = sorted({label for _, label, *_ in _k400_rows(train_csv)})
    index = {c: i for i, c in enumerate(classes)}
    ann = train_csv if split == "train" else _k400_csv(root, split)
    vdir = next((root / s for s in _K400_SPLIT_NAMES[split] if (root / s).is_dir()), root / split)
    found = {}  # one walk of the split folder instead of a stat per clip
    for dirpath, _, files in os.walk(vdir):
        for fn in files:
            found.setdefault(os.path.splitext(fn)[0], Path(dirpath) / fn)
    samples = []
    for no, label, yid, t0, t1 in _k400_rows(ann):
        if label not in index:
            raise ValueError(f"{ann}:{no}: unknown label {label!r} (not a class of {train_csv.name})")
        vid = confined(f"{yid}_{t0:06d}_{t1:06d}", f"{ann}:{no}")
        samples.append(Sample(vid, found.get(vid, vdir / confined(label, f"{ann}:{no}") / f"{vid}.mp4"), index[label]))
    return classes, samples


# --- UCF-101: UCF-101/<Class>/v_<Class>_gXX_cYY.avi, ucfTrainTestlist/ ----------------------

def read_ucf101(root: Path, split: str, fold: int = 1, **_):
    _check_split(split)
    if fold not in (1, 2, 3):
        raise ValueError(f"UCF-101 split must be 1, 2 or 3, got {fold}")
    lists = _need_dir(root / "ucfTrainTestlist", "UCF-101 split folder")
    vdir = root / "UCF-101" if (root / "UCF-101").is_dir() else root
    ind_file = _need_file(lists / "classInd.txt", "class index file")
    classes, by_name = [], {}
    for no, line in _lines(ind_file):
        f = line.split()
        if len(f) != 2 or not f[0].isdigit():
            raise ValueError(f"{ind_file}:{no}: expected 'index ClassName', got {line!r}")
        if int(f[0]) != len(classes) + 1:
            raise ValueError(f"{ind_file}:{no}: class indices must run 1, 2, 3, ...; got {f[0]}")
        by_name[f[1]] = len(classes)
        classes.append(f[1])
    ann = _need_file(lists / f"{'trainlist' if split == 'train' else 'testlist'}0{fold}.txt", "split file")
    samples = []
    for no, line in _lines(ann):
        f = line.split()
        want = 2 if split == "train" else 1
        if len(f) != want:
            raise ValueError(f"{ann}:{no}: expected {want} field(s), got {len(f)}: {line!r}")
        rel = f[0]
        cls = rel.split("/")[0]
        if cls not in by_name:
            raise ValueError(f"{ann}:{no}: unknown label {cls!r} (not in {ind_file.name})")
        label = by_name[cls]
        if split == "train" and int(f[1]) - 1 != label:
            raise ValueError(f"{ann}:{no}: label {f[1]} does not match class folder {cls!r}")
        samples.append(Sample(Path(rel).stem, vdir / confined(rel, f"{ann}:{no}"), label))
    return classes, samples


# --- HMDB-51: <class>/<name>.avi, <class>_test_split{1,2,3}.txt -----------------------------

_HMDB_SPLIT = re.compile(r"^(.+)_test_split([123])\.txt$")


def read_hmdb51(root: Path, split: str, fold: int = 1, **_):
    _check_split(split)
    if fold not in (1, 2, 3):
        raise ValueError(f"HMDB-51 split must be 1, 2 or 3, got {fold}")
    sdir = next((root / d for d in ("testTrainMulti_7030_splits", "splits") if (root / d).is_dir()), root)
    files = {m.group(1): sdir / n for n in os.listdir(sdir)
             if (m := _HMDB_SPLIT.match(n)) and m.group(2) == str(fold)}
    if not files:
        raise FileNotFoundError(f"no HMDB-51 split files '<class>_test_split{fold}.txt' in {sdir}")
    vdir = next((root / d for d in ("hmdb51_org", "videos") if (root / d).is_dir()), root)
    classes = sorted(files)
    want = {"train": "1", "val": "2"}[split]
    samples = []
    for label, cls in enumerate(classes):
        ann = files[cls]
        for no, line in _lines(ann):
            f = line.split()
            if len(f) != 2:
                raise ValueError(f"{ann}:{no}: expected 'name.avi 0|1|2', got {len(f)} fields: {line!r}")
            if f[1] not in ("0", "1", "2"):
                raise ValueError(f"{ann}:{no}: split tag must be 0, 1 or 2, got {f[1]!r}")
            if f[1] == want:
                samples.append(Sample(Path(f[0]).stem, vdir / cls / confined(f[0], f"{ann}:{no}"), label))
    return classes, samples


# --- TSM list files: `<folder or video> <num_frames> <label>` ---------------------------------

def read_list_file(path: Path, root: Path | None = None):
    """TSM list lines `folder num_frames label`; relative paths are taken from `root` (default:
    the list file's folder). Returns samples only; classes come from the largest label."""
    path = _need_file(Path(path), "list file")
    base = Path(root) if root else path.parent
    samples = []
    for no, line in _lines(path):
        f = line.split()
        if len(f) != 3:
            raise ValueError(f"{path}:{no}: expected 3 fields 'folder num_frames label', got {len(f)}: {line!r}")
        try:
            n, label = int(f[1]), int(f[2])
        except ValueError:
            raise ValueError(f"{path}:{no}: num_frames and label must be integers: {line!r}") from None
        if label < 0:
            raise ValueError(f"{path}:{no}: negative label {label}")
        if label >= MAX_CLASSES:
            raise ValueError(f"{path}:{no}: label {label} is not a plausible class index "
                             f"(over {MAX_CLASSES:,} classes)")
        samples.append(Sample(Path(f[0]).name, base / confined(f[0], f"{path}:{no}"), label, n))
    return samples


def read_list(root: Path | None, split: str, list_file: str | None = None, val_list_file: str | None = None, **_):
    _check_split(split)
    if not list_file:
        raise ValueError("dataset 'list' needs data.list_file (TSM lines 'folder num_frames label')")
    files = {"train": list_file, "val": val_list_file}
    if not files[split]:
        raise ValueError("dataset 'list' needs data.val_list_file for the 'val' split")
    per_split = {s: read_list_file(Path(f), root) for s, f in files.items() if f}
    k = 1 + max((s.label for v in per_split.values() for s in v), default=-1)
    return [str(i) for i in range(k)], per_split[split]


READERS = {
    "ssv1": read_ssv1, "ssv2": read_ssv2, "jester": read_jester, "kinetics400": read_kinetics400,
    "ucf101": read_ucf101, "hmdb51": read_hmdb51, "list": read_list,
}
PROXIES = ("proxy-temporal", "proxy-scene")
DATASETS = tuple(READERS) + PROXIES
# Horizontal flip changes the class of "moving something left to right" and of left/right
# gestures, so it is off for these (paper section 4.2; the TSM code does the same).
NO_FLIP = ("ssv1", "ssv2", "jester", "proxy-temporal")


def read_annotations(name: str, root, split: str, fold: int = 1, list_file=None, val_list_file=None):
    """`(classes, samples)` of one split of a dataset in its official layout."""
    if name not in READERS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    if name != "list":
        if root is None:
            raise ValueError(f"dataset {name!r} needs a data root (--data-root)")
        root = _need_dir(Path(root).expanduser(), "data root")
    return READERS[name](Path(root) if root else None, split, fold=fold, list_file=list_file,
                         val_list_file=val_list_file)


class VideoDataset(torch.utils.data.Dataset):
    """Samples -> `(clip, label)`; clip `(T, 3, S, S)` (train) or `(V, T, 3, S, S)` (test, V =
    clips x crops, clip-major). A clip that fails to decode gives `None` and a warning naming it
    (the loader's collate drops and counts it), unless `strict`.

    With `flow_root` (two-stream ST-ResNet) each frame also carries the `flow_stack` optical-flow
    fields that start at it, read from `<flow_root>/<clip id>/` and cropped with the same box:
    `(T, 3 + 2L, S, S)`."""

    def __init__(self, samples: list[Sample], classes: list[str], frames: int, train: bool,
                 input_size: int = 224, scale_size: int = 0, flip: bool = True, test_clips: int = 1,
                 test_crops: int = 1, backend: str = "auto", name: str = "", strict: bool = False,
                 flow_root=None, flow_stack: int = 10):
        if test_crops not in (1, 3):
            raise ValueError(f"test_crops must be 1 or 3, got {test_crops}")
        self.samples, self.classes, self.frames, self.train = samples, list(classes), frames, train
        self.input_size, self.scale_size = input_size, transforms.default_scale_size(input_size, scale_size)
        self.flip, self.test_clips, self.test_crops = flip, test_clips, test_crops
        self.backend, self.name, self.strict = backend, name, strict
        self.flow_root = Path(flow_root).expanduser() if flow_root else None
        if self.flow_root is not None and not self.flow_root.is_dir():
            raise FileNotFoundError(f"optical flow root not found: {self.flow_root} (make it with `stm data flow`)")
        self.flow_stack = flow_stack
        self.rng = np.random.default_rng()  # reseeded per worker by stm_lib.data.loader

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def item_shape(self) -> tuple[int, ...]:
        one = (self.frames, self.channels, self.input_size, self.input_size)
        return one if self.train else (self.test_clips * self.test_crops, *one)

    @property
    def channels(self) -> int:
        return 3 + (2 * self.flow_stack if self.flow_root is not None else 0)

    def reseed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        s = self.samples[i]
        try:
            return self.load(s), s.label
        except Exception as e:  # one bad file must never end an epoch
            if self.strict:
                raise
            warnings.warn(f"skipping clip {s.id} ({s.path}): {e}", RuntimeWarning, stacklevel=2)
            return None

    def indices(self, n: int) -> np.ndarray:
        """Frame indices for a clip of n frames: `(T,)` train, `(clips, T)` test."""
        if self.train:
            return sampling.train_indices(n, self.frames, self.rng)
        return sampling.test_indices(n, self.frames, self.test_clips)

    def read(self, s: Sample, choose):
        """`(frames, indices)`: the frames `choose(num_frames)` picks, decoded (proxies override
        this with their decoded-once array: stm_lib.data.proxy.DecodedProxy)."""
        return decode.read_clip(s.path, choose, self.backend, min_side=self.scale_size)

    def load(self, s: Sample) -> torch.Tensor:
        picked = {}

        def choose(n):
            s.num_frames = n
            picked["idx"] = self.indices(n)
            return np.unique(picked["idx"])

        frames, uniq = self.read(s, choose)
        pos = np.searchsorted(uniq, picked["idx"])  # map wanted indices to decoded rows
        h, w = frames.shape[1:3]
        fl = None
        if self.flow_root is not None:  # the L fields starting at every decoded frame
            fl = flow_fields.read_stacks(self.flow_root / s.id, uniq, self.flow_stack)

        def view(rows, box, flip=False):
            x = transforms.crop_resize(frames[rows], box, self.input_size, flip)
            if fl is None:
                return x
            fbox = transforms.scale_box(box, (h, w), fl.shape[1:3])
            return torch.cat([x, transforms.flow_crop_resize(fl[rows], fbox, self.input_size, flip)], dim=1)

        if self.train:
            box = transforms.train_box(h, w, self.input_size, self.scale_size, self.rng)
            return view(pos, box, bool(self.flip and self.rng.random() < 0.5))
        boxes = transforms.test_boxes(h, w, self.input_size, self.scale_size, self.test_crops)
        return torch.stack([view(p, b) for p in pos for b in boxes])


def load_clip(path, frames: int, input_size: int, scale_size: int = 0, clips: int = 1, crops: int = 1,
              backend: str = "auto") -> torch.Tensor:
    """One video file or frame folder -> test-mode tensor `(V, T, 3, S, S)` (for `stm predict`).
    Raises FileNotFoundError / DecodeError naming the file."""
    ds = VideoDataset([Sample(Path(path).stem, Path(path), -1)], [], frames, train=False,
                      input_size=input_size, scale_size=scale_size, flip=False, test_clips=clips,
                      test_crops=crops, backend=backend, strict=True)
    return ds.load(ds.samples[0])
