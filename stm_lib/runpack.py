"""Runs as portable units: the finished runs of one machine's run cache (a GPU machine, a cluster
node, a colleague's checkout) packed into one file, and unpacked into another checkout's cache, so
that `stm reproduce` there renders the tables' pages from them without training anything.

    stm runs pack --out runs.tar.gz [--cache runs/_cache] [--table 4 5 [--profile proxy --seeds 10]]
    stm runs unpack runs.tar.gz [--cache runs/_cache]

A pack is a gzipped tar: `pack.json` (the manifest: the runs, the SHA-256 digest of every proxy
they read, the shared start they fine-tuned from, and the cache they were trained in, which the
cache keys of fine-tunes name), then for each run `<key>/` with its small files (`done.json`,
`run.json` with the hardware, `config.yaml`, `command.txt`, metrics, evaluation and confusion
files) and its log `<key>.log`. Checkpoints stay behind: a page needs a run's metrics, evaluation
and provenance, not its weights. The one exception is a pre-training run's `backbone.pth` (Table
4): its fine-tunes' cache keys name it, and without it the pre-training would be trained again.

A pack is data from another machine. `unpack` writes nothing into the cache until every check
has passed, and refuses a pack that fails one with one line:
- member names, types and declared sizes, before one byte is extracted (no link, device or path
  out of the pack; at most MAX_MEMBERS members, MAX_MEMBER_BYTES each, MAX_TOTAL_BYTES in all),
  then extraction with tarfile's `data` filter into a temporary folder beside the cache;
- each run's record (`runner.check_done`: finite percentages equal to its evaluation file's, no
  path out of its folder) and its folder name being the cache key of the config in its
  `done.json` (a run cannot stand in for another);
- the shared start a run fine-tuned from having this checkout's SHA-256, and each proxy it read,
  generated here from the same code, having the packing machine's digest (the same data byte for
  byte; a run's identity is its resolved config, and the device is not part of it).
The checked runs are then renamed into the cache one by one, each under its cache lock; a run
the cache already has is kept.
"""
from __future__ import annotations

import dataclasses
import errno
import io
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
import zlib
from pathlib import Path

from stm_lib.book import runner
from stm_lib.config import Config
from stm_lib.io import atomic_write_json, locked

FORMAT, VERSION = "stm-runs", 1
MANIFEST = "pack.json"
# a run's files that travel (the page reads these); eval_* and confusion_* files too
KEEP = ("done.json", "run.json", "config.yaml", "command.txt", "metrics.csv", "metrics.jsonl", runner.BACKBONE)
# A pack is data from another machine: bounded before anything is extracted (declared sizes)
MAX_MEMBERS = 20_000
MAX_MEMBER_BYTES = 512 << 20     # a full-width ResNet-50 backbone is ~95 MB
MAX_TOTAL_BYTES = 2 << 30
MAX_MANIFEST_BYTES = 4 << 20
# clips x frames x side^2 of a proxy generated to check a pack (the CLI's default proxy: 1.3e8)
MAX_PROXY_PIXELS = 2_000_000_000
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


# ---- pack ------------------------------------------------------------------------------------------

def finished_runs(cache: str | Path) -> list[str]:
    """The keys of the runs in `cache` that finished (their `done.json` is written last)."""
    cache = Path(cache)
    return sorted(p.parent.name for p in cache.glob("*/done.json") if _NAME.fullmatch(p.parent.name))


def planned_runs(tables: list[str], profile: str, cache: str | Path, seeds: int | None = None, *,
                 models: list[str] | None = None, data_root: str | None = None) -> list[str]:
    """The cache keys of every run `stm reproduce --table T ...` would use for `tables` (each once),
    fine-tunes included once their pre-training run's backbone is in `cache`."""
    from stm_lib.book.pool import plan_runs, pretrain_of
    from stm_lib.reproduce import table_ids

    cache = Path(cache).resolve()
    first, fine, pretrain_key = plan_runs([x for name in tables for x in table_ids(str(name))], profile, seeds,
                                          cache, data_root=data_root, params={"models": models})
    keys = dict.fromkeys(first)
    for cfg in fine.values():   # "<pretrain:MODEL:sSEED>": the backbone of that pre-training run
        model, seed = pretrain_of(cfg)
        key = pretrain_key.get((model, seed))
        if key and (cache / key / runner.BACKBONE).is_file():
            keys.setdefault(runner.cache_key(cfg.update("model", pretrained=str(cache / key / runner.BACKBONE)),
                                             cache), None)
        else:
            keys.setdefault(f"<fine-tune of {model} seed {seed}: its pre-training run is not finished>", None)
    return list(keys)


