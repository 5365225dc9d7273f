"""Stored optical flow, the TSN / mmaction / denseflow layout: `<flow_root>/<clip id>/flow_x_00001.jpg,
flow_y_00001.jpg, ...`, field i = frame i -> i+1 (1-based), each component clipped to +-20 px and
quantised to 8 bits. Reading it is all a dataset needs (`read_stacks`); computing it is
`stm_lib.data.flow`'s (TV-L1), which writes this layout.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

BOUND = 20.0          # px; the seed clips flow to +-20 before 8-bit quantisation
DONE = ".complete"    # marker written last in a finished clip folder


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
