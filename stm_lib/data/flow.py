"""Optical flow for the motion stream of the Spatiotemporal ResNet (seed 003).

The seed's recipe (notes/implementation-facts.md): TV-L1 flow between consecutive frames,
clipped to +-20 px and stored as 8-bit images; the motion stream sees L = 10 fields stacked,
u and v interleaved (2L channels). On disk this is the layout of TSN / mmaction / denseflow:
`<flow_root>/<clip id>/flow_x_00001.jpg, flow_y_00001.jpg, ...`, field i = frame i -> i+1
(1-based), so flow folders made by those GPU tools can be used directly.

`stm data flow` extracts them with OpenCV's TV-L1 (CPU, about 1.3 s per 320 px pair: fine for
a proxy or a small dataset; use a GPU tool for Kinetics). A clip's folder is written under a
temporary name and renamed when complete, so an interrupted extraction resumes where it stopped.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image

BOUND = 20.0          # px; the seed clips flow to +-20 before 8-bit quantisation
DONE = ".complete"    # marker written last in a finished clip folder


def tvl1(frames: np.ndarray, max_side: int = 0) -> np.ndarray:
    """uint8 RGB `(T, H, W, 3)` -> float32 TV-L1 flow `(T-1, h, w, 2)` between consecutive frames,
    computed on grey frames scaled so the longer side is at most `max_side` (0: full size)."""
    import cv2

    if len(frames) < 2:
        raise ValueError(f"optical flow needs at least 2 frames, got {len(frames)}")
    h, w = frames.shape[1:3]
    scale = min(1.0, max_side / max(h, w)) if max_side else 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    grey = [cv2.resize(cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY), size,
                       interpolation=cv2.INTER_AREA) for f in frames]
    algo = cv2.optflow.DualTVL1OpticalFlow_create()
    return np.stack([algo.calc(grey[t], grey[t + 1], None) for t in range(len(grey) - 1)])


def encode(flow: np.ndarray, bound: float = BOUND) -> np.ndarray:
    """Flow in px -> uint8: clip to +-bound, map [-bound, bound] linearly onto [0, 255]."""
    return np.round((np.clip(flow, -bound, bound) + bound) * (255.0 / (2 * bound))).astype(np.uint8)


def decode(u8: np.ndarray, bound: float = BOUND) -> np.ndarray:
    """uint8 -> flow in px (the inverse of `encode` up to its 2*bound/255 quantisation step)."""
    return u8.astype(np.float32) * (2 * bound / 255.0) - bound


def field_names(i: int) -> tuple[str, str]:
    """File names of field i (0-based) in the TSN layout (1-based numbering)."""
    return f"flow_x_{i + 1:05d}.jpg", f"flow_y_{i + 1:05d}.jpg"


def is_complete(clip_dir: Path) -> bool:
    """A folder we extracted (marker present) or a foreign one with at least one field."""
    d = Path(clip_dir)
    return (d / DONE).is_file() or (d / field_names(0)[0]).is_file()


def extract_clip(frames: np.ndarray, out_dir, max_side: int = 0, quality: int = 95) -> int:
    """Write the TV-L1 fields of `frames` (T, H, W, 3) into `out_dir` atomically; returns T-1."""
    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        fields = encode(tvl1(frames, max_side))
        for i, f in enumerate(fields):
            for name, c in zip(field_names(i), (0, 1)):
                Image.fromarray(f[..., c]).save(tmp / name, quality=quality)
        (tmp / DONE).write_text(f"{len(fields)} fields, TV-L1, bound {BOUND}\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return len(fields)


def count_fields(clip_dir: Path) -> int:
    d = Path(clip_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"missing optical flow: folder {d} does not exist (run `stm data flow`)")
    n = sum(1 for name in os.listdir(d) if name.startswith("flow_x_"))
    if n == 0:
        raise FileNotFoundError(f"{d}: no flow_x_*.jpg fields")
    return n


def read_stacks(clip_dir, starts, length: int) -> np.ndarray:
    """uint8 `(K, h, w, 2L)`: for every start index, fields start..start+L-1 (clamped to the
    clip's last field), channels u0 v0 u1 v1 ... (the seed's interleaving)."""
    d = Path(clip_dir)
    n = count_fields(d)
    cache: dict[str, np.ndarray] = {}

    def load(name: str) -> np.ndarray:
        if name not in cache:
            try:
                with Image.open(d / name) as im:
                    cache[name] = np.asarray(im.convert("L"))
            except Exception as e:
                raise ValueError(f"{d / name}: cannot read flow field ({type(e).__name__}: {e})") from None
        return cache[name]

    out = []
    for s in np.asarray(starts).reshape(-1).tolist():
        chans = []
        for i in np.clip(np.arange(s, s + length), 0, n - 1).tolist():
            x, y = field_names(i)
            chans += [load(x), load(y)]
        out.append(np.stack(chans, axis=-1))
    return np.stack(out)


def clip_folder(flow_root, clip_id: str) -> Path:
    """`<flow_root>/<clip id>`, refused unless it lies strictly inside flow_root once resolved:
    extraction replaces (rmtree) that folder, so an id like `../../victim` must never reach it."""
    root = Path(flow_root)
    out = root / clip_id
    top = root.resolve()
    if Path(clip_id).is_absolute() or top not in out.resolve().parents:
        raise ValueError(f"clip id {clip_id!r}: its flow folder {out} is not inside --out {root}; refused")
    return out


def extract_dataset(samples, flow_root, read_frames, max_side: int = 0, progress: bool = True, jobs: int = 1) -> dict:
    """Extract every sample's flow into `<flow_root>/<sample.id>`; clips already complete are
    kept. A clip that cannot be read is reported, not fatal. Returns counts and the failures.
    `jobs` clips at a time in threads (OpenCV releases the GIL inside TV-L1, one core each)."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    root = Path(flow_root)
    outs = [clip_folder(root, s.id) for s in samples]  # every id checked before anything is written
    todo = [(s, out) for s, out in zip(samples, outs) if not is_complete(out)]
    failed: list[tuple[str, str]] = []

    def one(item) -> tuple[str, str] | None:
        s, out = item
        try:
            extract_clip(read_frames(s), out, max_side)
        except (OSError, ValueError) as e:
            return s.id, f"{type(e).__name__}: {e}"
        return None

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as ex:
        for bad in tqdm(ex.map(one, todo), total=len(todo), desc="optical flow", unit="clip",
                        disable=not progress, mininterval=1.0):
            if bad:
                failed.append(bad)
    return {"extracted": len(todo) - len(failed), "already_there": len(outs) - len(todo), "failed": failed}