def pack(cache: str | Path, out: str | Path, keys: list[str] | None = None, log=print) -> dict:
    """Write the runs `keys` of `cache` (default: every finished run) into the pack `out`, written
    atomically; returns its manifest. A key without a finished run is left out and counted in
    `missing`; a finished run whose record does not check (`runner.check_done`) is refused."""
    from stm_lib.data.proxy import digest

    cache, out = Path(cache).resolve(), Path(out)
    if not cache.is_dir():
        raise ValueError(f"{cache}: no run cache there (stm reproduce trains into <out-root>/_cache)")
    wanted = finished_runs(cache) if keys is None else list(dict.fromkeys(keys))
    runs = [k for k in wanted if _NAME.fullmatch(k) and (cache / k / "done.json").is_file()]
    missing = [k for k in wanted if k not in runs]
    digests, starts, flows = {}, {}, {}
    for key in runs:
        cfg = _config(runner.check_done(cache / key), where=cache / key / "done.json")
        pre = cfg.model.pretrained
        if pre and not _inside(pre, cache) and _start_sha(pre):
            starts[pre] = _start_sha(pre)
        root = _local_proxy(cfg, log)
        if root is not None and root.name not in digests:
            digests[root.name] = digest(root)
        if root is not None and cfg.data.flow_root and (root / "flow" / "flow.json").is_file():
            flows[root.name] = json.loads((root / "flow" / "flow.json").read_text())   # what the flow cost there
    manifest = {"format": FORMAT, "version": VERSION, "cache": str(cache), "runs": runs,
                "proxy_digests": digests, "starts": starts, "flow": flows, "missing": missing}
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            blob = json.dumps(manifest, indent=1).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mode, info.mtime = len(blob), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(blob))
            for key in runs:
                for f in sorted((cache / key).iterdir()):
                    if (f.name in KEEP or f.name.startswith(("eval_", "confusion_"))) and f.is_file() \
                            and not f.is_symlink():
                        tar.add(f, arcname=f"{key}/{f.name}", recursive=False)
                if (cache / f"{key}.log").is_file():
                    tar.add(cache / f"{key}.log", arcname=f"{key}.log", recursive=False)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log(f"packed {len(runs)} run(s) of {cache} into {out} ({out.stat().st_size / 1e6:.1f} MB"
        + (f"; {len(missing)} not finished, left out" if missing else "") + ")")
    return manifest


# ---- unpack ----------------------------------------------------------------------------------------

