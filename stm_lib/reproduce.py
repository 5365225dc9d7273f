"""`make reproduce TABLE=N PROFILE=...`: one paper table -> one executed notebook + results.json.

    reproduce("5", profile="smoke")  ->  runs/table5/smoke/{table5.ipynb, results.json, table5.csv,
                                                            figures/*.png, train/<row>/...}

The notebook (`book/table5.ipynb`) runs under papermill in a temporary folder next to the
destination and writes its rows there (`rows.json`); this module then adds provenance (git commit,
command, parameters, hardware, versions, seed, wall time), writes `results.json` atomically and
swaps the folder into place. So an interrupted or failing run never leaves a `results.json` that
looks complete, and an existing good result is only replaced by a complete new one.
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from stm_lib.book.experiments import PROFILES, TABLES, notebook_name

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"


class NotebookFailed(RuntimeError):
    """The notebook raised; the executed copy (with the traceback) is kept for inspection."""


def reproduce(table: str, profile: str = "proxy", data_root: str | None = None, device: str = "auto",
              seed: int = 0, out_root: str | Path = "runs", extra_params: dict | None = None,
              progress: bool = True, command: str | None = None) -> Path:
    """Execute one table's notebook and return the folder `out_root/<table>/<profile>`."""
    name = notebook_name(str(table))
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    if profile == "full" and not data_root and name != "figure1":
        raise ValueError(f"profile 'full' runs {name} at the paper's settings on the real dataset: pass "
                         "--data-root DIR (make reproduce ... DATA_ROOT=DIR)")
    if data_root and not Path(data_root).exists():
        raise FileNotFoundError(f"data root not found: {data_root}")
    src = BOOK / f"{name}.ipynb"
    if not src.is_file():
        raise FileNotFoundError(f"notebook missing: {src}")

    out_root = Path(out_root).resolve()
    dest = out_root / name / profile
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{profile}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    params = {"profile": profile, "data_root": data_root, "device": device, "seed": seed, "out_dir": str(tmp),
              **(extra_params or {})}
    executed = tmp / f"{name}.ipynb"
    start, t0, git = _now(), time.time(), git_state()   # the code as it was when the run began
    try:
        _execute(src, executed, params, progress)
        rows_file = tmp / "rows.json"
        if not rows_file.is_file():
            raise NotebookFailed(f"{src.name} finished without writing rows.json")
        _tag_parameters_cell(executed)
        doc = json.loads(rows_file.read_text())
        rows_file.unlink()
        doc["provenance"] = provenance(params, seed, start, time.time() - t0, command, out_root, git)
        _atomic_write(tmp / "results.json", json.dumps(doc, indent=1, default=str))
    except BaseException as e:
        failed = dest.parent / f".{profile}.failed"
        shutil.rmtree(failed, ignore_errors=True)
        if tmp.exists():
            os.replace(tmp, failed)
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        raise NotebookFailed(f"{name} ({profile}) failed: {type(e).__name__}: {_short(e)}\n"
                             f"the executed notebook with the error is in {failed}; "
                             f"{'the previous result in ' + str(dest) + ' is untouched' if dest.exists() else 'no result was written'}"
                             ) from e
    _swap_into_place(tmp, dest)
    return dest


def reproduce_all(profile: str = "proxy", **kw) -> list[Path]:
    """Every table, then Figure 1 (it uses a proxy-trained STM when one exists)."""
    return [reproduce(t, profile, **kw) for t in TABLES]


def _execute(src: Path, dst: Path, params: dict, progress: bool) -> None:
    import logging

    import papermill as pm

    if progress:   # papermill's log_output goes through its logger: show cell output live
        logging.getLogger("papermill").setLevel(logging.INFO)
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.WARNING, format="%(message)s")
        logging.getLogger("papermill").setLevel(logging.INFO)

    env_backend = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    try:
        pm.execute_notebook(str(src), str(dst), parameters=params, kernel_name="python3", cwd=str(ROOT),
                            progress_bar=progress, log_output=progress, request_save_on_cell_execute=True)
    finally:
        if env_backend is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = env_backend


