"""`make reproduce TABLE=N PROFILE=...`: one paper table -> one executed notebook + results.json.

    reproduce("5", profile="smoke")  ->  runs/table5/smoke/{table5.ipynb, results.json, table5.csv,
                                                            figures/*.png, train/<row>/...}

The notebook (`book/table5.ipynb`) runs under papermill in a temporary folder next to the
destination and writes its `Result` there (`result.json`, book/result.py's schema); this module
then adds the provenance record (stm_lib/provenance.py), writes `results.json` atomically and swaps
the folder into place. Trained runs live in the run cache `<out_root>/_cache/` (one run serves
every table that needs it). So an interrupted or failing run never leaves a `results.json` that
looks complete, and an existing good result is only replaced by a complete new one.

Where the runs train before the notebook renders the page (`--launcher`): worker processes of this
one (`pool`, the default), one submitit job per run as local processes (`local`) or a Slurm job
array (`slurm`), stm_lib/launch.py. The notebook then finds every run in the cache.
"""
from __future__ import annotations

import ast
import json
import math
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

from stm_lib.book.result import Result
from stm_lib.book.tables import TABLES, check_profile, notebook_name
from stm_lib.config import Config
from stm_lib.io import atomic_write_text, is_locked, locked
from stm_lib.provenance import git_state, now, record

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"


class NotebookFailed(RuntimeError):
    """The notebook raised; the executed copy (with the traceback) is kept for inspection."""


# Parameters `reproduce` passes itself, each from its own flag (or from --out-root).
SET_HERE = {"profile": "--profile", "data_root": "--data-root", "device": "--device", "seeds": "--seeds",
            "out_dir": "--out-root", "cache_dir": "--out-root"}
DICT_PARAMS = ("overrides",)   # declared `None  # e.g. {"train": {"lr": 0.05}, ...}`: Config.merge's input


def declared_parameters(notebook: Path) -> list[str]:
    """The names the notebook's `parameters`-tagged cell assigns. They are the only names
    `--params` may set: papermill writes each name verbatim into code (`<name> = <value>`), so an
    undeclared name is either a typo that would be silently ignored or code that would run."""
    names = []
    for cell in json.loads(Path(notebook).read_text())["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            src = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            for node in ast.parse(src).body:
                targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
                names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names


def check_params(params: dict, declared: list[str], where: str) -> None:
    """`--params` values: declared names only; JSON scalars or lists of them, or for
    DICT_PARAMS a mapping `Config.merge` accepts (checked here, before anything runs)."""
    if not isinstance(params, dict):
        raise ValueError(f"--params: expected a JSON object of notebook parameters, got {type(params).__name__}")
    for k, v in params.items():
        if k in SET_HERE:
            raise ValueError(f"--params: {k!r} is set by stm reproduce itself; use {SET_HERE[k]}")
        if k not in declared:
            known = [n for n in declared if n not in SET_HERE]
            raise ValueError(f"--params: unknown parameter {k[:80]!r} (not in {where}); known: {', '.join(known)}")
        if k in DICT_PARAMS and v is not None:
            if not isinstance(v, dict):
                raise ValueError(f"--params: {k} must be a JSON object like {{\"train\": {{\"lr\": 0.05}}}}")
            try:
                Config().merge(v)
            except (TypeError, ValueError, RecursionError) as e:
                why = "nested too deeply" if isinstance(e, RecursionError) else str(e)[:300].removeprefix(f"{k}: ")
                raise ValueError(f"--params: {k}: {why}") from None
        elif not (_scalar(v) or (isinstance(v, list) and all(map(_scalar, v)))):
            raise ValueError(f"--params: {k} must be a JSON number, string, true/false, null or a list of "
                             f"those, got {json.dumps(v)[:80]}")


def _scalar(x) -> bool:
    """A JSON scalar papermill writes as a Python literal (NaN and Infinity it would write as calls)."""
    return x is None or isinstance(x, (str, bool, int)) or (isinstance(x, float) and math.isfinite(x))


def parse_params(text: str | None) -> dict | None:
    """`--params` JSON, refused in one line when it is not JSON or is nested past Python's
    recursion limit (json.loads raises RecursionError there, not ValueError)."""
    if not text:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"--params: not valid JSON ({str(e)[:200] or type(e).__name__})") from None