def unpack(pack: str | Path, cache: str | Path, log=print) -> list[str]:
    """Put the runs of the pack file `pack` into `cache`; the keys added (a run the cache already
    has is kept). ValueError in one line naming the problem when the pack does not qualify, and
    then nothing is written into the cache."""
    pack, cache = Path(pack), Path(cache)
    if not pack.is_file():
        raise ValueError(f"{pack}: no such pack file (stm runs pack --out FILE writes one)")
    anchor = next(p for p in [cache.parent, *cache.parent.parents] if p.is_dir())   # beside the cache
    with tempfile.TemporaryDirectory(dir=anchor, prefix=".unpack-") as tmp:
        tmp = Path(tmp)
        try:
            with tarfile.open(pack, "r:*") as tar:
                members = _checked_members(tar, pack)   # before one byte is written
                tar.extractall(tmp, members=members, filter="data")   # no links out, no absolute paths, no devices
        except (OSError, tarfile.TarError, EOFError, zlib.error) as e:
            raise ValueError(f"{pack}: cannot be unpacked ({e})") from None
        m = _manifest(tmp / MANIFEST, pack)
        runs = sorted(p for p in tmp.iterdir() if p.is_dir())
        if sorted(r.name for r in runs) != sorted(m["runs"]):
            raise ValueError(f"{pack}: its runs ({len(runs)}) are not the ones {MANIFEST} lists ({len(m['runs'])})")
        cfgs = {run.name: _checked_run(run, tmp, pack, m) for run in runs}
        for name, cfg in cfgs.items():
            _check_proxy_wanted(cfg, m, f"{pack}: {name}")
        mine = {}
        for name, cfg in cfgs.items():   # last: generating a proxy here can take minutes
            root = _local_proxy(cfg, log)
            if root is not None and root.name not in mine:
                mine[root.name] = _digest(root)
                if m["proxy_digests"].get(root.name) != mine[root.name]:
                    raise ValueError(f"{pack}: proxy {root.name}: digest here {mine[root.name]}, where the runs were "
                                     f"trained {m['proxy_digests'].get(root.name)}: not the same data, the runs do "
                                     "not stand for this machine's")
        cache.mkdir(parents=True, exist_ok=True)
        added = []
        for run in runs:
            if _install(run, cache, tmp / f"{run.name}.log"):
                added.append(run.name)
            else:
                log(f"{run.name}: already in {cache}, kept")
    log(f"added {len(added)} of {len(runs)} packed runs to {cache}"
        + (f" (proxies checked: {', '.join(mine)})" if mine else ""))
    return added


# ---- adopt: a committed page's runs ----------------------------------------------------------------

def adopt(page: str | Path, cache: str | Path, log=print) -> list[str]:
    """Put the runs a committed page records (`<page>/results.json` and its `train/<label>/`
    folders) into `cache`, so that another table sharing those runs (Tables 1, 8 and 9 share Table
    5's) is rendered without training them again; the keys added (a run the cache has is kept).

    A run is adopted only when its cache key, recomputed here from the config the page records
    (the shared start as this checkout's), is the key the page recorded: the same model, data,
    recipe, seed and start (the key hashes the start's SHA-256 and the proxy generator's version,
    `proxy.version`, whose output per version tests/test_data_proxy.py pins by digest: the same
    version, the same clips). The page must come from a clean tree, and each run's numbers must be
    its evaluation file's (`runner.check_done`). Runs that fine-tune from another
    run of the cache (Table 4) need weights a page does not hold: they are skipped, and said so.
    ValueError in one line when the page does not qualify; then nothing is written."""

    page, cache = Path(page), Path(cache)
    where = page / "results.json"
    try:
        res = json.loads(where.read_text())
        commit, dirty = res["provenance"]["git"]["commit"], res["provenance"]["git"]["dirty"]
        rows = [r for r in res["rows"] if isinstance(r, dict) and r.get("runs")]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{where}: not a page's results.json ({str(e)[:120]})") from None
    if dirty is not False or not isinstance(commit, str) or not re.fullmatch(r"[0-9a-f]{40}", commit):
        raise ValueError(f"{where}: not from a clean tree (git commit {str(commit)[:12]}, dirty {dirty}); "
                         "only a page published from a clean checkout is adopted")
    _same_generator(res, rows, commit, where)
    start = _local_start()
    anchor = next(p for p in [cache.parent, *cache.parent.parents] if p.is_dir())
    staged, skipped = {}, 0
    with tempfile.TemporaryDirectory(dir=anchor, prefix=".adopt-") as tmp:
        tmp = Path(tmp)
        for row in rows:
            for sr in row["runs"]:
                label = f"{row.get('id')} seed {sr.get('seed') if isinstance(sr, dict) else '?'}"
                try:
                    key, run = _adoptable(sr, page, cache, start, res.get("profile"), commit, tmp)
                except _Skip as e:
                    log(f"{label}: skipped ({e})")
                    skipped += 1
                    continue
                except ValueError as e:
                    raise ValueError(f"{where}: {label}: {e}") from None
                staged[key] = run
        cache.mkdir(parents=True, exist_ok=True)
        added = [key for key, run in staged.items() if _install(run, cache)]
    log(f"adopted {len(added)} runs of {page} into {cache} ({len(staged) - len(added)} already there"
        + (f", {skipped} skipped" if skipped else "") + ")")
    return added


