"""`stm data bench`: decoded clips per second, through the same dataset and loader that
training uses (decode T sampled frames, multi-scale crop, resize, normalise, collate).

Without a data root it measures fixtures it writes itself: the same synthetic clips stored as
JPEG frame folders, H.264 mp4 and VP9 webm, so the formats are compared on identical content.
"""
from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from stm_lib.data import decode
from stm_lib.data.datasets import Sample, VideoDataset
from stm_lib.data.loader import make_loader


def synthetic_clip(rng: np.random.Generator, frames: int, height: int, width: int) -> np.ndarray:
    """A smooth random texture panning across the frame plus noise: compresses like real
    footage (neither trivially nor incompressibly)."""
    small = rng.uniform(0, 255, (height // 8 + 2, width // 8 + frames + 2, 3)).astype(np.uint8)
    tex = np.asarray(Image.fromarray(small).resize((small.shape[1] * 8, small.shape[0] * 8), Image.BICUBIC))
    out = np.stack([tex[:height, 8 * 0 + t * 4: t * 4 + width] for t in range(frames)]).astype(np.int16)
    out += rng.integers(-6, 7, out.shape, dtype=np.int16)
    return np.clip(out, 0, 255).astype(np.uint8)


def write_video(path: Path, clip: np.ndarray, codec: str, fps: int = 25) -> None:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.height, s.width = clip.shape[1:3]
        s.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        for fr in clip:
            for pkt in s.encode(av.VideoFrame.from_ndarray(fr, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


def write_frames(folder: Path, clip: np.ndarray, quality: int = 90) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, fr in enumerate(clip):
        Image.fromarray(fr).save(folder / f"{i + 1:05d}.jpg", quality=quality)


def make_fixtures(root: Path, clips: int = 8, frames: int = 48, height: int = 240, width: int = 320,
                  seed: int = 0) -> dict[str, list[Path]]:
    """The same clips as JPEG folders, mp4 (H.264) and webm (VP9)."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[Path]] = {"jpeg": [], "mp4": [], "webm": []}
    for i in range(clips):
        clip = synthetic_clip(rng, frames, height, width)
        write_frames(root / "frames" / f"{i:04d}", clip)
        out["jpeg"].append(root / "frames" / f"{i:04d}")
        for ext, codec in (("mp4", "libx264"), ("webm", "libvpx-vp9")):
            p = root / ext / f"{i:04d}.{ext}"
            p.parent.mkdir(exist_ok=True)
            write_video(p, clip, codec)
            out[ext].append(p)
    return out


def clips_per_second(paths: list[Path], frames: int, input_size: int, workers: int, backend: str,
                     repeats: int, batch_size: int = 4) -> float:
    samples = [Sample(p.name, p, 0) for p in paths] * repeats
    ds = VideoDataset(samples, ["x"], frames, train=True, input_size=input_size, backend=backend, strict=True)
    loader = make_loader(ds, batch_size, train=False, num_workers=workers)
    it = iter(loader)
    if len(loader) > 1:
        next(it)  # start-up (worker spawn, first batch) is not throughput
    t, n = time.perf_counter(), 0
    for clips, _, _ in it:
        n += clips.shape[0]
    return n / (time.perf_counter() - t)


def provenance(argv: list[str], wall_s: float) -> dict:
    from stm_lib.provenance import record

    return record(" ".join(["stm", *argv]) if argv else "stm data bench", seconds=wall_s)


def workers_needed(train_clips_per_s: float, clips_per_s_per_worker: float, headroom: float = 1.25) -> int:
    """DataLoader workers that keep a trainer consuming `train_clips_per_s` fed, if each worker
    (one process, one core) decodes `clips_per_s_per_worker`; `headroom` covers slow clips and
    the collate/transfer the per-worker rate does not see. Assumes a core per worker."""
    if train_clips_per_s <= 0 or clips_per_s_per_worker <= 0:
        raise ValueError(f"rates must be > 0, got train {train_clips_per_s} and per worker {clips_per_s_per_worker}")
    return math.ceil(train_clips_per_s * headroom / clips_per_s_per_worker)


def per_worker_rate(rows: list[dict]) -> dict[tuple[str, str], float]:
    """Clips/s one worker decodes, per (format, reader): the single-process rate (workers=0:
    decoding in the main process, one core), which does not depend on how many cores this
    machine has free; with only worker runs, the best rate / workers."""
    single = {(r["format"], r["reader"]): r["clips_per_s"] for r in rows if r["workers"] == 0}
    multi: dict[tuple[str, str], float] = {}
    for r in rows:
        if r["workers"]:
            key = (r["format"], r["reader"])
            multi[key] = max(multi.get(key, 0.0), r["clips_per_s"] / r["workers"])
    return {**multi, **single}


def run_bench(frames: int = 8, input_size: int = 224, workers=(0, 2), clips: int = 8, clip_frames: int = 48,
              repeats: int = 3, paths: dict[str, list[Path]] | None = None, train_rate: float | None = None,
              log=print) -> dict:
    """Clips/s for each stored format and decoder, for each worker count; with `train_rate`
    (clips/s a trainer consumes, e.g. `stm bench`'s training videos/s on a GPU), the workers each
    format needs to keep up (`workers_needed`)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="stm-bench-") as tmp:
        if paths is None:
            log(f"writing fixtures: {clips} clips x {clip_frames} frames, 320x240, as JPEG / mp4 / webm ...")
            paths = make_fixtures(Path(tmp), clips, clip_frames)
        rows = []
        cases = [("jpeg", "frames (PIL)", "auto"), ("mp4", "decord", "decord"), ("mp4", "pyav", "pyav"),
                 ("webm", "decord", "decord"), ("webm", "pyav", "pyav")]
        for fmt, reader, backend in cases:
            if not paths.get(fmt) or (backend == "decord" and decode._decord is None):
                continue
            for w in workers:
                cps = clips_per_second(paths[fmt], frames, input_size, w, backend, repeats)
                rows.append({"format": fmt, "reader": reader, "workers": w, "clips_per_s": round(cps, 1)})
                log(f"  {fmt:5s} {reader:13s} workers={w}: {cps:7.1f} clips/s")
    needs = []
    for (fmt, reader), rate in per_worker_rate(rows).items():
        need = {"format": fmt, "reader": reader, "clips_per_s_per_worker": round(rate, 1)}
        if train_rate:
            need |= {"train_clips_per_s": train_rate, "workers_needed": workers_needed(train_rate, rate)}
            log(f"  {fmt:5s} {reader:13s} {rate:6.1f} clips/s per worker -> {need['workers_needed']} workers "
                f"for {train_rate:g} clips/s")
        needs.append(need)
    return {"frames": frames, "input_size": input_size, "fixture": {"clips": clips, "frames": clip_frames,
            "size": "320x240", "jpeg_quality": 90, "mp4": "H.264", "webm": "VP9"},
            "results": rows, "per_worker": needs, "elapsed_s": round(time.perf_counter() - t0, 1)}
