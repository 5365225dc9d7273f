"""TSN segment sampling (Wang et al. 2016), as the TSM code base that STM builds on uses it
(paper section 4.2; formulas in notes/implementation-facts.md).

A clip of `n` frames is cut into `T` equal segments and one frame is taken from each, so a
clip of 8 frames always spans the whole video whatever its length.
"""
from __future__ import annotations

import numpy as np


def train_indices(n: int, frames: int, rng: np.random.Generator) -> np.ndarray:
    """Training: a random frame inside each segment: `arange(T) * (n // T) + randint(n // T)`.

    Videos shorter than T frames repeat frames evenly (`arange(T) * n // T`); TSM returns all
    zeros there, which would show the network one frame T times.
    """
    if n <= 0:
        raise ValueError(f"cannot sample from a clip with {n} frames")
    avg = n // frames
    if avg == 0:
        return (np.arange(frames) * n) // frames
    return np.arange(frames) * avg + rng.integers(avg, size=frames)


def test_indices(n: int, frames: int, clips: int = 1) -> np.ndarray:
    """Testing: the centre of each segment, `int(tick / 2 + tick * i)` with `tick = n / T`.

    For `clips > 1` (multi-clip testing, paper: 10 clips) clip k is shifted inside every segment
    by `k / clips` of a segment, wrapping round, so clip 0 is exactly the single-clip offsets and
    clips=2 gives TSM's `twice_sample` (centres, then segment starts). Returns `(clips, T)`.
    """
    if n <= 0:
        raise ValueError(f"cannot sample from a clip with {n} frames")
    tick = n / frames
    out = np.empty((clips, frames), dtype=np.int64)
    seg = np.arange(frames)
    for k in range(clips):
        shift = ((0.5 + k / clips) % 1.0) * tick
        out[k] = np.floor(shift + tick * seg)  # k=0: int(tick / 2 + tick * i), as TSM
    return np.minimum(out, n - 1)