class _Skip(Exception):
    pass


PROXY_CODE = "stm_lib/data/proxy.py"   # what generates the proxies a page's runs read


def _same_generator(res: dict, rows: list, commit: str, where: Path) -> None:
    """The generator version of each proxy kind the page's runs read, at the page's commit (read
    from PROXY_CODE there as text: nothing of it runs), is this checkout's. A run key holds the
    version only after the committed ones (runner._KEYED_AFTER), so a page of an older generator
    would otherwise pass the key check."""
    import ast
    import subprocess

    from stm_lib.data import proxy
    from stm_lib.provenance import ROOT

    kinds = {str(((sr.get("config") or {}).get("data") or {}).get("dataset", "")).removeprefix("proxy-")
             for r in rows for sr in r["runs"] if isinstance(sr, dict)} & set(proxy.VERSION_NAMES)
    if not kinds:
        return
    shown = subprocess.run(["git", "show", f"{commit}:{PROXY_CODE}"], cwd=ROOT, capture_output=True, text=True)
    if shown.returncode != 0:
        raise ValueError(f"{where}: its commit {commit[:12]} is unknown to this checkout's git: the proxy generator "
                         "its runs read cannot be checked (fetch that commit)")
    then = {t.id: n.value.value for n in ast.parse(shown.stdout).body if isinstance(n, ast.Assign)
            and isinstance(n.value, ast.Constant) for t in n.targets if isinstance(t, ast.Name)}
    for kind in sorted(kinds):
        was = then.get(proxy.VERSION_NAMES[kind], then.get("VERSION"))
        if was != proxy.version(kind):
            raise ValueError(f"{where}: its runs read the {kind} proxy of generator version {was} ({PROXY_CODE} at "
                             f"{commit[:12]}), this checkout generates version {proxy.version(kind)}: not the same data")