def reproduce(table: str, profile: str = "proxy", data_root: str | None = None, device: str = "auto",
              seeds: int | None = None, out_root: str | Path = "runs", extra_params: dict | None = None,
              progress: bool = True, command: str | None = None) -> Path:
    """Execute one table's notebook and return the folder `out_root/<table>/<profile>`.
    `seeds`: training seeds per row (None: the profile's, tables.PROFILES)."""
    name = notebook_name(str(table))
    check_profile(profile)
    if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1):
        raise ValueError(f"seeds must be a positive integer, got {seeds!r}")
    if profile == "full" and not data_root and name != "figure1":
        raise ValueError(f"profile 'full' runs {name} at the paper's settings on the real dataset: pass "
                         "--data-root DIR (make reproduce ... DATA_ROOT=DIR)")
    if data_root and not Path(data_root).exists():
        raise FileNotFoundError(f"data root not found: {data_root}")
    src = BOOK / f"{name}.ipynb"
    if not src.is_file():
        raise FileNotFoundError(f"notebook missing: {src}")
    check_params(extra_params or {}, declared_parameters(src), src.name)

    out_root = Path(out_root).resolve()
    dest = out_root / name / profile
    dest.parent.mkdir(parents=True, exist_ok=True)
    _clean_abandoned(dest.parent)
    tmp = dest.parent / f".{profile}.tmp-{uuid.uuid4().hex[:8]}"
    with locked(tmp.with_name(tmp.name + ".lock"), remove=True):   # held: `tmp` is not abandoned
        tmp.mkdir()
        params = {"profile": profile, "data_root": data_root, "device": device, "seeds": seeds, "out_dir": str(tmp),
                  "cache_dir": str(out_root / "_cache"), **(extra_params or {})}
        executed = tmp / f"{name}.ipynb"
        start, t0, git = now(), time.time(), git_state()   # the code as it was when the run began
        try:
            _execute(src, executed, params, progress)
            draft = tmp / "result.json"
            if not draft.is_file():
                raise NotebookFailed(f"{src.name} finished without writing result.json (runner.save)")
            _tag_parameters_cell(executed)
            result = Result.load(draft)
            draft.unlink()
            shown = {k: v for k, v in params.items() if k not in ("out_dir", "cache_dir")}
            result.provenance = record(command, shown, result.seeds, start, time.time() - t0, git)
            result.save(tmp / "results.json")
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


def _clean_abandoned(folder: Path) -> list[Path]:
    """Remove the `.<profile>.tmp-*` folders in `folder` that a killed `stm reproduce` left (a
    SIGKILL runs no cleanup), but only those whose lock no live process holds: another reproduce of
    the same table may be writing its own right now. A kept result, `.failed` or `.old-*` folder
    is never touched."""
    gone = []
    for d in sorted(folder.glob(".*.tmp-*")):
        lock = d.with_name(d.name + ".lock")
        if d.is_dir() and not is_locked(lock):
            shutil.rmtree(d, ignore_errors=True)
            lock.unlink(missing_ok=True)
            gone.append(d)
    return gone


def table_ids(name: str) -> list[str]:
    """"all": the paper's tables, then Figure 1 (it uses a proxy-trained STM when one exists); a
    chapter beyond the paper ("relatives") only by its name."""
    return [t for t in TABLES if not TABLES[t].chapter] if name == "all" else [name]


