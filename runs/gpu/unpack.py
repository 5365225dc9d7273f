"""The CPU side of a GPU call (issue 10 item 8): put the runs `device_job.py` packed into this
machine's run cache, so that `stm reproduce --table T --seeds 5` renders the page from them.

    python3 runs/gpu/unpack.py PACK [--cache runs/_cache]

PACK is the folder the device call wrote (`summary.json`, `cache.tar.gz`). Before anything is
written: each proxy the runs read is generated here (or found) and its digest must equal the
GPU machine's (the same data byte for byte), and each run's folder name must be the cache key of
the config in its `done.json` (a run cannot stand in for another). A run already in the cache is
kept, not replaced. Exit 2 with one line when the pack does not qualify.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


# A pack is data from another machine: bounded before anything is extracted (declared sizes)
MAX_MEMBERS = 20_000
MAX_MEMBER_BYTES = 512 << 20     # a full-width ResNet-50 backbone is ~95 MB
MAX_TOTAL_BYTES = 2 << 30
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def _checked_members(tar: tarfile.TarFile, where: Path) -> list[tarfile.TarInfo]:
    """The pack's members, each `<key>/` , `<key>/<file>` or `<key>.log`, a plain file or folder
    (no link, device or sparse file), within the member-count, per-member and total size caps,
    checked on the declared sizes as the headers are read (nothing is extracted yet)."""
    out, total = [], 0
    for m in tar:
        parts = m.name.rstrip("/").split("/")
        if len(out) >= MAX_MEMBERS:
            raise ValueError(f"{where}: more than {MAX_MEMBERS} members: refused before unpacking")
        if m.name.startswith("/") or len(parts) > 2 or not all(_NAME.fullmatch(p) for p in parts) \
                or ".." in parts:
            raise ValueError(f"{where}: member {m.name[:120]!r} is not <run>/<file>: refused before unpacking")
        if m.issym() or m.islnk():
            raise ValueError(f"{where}: member {m.name!r} is a link: refused before unpacking")
        if not (m.isdir() and len(parts) == 1) and not (m.isfile() and not m.issparse()):
            raise ValueError(f"{where}: member {m.name!r} is not a plain file: refused before unpacking")
        if m.size > MAX_MEMBER_BYTES:
            raise ValueError(f"{where}: member {m.name!r} declares {m.size} bytes, over the {MAX_MEMBER_BYTES} "
                             "a member may hold: refused before unpacking")
        total += m.size
        if total > MAX_TOTAL_BYTES:
            raise ValueError(f"{where}: its members declare over {MAX_TOTAL_BYTES} bytes in all: refused before "
                             "unpacking")
        out.append(m)
    return out


def unpack(pack: Path, cache: Path, log=print) -> list[str]:
    """The keys added to `cache` (ValueError naming the problem when the pack does not qualify)."""
    from stm_lib.book.runner import cache_key, check_done
    from stm_lib.config import Config
    from stm_lib.data.proxy import digest, ensure_proxy

    try:
        summary = json.loads((pack / "summary.json").read_text())
        theirs, their_cache = summary["proxy_digests"], summary["cache"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{pack / 'summary.json'}: not a device_job.py summary ({e})") from None
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache.parent, prefix=".unpack-") as tmp:
        tmp = Path(tmp)
        try:
            with tarfile.open(pack / "cache.tar.gz") as tar:
                members = _checked_members(tar, pack / "cache.tar.gz")   # before one byte is written
                tar.extractall(tmp, members=members, filter="data")   # no links out, no absolute paths, no devices
        except (OSError, tarfile.TarError, EOFError, zlib.error) as e:
            raise ValueError(f"{pack / 'cache.tar.gz'}: cannot be unpacked ({e})") from None
        runs = sorted(p for p in tmp.iterdir() if p.is_dir())
        mine = {}
        for run in runs:
            if not (run / "done.json").is_file():
                raise ValueError(f"{pack / 'cache.tar.gz'}: {run.name} has no done.json (an unfinished run)")
            if any(p.is_symlink() or not p.is_file() for p in run.iterdir()):
                raise ValueError(f"{pack / 'cache.tar.gz'}: {run.name} holds something that is not a plain file")
            try:   # every path the record names stays in its folder; its numbers are its own files'
                check_done(run)
            except ValueError as e:
                raise ValueError(f"{pack / 'cache.tar.gz'}: {str(e).replace(str(tmp) + '/', '')}") from None
            try:   # the config the key was made from (config.yaml is the engine's resolved copy)
                cfg = Config.from_dict(json.loads((run / "done.json").read_text())["config"])
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{pack / 'cache.tar.gz'}: {run.name}/done.json has no usable config ({e})") from None
            key = cache_key(cfg, their_cache)
            if key != run.name:
                raise ValueError(f"{pack / 'cache.tar.gz'}: {run.name}/done.json's config has cache key {key}, "
                                 "not its folder's name")
            if cfg.data.dataset.startswith("proxy-"):
                local = cfg.update("data", proxy_cache=None).data   # this machine's proxy cache
                root = ensure_proxy(cfg.data.dataset.split("-", 1)[1], local, progress=False)
                if root.name not in mine:
                    mine[root.name] = digest(root)
                    if theirs.get(root.name) != mine[root.name]:
                        raise ValueError(f"proxy {root.name}: digest here {mine[root.name]}, on the device "
                                         f"{theirs.get(root.name)}: not the same data, the runs do not stand for "
                                         "this machine's")
        added = []
        for run in runs:
            if (cache / run.name / "done.json").is_file():
                log(f"{run.name}: already in {cache}, kept")
                continue
            shutil.rmtree(cache / run.name, ignore_errors=True)   # an interrupted run of the same config
            run.rename(cache / run.name)
            if (tmp / f"{run.name}.log").is_file():
                (tmp / f"{run.name}.log").replace(cache / f"{run.name}.log")
            added.append(run.name)
    log(f"added {len(added)} of {len(runs)} packed runs to {cache} (proxies checked: {mine})")
    return added


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pack")
    ap.add_argument("--cache", default=str(ROOT / "runs" / "_cache"))
    a = ap.parse_args()
    try:
        unpack(Path(a.pack), Path(a.cache))
    except ValueError as e:
        print(f"unpack: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
