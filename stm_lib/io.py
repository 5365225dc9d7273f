"""The one atomic writer: results, configs, metrics and checkpoints all go through `atomic_write`.

Everything is written to a temporary file in the same folder, flushed, fsync'ed and renamed over
the target (`os.replace` is atomic on POSIX), so a SIGKILL at any moment leaves either the old or
the new file, never half of one.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


_MODE = 0o666 & ~_umask()  # mkstemp creates 0600 files; results should read like any other file


def atomic_write(path: str | Path, write: Callable) -> None:
    """Call `write(binary file)` on a temporary file, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _MODE)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: str | Path, obj: Any, indent: int = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, default=json_default) + "\n")


def atomic_copy(src: str | Path, dst: str | Path) -> None:
    with open(src, "rb") as s:
        atomic_write(dst, lambda f: shutil.copyfileobj(s, f, 1 << 20))


def json_default(o):
    """numpy scalars, tuples, sets and paths in JSON."""
    if hasattr(o, "item") and not isinstance(o, (str, bytes)):
        return o.item()
    if isinstance(o, (tuple, set)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")