def reproduce_all(profile: str = "proxy", **kw) -> list[Path]:
    return [reproduce(t, profile, **kw) for t in table_ids("all")]


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
    atomic_write_text(path, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


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


def summary(result: Result) -> str:
    """A few lines for the terminal: measured mean +- std over seeds beside the paper's value."""
    lines = []
    for r in result.rows:
        parts = []
        for m in r.seeds:
            if m.startswith("top5"):
                continue
            sd = r.std(m)
            parts.append(f"{m} {r.value(m):.3g}" + (f" +- {sd:.2g}" if sd is not None else "")
                         + (f" (paper {r.paper[m]})" if m in r.paper else ""))
        if r.speed:
            parts.append(f"videos/s {r.speed.videos_per_s:.3g}")
        if parts:
            lines.append(f"    {r.id:14s} " + ", ".join(parts) + f"   [{r.status}{': ' + r.reason if r.reason else ''}]")
    lines += [f"    {c.better} > {c.worse} ({c.metric}): {c.verdict}" for c in result.claims]
    return "\n".join(lines)


def _short(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[-1][:300] if s else ""


# ---- CLI -------------------------------------------------------------------------------------------

def _cmd_reproduce(args) -> int:
    import signal

    # `kill PID` -> SystemExit: papermill shuts its kernel down and the half-done run moves aside
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tables = table_ids(args.table)
    for t in tables:   # fail early on a bad name before anything runs
        notebook_name(t)
    extra = parse_params(args.params)
    if extra is not None:   # names of at least one notebook; each gets the ones it declares
        declared = {t: declared_parameters(BOOK / f"{notebook_name(t)}.ipynb") for t in tables}
        check_params(extra, list(dict.fromkeys(n for t in tables for n in declared[t])),
                     f"{notebook_name(tables[0])}.ipynb" if len(tables) == 1 else f"the notebooks of --table {args.table}")
    from stm_lib.book.pool import default_jobs, prefetch
    from stm_lib.launch import Launcher, options_from_args

    opts = options_from_args(args)   # a bad launcher flag, or no Slurm here: one line, before anything runs
    launcher = Launcher(opts, args.device) if opts.launcher != "pool" else None
    jobs = args.jobs or default_jobs(args.profile, args.device)
    if jobs > 1 or launcher:   # every distinct run first, side by side; the notebooks then find them cached
        how = f" as {opts.launcher} jobs" if launcher else ""
        print(f"==> prefetch: the runs of {', '.join(tables)} ({args.profile}){how}", flush=True)
        t0 = time.time()
        failed = prefetch(tables, args.profile, args.seeds, Path(args.out_root) / "_cache", jobs,
                          device=args.device, data_root=args.data_root, params=extra, launcher=launcher)
        print(f"==> prefetch: {time.time() - t0:.0f} s", flush=True)
        if failed:
            print("stm reproduce: error: " + "; ".join(failed), file=sys.stderr)
            return 1
    done = []
    for t in tables:
        name = notebook_name(t)
        print(f"==> {name} ({args.profile}) -> {Path(args.out_root) / name / args.profile}", flush=True)
        t0 = time.time()
        try:
            mine = {k: v for k, v in extra.items() if k in declared[t]} if extra is not None else None
            d = reproduce(t, args.profile, args.data_root, args.device, args.seeds, args.out_root, mine,
                          progress=not args.quiet)
        except NotebookFailed as e:
            print(f"stm reproduce: error: {e}", file=sys.stderr)
            return 1
        print(f"==> {name}: {d / 'results.json'} ({time.time() - t0:.0f} s)", flush=True)
        print(summary(Result.load(d / "results.json")), flush=True)
        done.append(d)
    return 0


def _cmd_book(args) -> int:
    from stm_lib.book.build import build

    return build(args.runs, args.out, allow_missing=args.allow_missing, builder=args.builder)


def register(sub) -> None:
    p = sub.add_parser("reproduce", help="run one paper table's notebook (papermill) into runs/",
                       description="Execute book/tableN.ipynb with papermill into runs/tableN/<profile>/: the "
                                   "executed notebook, results.json (rows per seed, verdicts, provenance), a CSV "
                                   "and figures; trained runs are cached in <out-root>/_cache/.")
    p.add_argument("--table", required=True, help="1..9, figure1, relatives (the chapter beyond the paper), or all "
                   "(the paper's tables and Figure 1)")
    p.add_argument("--profile", default="proxy", help="smoke | proxy (default) | full")
    p.add_argument("--data-root", default=None, help="the real dataset's folder (profile full)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--seeds", type=int, default=None,
                   help="training seeds per row (default: the profile's: smoke 1, proxy 5 (10 on a GPU), full 1)")
    p.add_argument("--jobs", type=int, default=None,
                   help="runs trained side by side, 1 thread each, before the notebooks (default: one per core "
                        "up to 8 for CPU smoke/proxy, 1 on a GPU or for full); with --launcher local the jobs "
                        "at once (default one per core up to 8), with slurm the array's limit (default none)")
    p.add_argument("--out-root", default="runs", help="default runs/")
    p.add_argument("--params", default=None, help='more notebook parameters as JSON, e.g. \'{"epochs": 3}\'')
    p.add_argument("--quiet", action="store_true", help="no progress bar or cell output")
    from stm_lib.launch import add_arguments

    add_arguments(p)
    p.set_defaults(func=_cmd_reproduce)
    b = sub.add_parser("book", help="build the Jupyter Book (HTML) from runs/ without training",
                       description="Render every table page from runs/*/*/results.json (no training, no "
                                   "notebook execution) into a staged source in OUT/_build/src, then "
                                   "jupyter-book build -W into OUT/_build/html. Tracked files are not touched.")
    b.add_argument("--runs", default="runs")
    b.add_argument("--out", default=".", help="where _build/ goes (default: the current folder)")
    b.add_argument("--allow-missing", action="store_true", help="build even if a table has no run")
    b.add_argument("--builder", default="html", help="html (default) | singlehtml")
    b.set_defaults(func=_cmd_book)