def _adoptable(sr: dict, page: Path, cache: Path, start: str | None, profile, commit: str,
               tmp: Path) -> tuple[str, Path]:
    """One recorded run as a cache entry in `tmp/<key>/` (its files and a rebuilt `done.json`)."""
    if not isinstance(sr, dict) or not isinstance(sr.get("cache"), str) or not _NAME.fullmatch(sr["cache"]):
        raise ValueError("no cache key recorded")
    folder = page / str(sr.get("run"))
    if not _NAME.fullmatch(folder.name) or folder.resolve().parent != (page / "train").resolve() \
            or folder.is_symlink() or not folder.is_dir():
        raise ValueError(f"run folder {str(sr.get('run'))[:80]!r} is not a folder of {page / 'train'}")
    cfg = _config(sr, "its record")
    pre = cfg.model.pretrained
    if pre and Path(pre).parts[-4:] == ("runs", "pretrain", "start", "backbone.pth"):
        if start is None:
            raise ValueError("fine-tuned from the shared start, which this checkout lacks (stm pretrain)")
        cfg = cfg.update("model", pretrained=start)
    elif pre:
        raise _Skip("fine-tuned from another run's weights, which a page does not hold")
    key = sr["cache"]
    if runner.cache_key(cfg, cache) != key:
        raise ValueError(f"its config has cache key {runner.cache_key(cfg, cache)} here, the page recorded {key} "
                         "(another code version's config or another start)")
    d = cfg.data
    evals = sorted(folder.glob(f"eval_val_{d.test_clips}x{d.test_crops}*.json"))
    if len(evals) != 1:
        raise ValueError(f"{folder}: expected one evaluation file eval_val_{d.test_clips}x{d.test_crops}*.json")
    run = tmp / key
    run.mkdir()
    for f in folder.iterdir():
        if f.is_symlink() or not f.is_file():
            raise ValueError(f"{f}: not a plain file")
        shutil.copyfile(f, run / f.name)
    try:
        e = json.loads(evals[0].read_text())
        top1, top5, n = 100 * e["top1"], 100 * e["top5"], e["n"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{evals[0]}: not an evaluation ({str(err)[:80]})") from None
    ev = {"key": key, "top1": top1, "top5": top5, "n": n, "file": evals[0].name,
          "train_seconds": sr.get("wall_time_s"), "profile": profile,
          "git": {"commit": sr.get("commit") or commit, "dirty": False}, "adopted_from": str(page),
          "config": cfg.update("train", out=str(cache.resolve() / key)).to_dict()}
    ev = json.loads(json.dumps(ev, default=list))
    runner.check_done(run, ev)   # finite, its evaluation file's, its last validation's
    atomic_write_json(run / "done.json", ev)
    return key, run


def _checked_members(tar: tarfile.TarFile, where: Path) -> list[tarfile.TarInfo]:
    """The pack's members, each `pack.json`, `<key>/`, `<key>/<file>` or `<key>.log`, a plain file
    or folder (no link, device or sparse file), within the member-count, per-member and total size
    caps, checked on the declared sizes as the headers are read (nothing is extracted yet)."""
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
        cap = MAX_MANIFEST_BYTES if m.name == MANIFEST else MAX_MEMBER_BYTES
        if m.size > cap:
            raise ValueError(f"{where}: member {m.name!r} declares {m.size} bytes, over the {cap} "
                             "a member may hold: refused before unpacking")
        total += m.size
        if total > MAX_TOTAL_BYTES:
            raise ValueError(f"{where}: its members declare over {MAX_TOTAL_BYTES} bytes in all: refused before "
                             "unpacking")
        out.append(m)
    return out


def _manifest(path: Path, pack: Path) -> dict:
    """pack.json, its fields typed: a crafted one is refused, never trusted halfway."""
    if not path.is_file():
        raise ValueError(f"{pack}: not a run pack (no {MANIFEST}; stm runs pack writes one)")
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise ValueError(f"{pack}: {MANIFEST} is not readable JSON ({str(e)[:200] or type(e).__name__})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT or m.get("version") != VERSION:
        got = (m.get("format"), m.get("version")) if isinstance(m, dict) else type(m).__name__
        raise ValueError(f"{pack}: {MANIFEST} is not a {FORMAT} pack of version {VERSION} (got {got})")
    typed = {"cache": str, "runs": list, "proxy_digests": dict, "starts": dict}
    for k, t in typed.items():
        if not isinstance(m.get(k), t):
            raise ValueError(f"{pack}: {MANIFEST}: {k} must be a JSON {t.__name__}, got {type(m.get(k)).__name__}")
    if not all(isinstance(k, str) for k in m["runs"]):
        raise ValueError(f"{pack}: {MANIFEST}: runs must be a list of run keys (strings)")
    for k in ("proxy_digests", "starts"):
        if not all(isinstance(a, str) and isinstance(b, str) for a, b in m[k].items()):
            raise ValueError(f"{pack}: {MANIFEST}: {k} must map names to strings")
    return m


def _checked_run(run: Path, tmp: Path, pack: Path, m: dict) -> Config:
    """One extracted run folder, checked: plain files only, its record, and its folder name the
    cache key of the config it records; the config, with a shared start pointing to this checkout's."""
    where = f"{pack}: {run.name}"
    if not (run / "done.json").is_file():
        raise ValueError(f"{where} has no done.json (an unfinished run)")
    if any(p.is_symlink() or not p.is_file() for p in run.iterdir()):
        raise ValueError(f"{where} holds something that is not a plain file")
    try:   # every path the record names stays in its folder; its numbers are its own files'
        ev = runner.check_done(run)
        cfg = _config(ev, where=f"{run.name}/done.json")
    except RecursionError:
        raise ValueError(f"{where}/done.json: nested too deeply") from None
    except ValueError as e:
        raise ValueError(f"{pack}: {str(e).replace(str(tmp) + '/', '')}") from None
    pre = cfg.model.pretrained
    if pre and not _inside(pre, m["cache"]) and pre in m["starts"]:   # the shared start: its hash, not its path
        here = _local_start()
        if here is None or _start_sha(here) != m["starts"][pre]:
            raise ValueError(f"{where}: fine-tuned from the shared start with SHA-256 {m['starts'][pre][:16]}, "
                             f"this checkout's is {(_start_sha(here) or 'missing')[:16]}: not the same start")
        cfg = cfg.update("model", pretrained=here)
    key = runner.cache_key(cfg, m["cache"])
    if key != run.name:
        raise ValueError(f"{where}/done.json's config has cache key {key}, not its folder's name")
    return cfg


def _config(ev: dict, where) -> Config:
    try:   # the config the key was made from (config.yaml is the engine's resolved copy)
        return Config.from_dict(ev["config"])
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{where} has no usable config ({str(e)[:200]})") from None


def _check_proxy_wanted(cfg: Config, m: dict, where: str) -> None:
    """Before a proxy is generated to check a pack: the pack gives its digest, and it is not so
    large that generating it would itself be the harm (its size is the run's config, pack data)."""
    if not cfg.data.dataset.startswith("proxy-"):
        return
    from stm_lib.data.proxy import proxy_path

    d = cfg.data
    name = proxy_path(cfg.data.dataset.split("-", 1)[1], dataclasses.replace(d, proxy_cache=None))[0].name
    if name not in m["proxy_digests"]:
        raise ValueError(f"{where}: read proxy {name}, for which the pack gives no digest")
    if d.proxy_videos * d.proxy_frames * d.proxy_resolution ** 2 > MAX_PROXY_PIXELS:
        raise ValueError(f"{where}: its proxy ({d.proxy_videos} clips x {d.proxy_frames} frames at "
                         f"{d.proxy_resolution} px) is over the {MAX_PROXY_PIXELS} pixels generated to check a pack")


def _install(run: Path, cache: Path, run_log: Path | None = None) -> bool:
    """Rename the checked run folder `run` (named by its cache key) into `cache`, with its log,
    under the run's cache lock (not while `stm reproduce` trains the same run); False, and
    nothing moved, when the cache already has that run finished."""
    with locked(cache / f".{run.name}.lock"):
        if (cache / run.name / "done.json").is_file():
            return False
        shutil.rmtree(cache / run.name, ignore_errors=True)   # an interrupted run of the same config
        _move(run, cache / run.name)
        if run_log is not None and run_log.is_file():
            _move(run_log, cache / f"{run.name}.log")
    return True


def _move(src: Path, dst: Path) -> None:
    """A rename (atomic); across file systems (a cache that is a link elsewhere) a copy under a
    temporary name, then a rename."""
    try:
        os.rename(src, dst)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        tmp = dst.with_name(f".{dst.name}.unpack-tmp")
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, tmp)
        os.rename(tmp, dst)


def _local_proxy(cfg: Config, log) -> Path | None:
    """The proxy a run read, as this machine's proxy cache holds it (generated from the same code
    if missing); None for a real dataset. The run's own `proxy_cache` is not used: it is a path
    on the machine that trained it (and, in a pack, a path another machine chose)."""
    if not cfg.data.dataset.startswith("proxy-"):
        return None
    from stm_lib.data.proxy import ensure_proxy, proxy_path

    data = dataclasses.replace(cfg.data, proxy_cache=None)
    kind = cfg.data.dataset.split("-", 1)[1]
    if not (proxy_path(kind, data)[0] / "proxy.json").is_file():
        log(f"generating proxy {kind} here ({proxy_path(kind, data)[0]}) to check its digest")
    return ensure_proxy(kind, data, progress=False)


def _digest(root: Path) -> str:
    from stm_lib.data.proxy import digest

    return digest(root)


def _local_start() -> str | None:
    """This checkout's shared start (runs/pretrain/start/backbone.pth), verified; None if absent."""
    from stm_lib.book.tables import START
    from stm_lib.pretrain import verify
    from stm_lib.provenance import ROOT

    return verify(ROOT / START) if (ROOT / START).is_file() else None


def _start_sha(path: str | None) -> str | None:
    """The SHA-256 a shared start's pretrain.json records (what `runner.cache_key` keys it by)."""
    from stm_lib.pretrain import RECORD

    rec = Path(path).parent / RECORD if path else None
    if rec is None or not rec.is_file():
        return None
    try:
        sha = json.loads(rec.read_text()).get("sha256")
    except (OSError, ValueError, AttributeError):
        return None
    return sha if isinstance(sha, str) else None


def _inside(path: str, cache: str | Path) -> bool:
    p = Path(path)
    return p.is_absolute() and p.is_relative_to(Path(cache).resolve())


# ---- CLI -------------------------------------------------------------------------------------------

def _cmd_pack(args) -> int:
    keys = None
    if args.table:
        keys = planned_runs(args.table, args.profile, args.cache, args.seeds, models=args.models,
                            data_root=args.data_root)
    pack(args.cache, args.out, keys)
    return 0


def _cmd_unpack(args) -> int:
    unpack(args.pack, args.cache)
    return 0


def _cmd_adopt(args) -> int:
    for page in args.page:
        adopt(page, args.cache)
    return 0


def _one_line(cmd: str, func):
    """User errors and refusals: `stm runs CMD: error: ...` in one line, exit 2, nothing written."""
    def run(args) -> int:
        try:
            return func(args)
        except (ValueError, FileNotFoundError) as e:
            print(f"stm runs {cmd}: error: {' '.join(str(e).split())}", file=sys.stderr)   # one line, always
            return 2
    return run


def register(sub) -> None:
    p = sub.add_parser("runs", help="pack a run cache's finished runs into one file; unpack one into this cache; "
                                    "adopt a committed page's runs",
                       description=__doc__.split("\n\n")[0])
    s = p.add_subparsers(dest="runs_command", metavar="SUBCOMMAND")
    s.required = True
    a = s.add_parser("pack", help="the finished runs of a cache (or of some tables), with their proxies' digests",
                     description="Pack the finished runs of --cache (default: all; with --table, those the tables "
                                 "use) into one .tar.gz: each run's small files, the digests of the proxies they "
                                 "read, Table 4's pre-training backbones. No checkpoint travels.")
    a.add_argument("--out", required=True, help="the pack file to write, e.g. runs.tar.gz")
    a.add_argument("--cache", default="runs/_cache", help="the run cache to pack (default runs/_cache: what "
                   "`stm reproduce --out-root runs` trains into)")
    a.add_argument("--table", nargs="+", help="pack only the runs these tables use (1..9, figure1, relatives, all)")
    a.add_argument("--profile", default="proxy", help="with --table: smoke | proxy (default) | full")
    a.add_argument("--seeds", type=int, default=None, help="with --table: seeds per row (default: the profile's)")
    a.add_argument("--models", nargs="+", help="with --table: only these rows (as the notebooks' models parameter)")
    a.add_argument("--data-root", help="with --table and --profile full: the real dataset's folder")
    a.set_defaults(func=_one_line("pack", _cmd_pack))
    u = s.add_parser("unpack", help="check a pack and put its runs into this cache (nothing written if it fails)",
                     description="Check a pack (member names and sizes, each run's record and cache key, the "
                                 "proxies' digests against proxies generated here, the shared start) and put its "
                                 "runs into --cache; then `stm reproduce --table T` renders from them without "
                                 "training. A pack that fails a check is refused in one line and nothing is written.")
    u.add_argument("pack", help="the pack file (stm runs pack --out)")
    u.add_argument("--cache", default="runs/_cache", help="the run cache to fill (default runs/_cache: what "
                   "`stm reproduce --out-root runs` reads)")
    u.set_defaults(func=_one_line("unpack", _cmd_unpack))
    d = s.add_parser("adopt", help="a committed page's runs (results.json + train/) into this cache",
                     description="Put the runs a committed page records into --cache, each only if its cache key, "
                                 "recomputed from the recorded config, is the recorded one; then a table sharing "
                                 "those runs (Tables 1, 8 and 9 share Table 5's) trains only its own rows.")
    d.add_argument("page", nargs="+", help="a page folder, e.g. runs/table5/proxy")
    d.add_argument("--cache", default="runs/_cache", help="the run cache to fill (default runs/_cache)")
    d.set_defaults(func=_one_line("adopt", _cmd_adopt))
