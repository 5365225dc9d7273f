"""`stm book`: the Jupyter Book rendered from what `runs/` holds, with no training and no notebook
execution (seconds, not the hours the runs took).

1. For each table (and Figure 1) pick the published run: `full` over `proxy` over `smoke`, among
   the `runs/<name>/<profile>/results.json` that parse as a `Result`.
2. Stage a book source folder (`<out>/_build/src`, rebuilt every time): the hand-written pages
   of `book/`, one page per table written by `report.page` (a pure function of the result), its
   figures re-drawn from the result by `report.figures`, the run's files (results.json, CSV,
   executed notebook, stored figures) next to it for download, the status page and `_toc.yml`.
3. `jupyter-book build <staged> -W -n --keep-going` into `<out>/_build/html`.

Nothing tracked is rewritten: a book build leaves `git status` clean.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from stm_lib.book import report
from stm_lib.book.result import Result, SchemaError
from stm_lib.book.tables import TABLES

ROOT = Path(__file__).resolve().parents[2]
PREFERENCE = ("full", "proxy", "smoke")   # which profile a page shows when several exist
HAND_WRITTEN = ("intro.md", "method.md", "own-ablation.md", "relatives.md")


class BookError(ValueError):
    """A results.json the book cannot use; the message names the file."""


def page_name(table: str) -> str:
    """"5" -> "table5": the page's, the notebook's and the runs/ folder's name."""
    return TABLES[table].notebook


def _chapter(table: str) -> bool:
    """A chapter of the book's own (beyond the paper's tables): listed apart, never required."""
    return TABLES[table].chapter


def load_results(runs: Path) -> dict[str, dict[str, tuple[Result, Path]]]:
    """{table id: {profile: (result, run folder)}} for every complete run under `runs`."""
    out: dict[str, dict[str, tuple[Result, Path]]] = {}
    for t in TABLES:
        base = runs / page_name(t)
        for d in sorted(base.glob("*")) if base.is_dir() else []:
            res = d / "results.json"
            if d.name.startswith(".") or not res.is_file():
                continue
            try:
                out.setdefault(t, {})[d.name] = (Result.from_json(res.read_text(), str(res)), d)
            except SchemaError as e:   # names the file and the field
                raise BookError(str(e)) from None
            except (ValueError, KeyError, TypeError) as e:
                raise BookError(f"{res}: not a results file this book can read ({e})") from None
    return out


def published(results: dict[str, dict[str, tuple[Result, Path]]]) -> dict[str, str]:
    """{table id: profile shown in the book}."""
    return {t: next(p for p in PREFERENCE if p in profs) for t, profs in results.items()
            if any(p in profs for p in PREFERENCE)}


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _plain_file(p: Path, folder: Path) -> bool:
    """A regular file (not a link) directly in `folder`, with a plain name (it goes into a
    `{download}` link): what a page may copy. A link in runs/ is never followed."""
    return (not p.is_symlink() and p.is_file() and _SAFE_NAME.fullmatch(p.name) is not None
            and p.resolve().parent == folder.resolve())


def _copy_run_files(run: Path, dest: Path) -> dict[str, str]:
    """The run's own files, copied beside the page so `{download}` links resolve in the HTML;
    returns {label: path relative to the page}."""
    dest.mkdir(parents=True, exist_ok=True)
    files = {}
    if run.is_symlink() or run.parent.is_symlink():   # a linked run folder: its files are not runs/'s
        return files
    for p in sorted(run.iterdir()):
        if _plain_file(p, run) and p.suffix in (".json", ".csv", ".ipynb"):
            shutil.copyfile(p, dest / p.name, follow_symlinks=False)
            files[p.name] = f"{dest.parent.name}/{dest.name}/{p.name}"
    figs = run / "figures"
    for p in sorted(figs.glob("*.png")) if figs.is_dir() and not figs.is_symlink() else []:
        if not _plain_file(p, figs):
            continue
        (dest / "figures").mkdir(exist_ok=True)
        shutil.copyfile(p, dest / "figures" / p.name, follow_symlinks=False)
        files[f"figures/{p.name}"] = f"{dest.parent.name}/{dest.name}/figures/{p.name}"
    return files