def extract_listed(dataset: str, root, out, splits=("train", "val"), list_file=None, val_list_file=None,
                   limit: int = 0, max_side: int = 0, progress: bool = True, jobs: int = 1) -> dict:
    """`stm data flow`: the flow of every clip in the dataset's annotation lists (each clip once,
    though HMDB-51's folds repeat clips), into `<out>/<clip id>`."""
    from stm_lib.data import decode
    from stm_lib.data.check import annotation_lists
    from stm_lib.data.datasets import read_annotations

    reader, lists = annotation_lists(dataset, val_list_file)
    samples = {}
    for _, split, fold in lists:
        if split in splits:
            _, ss = read_annotations(reader, root, split, fold, list_file, val_list_file)
            for s in ss[:limit] if limit else ss:
                samples.setdefault(s.id, s)
    return extract_dataset(list(samples.values()), out, lambda s: decode.read_clip(s.path, lambda n: np.arange(n))[0],
                           max_side=max_side, progress=progress, jobs=jobs)


def proxy_flow(dataset: str, cfg, progress: bool = False) -> dict:
    """A proxy's flow in `<proxy>/flow` (where the book's runner points `flow_root`), extracted once
    and resumably; returns its cost record `<proxy>/flow/flow.json` (the two-stream model's price,
    reported next to its accuracy)."""
    import cv2

    from stm_lib.data import proxy
    from stm_lib.io import atomic_write_json
    from stm_lib.provenance import hardware, load_average

    root = proxy.ensure_proxy(dataset.split("-", 1)[1], cfg, progress=False)
    out = root / "flow"
    record = out / "flow.json"
    if record.is_file():
        return json.loads(record.read_text())
    side = max(16, cfg.proxy_resolution // 2)   # TV-L1 at half the proxy's side: ~4x cheaper; the loader rescales
    t0, c0 = time.perf_counter(), time.process_time()   # process time: every thread's CPU seconds
    jobs = os.cpu_count() or 1
    res = extract_listed(dataset, root, out, max_side=side, progress=progress, jobs=jobs)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    if res["failed"]:
        vid, why = res["failed"][0]
        raise RuntimeError(f"optical flow failed for {len(res['failed'])} clip(s) of {root}, e.g. {vid}: {why}")
    n = res["extracted"] + res["already_there"]
    cost = {"clips": n, "extracted_now": res["extracted"], "seconds": round(seconds, 1),
            "seconds_per_clip": round(seconds / max(1, res["extracted"]), 4),
            "cpu_seconds_per_clip": round(cpu_seconds / max(1, res["extracted"]), 4),
            "fields_per_clip": cfg.proxy_frames - 1, "resolution": cfg.proxy_resolution, "flow_side": side,
            "method": f"OpenCV {cv2.__version__} DualTVL1, CPU", "cpu": hardware().get("cpu"),
            "cv2_threads": cv2.getNumThreads(), "clips_at_a_time": jobs, "load_average_after": load_average(),
            "cpu_count": os.cpu_count()}
    atomic_write_json(record, cost)
    return cost
