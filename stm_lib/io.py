"""The one atomic writer: results, configs, metrics and checkpoints all go through `atomic_write`.

Everything is written to a temporary file in the same folder, flushed, fsync'ed and renamed over
the target (`os.replace` is atomic on POSIX), so a SIGKILL at any moment leaves either the old or
the new file, never half of one.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


_MODE = 0o666 & ~_umask()  # mkstemp creates 0600 files; results should read like any other file


# A full disk, a quota, a read-only or foreign folder: the machine's state, not a bug. The CLI
# reports these in one line naming the file (stm_lib.cli).
RESOURCE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def atomic_write(path: str | Path, write: Callable) -> None:
    """Call `write(binary file)` on a temporary file, then rename it over `path`. An OSError
    names `path` (a full disk raises ENOSPC with no file name, a read-only folder names the
    temporary file), so the user learns which file could not be written."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, _MODE)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
        # torch.save turns a failed write into a RuntimeError raised while handling the OSError
        os_err = e if isinstance(e, OSError) else e.__context__ if isinstance(e.__context__, OSError) else None
        if os_err is not None and (os_err.filename is None or Path(os_err.filename).name.startswith(f".{path.name}.")):
            raise OSError(os_err.errno, os_err.strerror, str(path)) from e
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: str | Path, obj: Any, indent: int = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, default=json_default) + "\n")


def atomic_copy(src: str | Path, dst: str | Path) -> None:
    with open(src, "rb") as s:
        atomic_write(dst, lambda f: shutil.copyfileobj(s, f, 1 << 20))


@contextlib.contextmanager
def locked(path: str | Path, on_wait: Callable | None = None, remove: bool = False) -> Iterator[None]:
    """Hold an exclusive `flock` on `path` (created if missing) for the block, calling `on_wait()`
    first when another process holds it. The kernel drops the lock when its process dies, SIGKILL
    included, so a free lock means no live owner (`is_locked`). `remove`: delete the file before
    releasing it, only for a uniquely named lock nobody waits on (a shared one must stay: a waiter
    would hold a lock on a deleted file while a newcomer locks a new one of the same name)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, _MODE)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if remove:
            Path(path).unlink(missing_ok=True)
        os.close(fd)


def is_locked(path: str | Path) -> bool:
    """Whether a live process holds `path`'s `locked` lock (no such file: no)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def json_default(o):
    """numpy scalars, tuples, sets and paths in JSON."""
    if hasattr(o, "item") and not isinstance(o, (str, bytes)):
        return o.item()
    if isinstance(o, (tuple, set)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")