def stage(runs: Path, src: Path, results, chosen: dict[str, str]) -> Path:
    """Write the complete book source into `src` (emptied first)."""
    if src.exists():
        shutil.rmtree(src)
    (src / "book").mkdir(parents=True)
    shutil.copy2(ROOT / "_config.yml", src / "_config.yml")
    for name in HAND_WRITTEN:
        if (ROOT / "book" / name).is_file():
            shutil.copy2(ROOT / "book" / name, src / "book" / name)
    for folder in ("assets", "_static"):
        if (ROOT / "book" / folder).is_dir():
            shutil.copytree(ROOT / "book" / folder, src / "book" / folder)
    pages = src / "tables"
    (pages / "figures").mkdir(parents=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benches = []   # `stm bench` results, one per device, shown on the speed table's page
    for res in sorted(runs.glob("bench/*/*.json")):   # every `stm bench` file (schema stm-bench/*)
        if not _plain_file(res, res.parent) or res.parent.is_symlink():
            continue
        try:
            bench = json.loads(res.read_text())
        except ValueError as e:
            raise BookError(f"{res}: not valid JSON ({e})") from None
        if not isinstance(bench, dict) or not str(bench.get("schema", "")).startswith("stm-bench/"):
            continue   # other measurements kept beside them (stm profile ratios)
        dest = pages / "files" / "bench" / res.parent.name
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(res, dest / res.name)
        benches.append((bench, f"files/bench/{res.parent.name}/{res.name}"))
    for t, profile in chosen.items():
        result, run = results[t][profile]
        name = page_name(t)
        files = _copy_run_files(run, pages / "files" / name)
        figs = []
        for fig_name, fig in report.figures(result, TABLES[t]).items():
            path = pages / "figures" / f"{name}-{fig_name}.png"
            fig.savefig(path, dpi=110, bbox_inches="tight")
            plt.close(fig)
            figs.append(f"figures/{path.name}")
        others = sorted(p for p in results[t] if p != profile)
        text = report.page(result, TABLES[t], figures=figs, files=files, other_profiles=others,
                           runs_path=f"runs/{name}/{profile}", benches=benches)
        (pages / f"{name}.md").write_text(text)
    (src / "book" / "status.md").write_text(
        report.status_page({t: {p: r for p, (r, _) in profs.items()} for t, profs in results.items()}, chosen))
    _write_toc(src, chosen)
    return src


def _write_toc(src: Path, chosen: dict[str, str]) -> None:
    lines = ["# Written by `stm book` (stm_lib/book/build.py) into the staged source; not tracked.",
             "format: jb-book", "root: book/intro", "parts:",
             "  - caption: The method", "    chapters:", "      - file: book/method",
             "  - caption: The paper's tables, reproduced", "    chapters:"]
    lines += [f"      - file: tables/{page_name(t)}" for t in TABLES if t in chosen and not _chapter(t)]
    extra = [t for t in TABLES if t in chosen and _chapter(t)]
    if extra:
        lines += ["  - caption: Beyond the paper", "    chapters:"]
        lines += [f"      - file: tables/{page_name(t)}" for t in extra]
    lines += ["  - caption: Your turn and the summary", "    chapters:", "      - file: book/own-ablation",
              "      - file: book/status"]
    (src / "_toc.yml").write_text("\n".join(lines) + "\n")


def build(runs: str | Path = "runs", out: str | Path = ".", allow_missing: bool = False,
          builder: str = "html") -> int:
    """Stage and build; returns the exit code (0 = built). The HTML lands in `<out>/_build/<builder>`."""
    t0 = time.time()
    out = Path(out).resolve()
    runs = Path(runs) if Path(runs).is_absolute() else (Path.cwd() / runs)
    try:
        results = load_results(runs.resolve())
    except BookError as e:
        print(f"stm book: error: {e}", file=sys.stderr)
        return 2
    chosen = published(results)
    missing = [page_name(t) for t in TABLES if t not in chosen and not _chapter(t)]
    if missing and not allow_missing:
        print(f"stm book: error: no complete run for {', '.join(missing)} under {runs}; run e.g. "
              f"`make reproduce TABLE={missing[0].removeprefix('table')} PROFILE=smoke` (or pass --allow-missing)",
              file=sys.stderr)
        return 2
    try:
        src = stage(runs.resolve(), out / "_build" / "src", results, chosen)
    except BookError as e:
        print(f"stm book: error: {e}", file=sys.stderr)
        return 2
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb if jb.exists() else "jupyter-book"), "build", str(src), "--path-output", str(out), "-W", "-n",
           "--keep-going", "--builder", builder]
    print("$", " ".join(cmd), flush=True)
    env = {**os.environ, "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    rc = subprocess.run(cmd, cwd=out, env=env).returncode
    if rc == 0:
        print(f"book: {out / '_build' / builder / 'index.html'} ({time.time() - t0:.0f} s)")
    return rc