def _tag_parameters_cell(path: Path) -> None:
    """papermill 2.7 leaves its injected-parameters cell visible: hide it in the book (the values
    are in results.json's provenance and in the page's settings paragraph)."""
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
    _atomic_write(path, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def _swap_into_place(tmp: Path, dest: Path) -> None:
    """Two renames: the old result moves aside only once the new one is complete."""
    old = None
    if dest.exists():
        old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    failed = dest.parent / f".{dest.name}.failed"
    shutil.rmtree(failed, ignore_errors=True)


# ---- provenance ----------------------------------------------------------------------------------

def provenance(params: dict, seed: int, start: str, seconds: float, command: str | None, out_root: Path,
               git: dict | None = None) -> dict:
    """`git`: the state at the start of the run; if the checkout moved or changed while it ran
    (modules imported late may then come from other code), `git_changed_during_run` says so."""
    import torch

    end_git = git_state()
    git = git or end_git
    changed = {"git_changed_during_run": end_git} if end_git != git else {}
    return {
        "git": git,
        **changed,
        "command": command or shlex.join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "parameters": {k: v for k, v in params.items() if k != "out_dir"},
        "seed": seed,
        "hardware": hardware(),
        "versions": versions(),
        "start": start,
        "end": _now(),
        "wall_time_s": round(seconds, 1),
        "threads": torch.get_num_threads(),
    }


def git_state() -> dict:
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=20).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD") or None,
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
                "branch": git("rev-parse", "--abbrev-ref", "HEAD") or None}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None, "branch": None}


def hardware() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    hw = {"host": platform.node(), "platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
          "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
          if torch.cuda.is_available() else []}
    try:
        hw["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return hw


def versions() -> dict:
    import importlib.metadata as md

    v = {"python": platform.python_version()}
    for pkg in ("torch", "torchvision", "numpy", "fvcore", "papermill", "opencv-contrib-python-headless",
                "stm-lib"):
        try:
            v[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            v[pkg] = None
    return v


def _kv(d: dict) -> str:
    return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in d.items())


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _short(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[-1][:300] if s else ""


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:6]}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ---- CLI -------------------------------------------------------------------------------------------

def _cmd_reproduce(args) -> int:
    import signal

    # `kill PID` -> SystemExit: papermill shuts its kernel down and the half-done run moves aside
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tables = list(TABLES) if args.table == "all" else [args.table]
    for t in tables:   # fail early on a bad name before anything runs
        notebook_name(t)
    extra = json.loads(args.params) if args.params else None
    done = []
    for t in tables:
        name = notebook_name(t)
        print(f"==> {name} ({args.profile}) -> {Path(args.out_root) / name / args.profile}", flush=True)
        t0 = time.time()
        try:
            d = reproduce(t, args.profile, args.data_root, args.device, args.seed, args.out_root, extra,
                          progress=not args.quiet)
        except NotebookFailed as e:
            print(f"stm reproduce: error: {e}", file=sys.stderr)
            return 1
        print(f"==> {name}: {d / 'results.json'} ({time.time() - t0:.0f} s)", flush=True)
        for r in json.loads((d / "results.json").read_text()).get("rows", []):
            measured = {k: r[k] for k in ("top1", "top1_ucf101", "top1_hmdb51", "videos_per_s", "corr_with_flow")
                        if r.get(k) is not None}
            if measured:
                paper = {k: r[f"paper_{k}"] for k in measured if r.get(f"paper_{k}") is not None}
                print(f"    {r['id']:14s} measured {_kv(measured)}" + (f"   paper {_kv(paper)}" if paper else "")
                      + f"   [{r.get('status', '')}]")
        done.append(d)
    return 0


def _cmd_book(args) -> int:
    from stm_lib.book.build import build

    return build(args.runs, args.out, allow_missing=args.allow_missing, builder=args.builder)


def register(sub) -> None:
    p = sub.add_parser("reproduce", help="run one paper table's notebook (papermill) into runs/",
                       description="Execute book/tableN.ipynb with papermill into runs/tableN/<profile>/: the "
                                   "executed notebook, results.json (rows + provenance), a CSV and figures.")
    p.add_argument("--table", required=True, help="1..9, figure1, or all")
    p.add_argument("--profile", default="proxy", help="smoke | proxy (default) | full")
    p.add_argument("--data-root", default=None, help="the real dataset's folder (profile full)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-root", default="runs", help="default runs/")
    p.add_argument("--params", default=None, help='more notebook parameters as JSON, e.g. \'{"epochs": 3}\'')
    p.add_argument("--quiet", action="store_true", help="no progress bar or cell output")
    p.set_defaults(func=_cmd_reproduce)
    b = sub.add_parser("book", help="build the Jupyter Book (HTML) from runs/ without training",
                       description="Write _toc.yml and book/status.md from runs/*/*/results.json, then "
                                   "jupyter-book build . -W -n --keep-going into _build/html.")
    b.add_argument("--runs", default="runs")
    b.add_argument("--out", default=".", help="the book root (where _build/ goes)")
    b.add_argument("--allow-missing", action="store_true", help="build even if a table has no run")
    b.add_argument("--builder", default="html", help="html (default) | singlehtml")
    b.set_defaults(func=_cmd_book)
