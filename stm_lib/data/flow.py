"""Optical flow for the motion stream of the Spatiotemporal ResNet (seed 003).

The seed's recipe (notes/implementation-facts.md): TV-L1 flow between consecutive frames,
clipped to +-20 px and stored as 8-bit images; the motion stream sees L = 10 fields stacked,
u and v interleaved (2L channels). On disk this is the layout of TSN / mmaction / denseflow:
`<flow_root>/<clip id>/flow_x_00001.jpg, flow_y_00001.jpg, ...`, field i = frame i -> i+1
(1-based), so flow folders made by those GPU tools can be used directly (`flow_fields`: the
layout and its reader, which the datasets use).

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

from stm_lib.data.flow_fields import BOUND, DONE, encode, field_names, is_complete


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
