"""Checkpoints a killed run can resume from (atomic files: `stm_lib.io`).

A SIGKILL at any moment leaves either the old or the new file, never half of one. Checkpoints hold only tensors and plain Python data (config as a
dict, RNG states as tensors/lists) so that they load with `torch.load(weights_only=True)`.
"""
from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stm_lib.io import atomic_write


LAST = "checkpoint_last.pt"
BEST = "checkpoint_best.pt"


def atomic_save(obj: Any, path: str | Path) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one line naming the file. A ValueError,
    so `stm` prints it as `stm <cmd>: error: ...` instead of a traceback."""


def load(path: str | Path, map_location="cpu", need: tuple[str, ...] = ()) -> dict:
    """Load a checkpoint with `torch.load(weights_only=True)` and nothing else.

    Why never `weights_only=False`: checkpoints travel between people and clusters, and full
    unpickling runs whatever code the file names (a `__reduce__` calling `os.system`). Our own
    checkpoints hold only tensors and plain data, so the safe loader reads them all; anything it
    refuses is refused here with one line. `need`: top-level keys the caller uses.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        why = next((ln.strip() for ln in str(e).splitlines() if "GLOBAL" in ln or "Unsupported" in ln), "")
        raise CheckpointError(f"{path}: refused: it holds more than tensors and plain data and would run code "
                              f"to load ({why or _short(e)}); only weights_only=True checkpoints are loaded") from None
    except Exception as e:  # noqa: BLE001 - truncated zip, not a torch file, ...
        raise CheckpointError(f"{path}: not a readable checkpoint, truncated or not written by torch.save "
                              f"({type(e).__name__}: {_short(e)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a stm checkpoint (a {type(state).__name__}, expected a dict)")
    missing = [k for k in need if k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a stm training checkpoint (no {', '.join(repr(k) for k in missing)}; "
                              f"keys: {', '.join(map(str, list(state)[:8]))})")
    return state


def restore(module, state_dict, path: str | Path, what: str = "model weights") -> None:
    """`module.load_state_dict(state_dict)`, refusing a checkpoint of another shape in one line."""
    try:
        module.load_state_dict(state_dict)
    except Exception as e:  # noqa: BLE001 - RuntimeError (shapes/keys), TypeError, KeyError, ...
        detail = " ".join(ln.strip() for ln in str(e).splitlines() if ln.strip())
        raise CheckpointError(f"{path}: its {what} do not fit this model/run ({detail[:300]})") from None


def config_of(state: dict, path: str | Path):
    """The run's `Config` stored in a checkpoint (as a plain dict)."""
    from stm_lib.config import Config

    try:
        return Config.from_dict(state["config"])
    except (ValueError, TypeError, AttributeError, KeyError) as e:
        raise CheckpointError(f"{path}: its stored config is not a stm config ({_short(e)})") from None


def _short(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    first = lines[0] if lines else type(e).__name__
    return first.split(". ")[0][:200]  # torch's messages go on for sentences


def clean_stale_tmp(folder: str | Path) -> list[Path]:
    """Delete `.<name>.*.tmp` files that an `atomic_write` killed mid-way left behind (a
    SIGKILL skips its cleanup). Call only while this process owns the folder."""
    gone = []
    for p in Path(folder).glob(".*.tmp"):
        if p.is_file() and "." in p.name[1:-4]:
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone


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
