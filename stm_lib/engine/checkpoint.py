"""Checkpoints a killed run can resume from (atomic files: `stm_lib.io`).

A SIGKILL at any moment leaves either the old or the new file, never half of one. Checkpoints hold only tensors and plain Python data (config as a
dict, RNG states as tensors/lists) so that they load with `torch.load(weights_only=True)`.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stm_lib.io import atomic_copy, atomic_write, atomic_write_json, atomic_write_text  # noqa: F401 (re-exported)
from stm_lib.io import json_default as _json_default  # noqa: F401 (evaluate.py)

_atomic = atomic_write   # old name (tests)

LAST = "checkpoint_last.pt"
BEST = "checkpoint_best.pt"


def atomic_save(obj: Any, path: str | Path) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


def load(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint; weights_only=True first (safe), full unpickling only as a fallback for
    files written by other tools."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception:  # noqa: BLE001 - e.g. a foreign checkpoint with pickled objects
        return torch.load(path, map_location=map_location, weights_only=False)


# --- RNG states as plain data -------------------------------------------------------------

def rng_state() -> dict:
    np_state = np.random.get_state()
    st = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": _py_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"].cpu())
    n = st["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    random.setstate(_py_state_from_plain(st["python"]))
    if "cuda" in st and torch.cuda.is_available():
        states = st["cuda"]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in states])


def _py_state_to_plain(s):
    version, internal, gauss = s
    return [version, list(internal), gauss]


def _py_state_from_plain(p):
    version, internal, gauss = p
    return (version, tuple(internal), gauss)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
