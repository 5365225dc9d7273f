"""`stm data check`: read every annotation of a dataset, open every clip (in parallel) and
report counts per split and class and every missing, corrupt or too-short item by id.

Missing and corrupt clips and broken annotations are hard errors (non-zero exit); clips shorter
than the frames a model samples are only reported (TSN sampling repeats frames for them).
"""
from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from stm_lib.data import decode
from stm_lib.data.datasets import PROXIES, read_annotations


@dataclass
class Problem:
    kind: str      # missing | corrupt | too-short | annotation
    split: str
    id: str
    path: str
    detail: str = ""


@dataclass
class Report:
    dataset: str
    root: str
    splits: dict = field(default_factory=dict)    # split -> {"clips": n, "classes": {name: n}}
    problems: list[Problem] = field(default_factory=list)

    @property
    def hard_errors(self) -> int:
        return sum(p.kind != "too-short" for p in self.problems)

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "root": self.root, "splits": self.splits,
                "problems": [asdict(p) for p in self.problems], "hard_errors": self.hard_errors,
                "ok": self.hard_errors == 0}


def probe(path, min_frames: int = 8, backend: str = "auto", full: bool = False) -> tuple[str, int, str]:
    """Open one clip: `(status, num_frames, detail)`, status ok | missing | corrupt | too-short.

    Decodes through `decode.read_clip`, the loader's own chain (decord, then PyAV when decord
    opens a file but fails to read it), so check and training never disagree about a clip. Reads
    the first, middle and last frame (all frames with `full`); for videos also compares the
    decodable length with what the container header promises, which catches truncated files
    that still open (a cut webm decodes its first frames without complaint)."""
    seen = {}

    def choose(n: int) -> np.ndarray:
        seen["n"] = n
        return np.arange(n) if full else np.unique([0, n // 2, n - 1])

    try:
        decode.read_clip(path, choose, backend)
        n = seen["n"]
        media = decode.resolve(path)
        if not media.is_dir():
            want = decode.expected_frames(media)
            if want > 1.1 * n + 2:
                return "corrupt", n, f"truncated: {n} frames decodable, header promises about {want}"
    except FileNotFoundError as e:
        return "missing", 0, str(e)
    except Exception as e:
        return "corrupt", 0, str(e)
    if n < min_frames:
        return "too-short", n, f"{n} frames < {min_frames} sampled"
    return "ok", n, ""


def annotation_lists(name: str, val_list_file=None) -> tuple[str, list[tuple[str, str, int]]]:
    """The reader of dataset `name` (proxies: ssv1) and (report name, split, fold) for every
    annotation list it has: UCF-101 / HMDB-51 three folds, a `list` dataset's val only if given."""
    reader = "ssv1" if name in PROXIES else name
    if reader in ("ucf101", "hmdb51"):
        return reader, [(f"{s}{k}", s, k) for k in (1, 2, 3) for s in ("train", "val")]
    splits = [("train", "train", 1), ("val", "val", 1)]
    return reader, splits[:1] if reader == "list" and not val_list_file else splits


def check_dataset(name: str, root, workers: int = 4, min_frames: int = 8, list_file=None,
                  val_list_file=None, backend: str = "auto", full: bool = False, progress: bool = True) -> Report:
    reader, lists = annotation_lists(name, val_list_file)
    if reader != "list" and (root is None or not Path(root).expanduser().is_dir()):
        raise FileNotFoundError(f"data root not found: {root}")
    rep = Report(name, str(root))
    todo: dict[str, tuple[str, str]] = {}  # path -> (split, id) of the first list naming it
    for label, split, fold in lists:
        try:
            classes, samples = read_annotations(reader, root, split, fold, list_file, val_list_file)
        except (ValueError, FileNotFoundError) as e:  # bad or missing annotation file: reported
            rep.problems.append(Problem("annotation", label, "-", "", str(e)))
            continue
        counts = Counter(s.label for s in samples)
        rep.splits[label] = {"clips": len(samples), "classes": {c: counts.get(i, 0) for i, c in enumerate(classes)}}
        for s in samples:
            todo.setdefault(str(s.path), (label, s.id))
    paths = list(todo)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = pool.map(lambda p: probe(p, min_frames, backend, full), paths)
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(paths), desc="opening clips", unit="clip", mininterval=1.0)
        for p, (status, n, detail) in zip(paths, results):
            if status != "ok":
                split, vid = todo[p]
                rep.problems.append(Problem(status, split, vid, p, detail))
    return rep


def format_report(rep: Report, max_classes: int = 60) -> str:
    out = [f"dataset {rep.dataset} at {rep.root}"]
    for split, s in rep.splits.items():
        cls = s["classes"]
        out.append(f"split {split}: {s['clips']} clips, {len(cls)} classes")
        items = list(cls.items())
        for name, n in items[:max_classes]:
            out.append(f"  {n:7d}  {name}")
        if len(items) > max_classes:
            out.append(f"  ... {len(items) - max_classes} more classes (--json lists all)")
        empty = [c for c, n in items if n == 0]
        if empty:
            out.append(f"  {len(empty)} class(es) without clips: {', '.join(empty[:10])}{' ...' if len(empty) > 10 else ''}")
    for kind in ("annotation", "missing", "corrupt", "too-short"):
        ps = [p for p in rep.problems if p.kind == kind]
        if ps:
            out.append(f"{kind} ({len(ps)}):")
            out += [f"  [{p.split}] {p.id}: {p.detail or p.path}" for p in ps]
    out.append("OK" if rep.hard_errors == 0 else f"FAILED: {rep.hard_errors} hard error(s)")
    return "\n".join(out)


def report_json(rep: Report) -> str:
    return json.dumps(rep.to_dict(), indent=1)
