"""`stm book`: the Jupyter Book from what `runs/` holds, without training anything.

1. For each table (and Figure 1) pick the published run: `proxy` if it holds a complete
   results.json, else `smoke` (a `full` run, when someone has the data and GPUs, wins over both).
2. Write `_toc.yml` listing those executed notebooks, and `book/status.md` summarising every
   results.json under runs/, so the status page never drifts from the results.
3. `jupyter-book build . -W -n --keep-going` (execute_notebooks: off in _config.yml).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from stm_lib.book.experiments import TABLES, notebook_name
from stm_lib.book.paper import CAPTIONS

ROOT = Path(__file__).resolve().parents[2]
PREFERENCE = ("full", "proxy", "smoke")   # which profile a page shows when several exist

TITLES = {
    "1": "Something-Something v1 and v2", "2": "Jester", "3": "Kinetics-400", "4": "UCF-101 and HMDB-51",
    "5": "Impact of CSTM and CMM", "6": "Fusion of the two modules", "7": "Location and number of STM blocks",
    "8": "Channel-wise vs ordinary temporal conv", "9": "Runtime and complexity", "figure1": "Feature maps vs optical flow",
}


def load_results(runs: Path) -> dict[str, dict[str, dict]]:
    """{notebook name: {profile: results.json content}} for every complete run under `runs`."""
    out: dict[str, dict[str, dict]] = {}
    for t in TABLES:
        name = notebook_name(t)
        for prof_dir in sorted((runs / name).glob("*")) if (runs / name).is_dir() else []:
            res = prof_dir / "results.json"
            if prof_dir.name.startswith(".") or not res.is_file() or not (prof_dir / f"{name}.ipynb").is_file():
                continue
            try:
                out.setdefault(name, {})[prof_dir.name] = json.loads(res.read_text())
            except ValueError:
                continue
    return out


def published(results: dict[str, dict[str, dict]]) -> dict[str, str]:
    """{notebook name: profile shown in the book}."""
    return {name: next(p for p in PREFERENCE if p in profs) for name, profs in results.items()
            if any(p in profs for p in PREFERENCE)}


def write_toc(root: Path, runs: Path, chosen: dict[str, str]) -> Path:
    rel = os.path.relpath(runs, root)
    lines = ["# Written by `stm book` from what runs/ holds (proxy where committed, else smoke); do not edit.",
             "format: jb-book", "root: book/intro", "parts:",
             "  - caption: The method", "    chapters:", "      - file: book/method",
             "  - caption: The paper's tables, reproduced", "    chapters:"]
    for t in TABLES:
        name = notebook_name(t)
        if name in chosen:
            lines.append(f"      - file: {rel}/{name}/{chosen[name]}/{name}")
    lines += ["  - caption: Your turn and the summary", "    chapters:", "      - file: book/own-ablation",
              "      - file: book/status"]
    path = root / "_toc.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _fmt(v, digits=1):
    return "—" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def status_markdown(results: dict[str, dict[str, dict]], chosen: dict[str, str], runs_rel: str) -> str:
    """The reproduction-status page: one section per table, every run found, every row's status."""
    out = ["# Reproduction status", "",
           "Written by `stm book` from every `results.json` under `runs/` (nothing on this page is typed by "
           "hand). *exact*: measured at the paper's own setting and equal at its printed precision; *proxy* / "
           "*smoke*: trained here on an embedded synthetic proxy at CPU scale, never the paper's number; "
           "*full*: the paper's settings on the real data; *not run*: with the reason.", ""]
    counts: dict[str, int] = {}
    summary = ["| table | published run | runs found | rows measured | rows not run | measured top-1 (%) "
               "| the paper's orderings here |", "| --- | --- | --- | --- | --- | --- | --- |"]
    sections = []
    for t in TABLES:
        name = notebook_name(t)
        label = "Figure 1" if t == "figure1" else f"Table {t}"
        profs = results.get(name, {})
        if not profs:
            summary.append(f"| {label} | not run | — | — | — | — | — |")
            continue
        pub = chosen[name]
        doc = profs[pub]
        rows = doc.get("rows", [])
        measured = [r for r in rows if not str(r.get("status", "")).startswith("not run")]
        not_run = [r for r in rows if str(r.get("status", "")).startswith("not run")]
        for r in rows:
            key = str(r.get("status", "")).split(";")[-1].strip().split(" (")[0].removeprefix("top-1: ") or "—"
            counts[key] = counts.get(key, 0) + 1
        seen = _orderings(doc)
        accs = [r[k] for r in rows for k in ("top1", "top1_ucf101", "top1_hmdb51") if r.get(k) is not None]
        span = f"{min(accs):.1f} to {max(accs):.1f}" if accs else "—"
        summary.append(f"| {label} | [{pub}]({runs_rel}/{name}/{pub}/{name}.ipynb) | {', '.join(sorted(profs))} | "
                       f"{len(measured)} | {len(not_run)} | {span} | {seen} |")
        sec = [f"## {label}: {TITLES[t]}", ""]
        if t in CAPTIONS:
            sec += [f"> {CAPTIONS[t]}", ""]
        for p, d in sorted(profs.items()):
            pv = d.get("provenance", {})
            g = pv.get("git", {})
            sec.append(f"- `{p}` run: commit `{(g.get('commit') or '?')[:10]}`{' (dirty tree)' if g.get('dirty') else ''}"
                       f"{' (the checkout changed during the run)' if pv.get('git_changed_during_run') else ''}, "
                       f"{pv.get('wall_time_s', '?')} s on {pv.get('hardware', {}).get('cpu', '?')}"
                       f"{' + ' + ', '.join(pv['hardware']['gpus']) if pv.get('hardware', {}).get('gpus') else ''}, "
                       f"finished {pv.get('end', '?')}.")
        sec += ["", f"Rows of the published `{pub}` run:", "", "| row | status | paper top-1 | measured top-1 |",
                "| --- | --- | --- | --- |"]
        for r in rows:
            paper = r.get("paper_top1", r.get("paper_top1_ucf101"))
            meas = r.get("top1", r.get("top1_ucf101"))
            if t == "figure1":
                paper, meas = None, r.get("corr_with_flow")
            sec.append(f"| {r.get('setting', r.get('id'))} {r.get('frames') or ''} | {r.get('status', '')} | "
                       f"{_fmt(paper)} | {_fmt(meas, 3 if t == 'figure1' else 1)} |")
        sec.append("")
        sections += sec
    tally = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
    flat = [("Figure 1" if n == "figure1" else f"Table {n.removeprefix('table')}") for n, p in chosen.items()
            if p == "proxy" and _at_chance(results[n][p])]
    out += ["## Summary", "", *summary, "", f"Row statuses over the published runs: {tally}.", ""]
    if flat:
        out += [f"**At chance:** in the published proxy runs of {', '.join(flat)}, every trained model is within two "
                "standard errors of chance: the proxy task was not learned at that budget, so those runs cannot "
                "order the models (their pages say so).", ""]
    out += ["Every accuracy marked *proxy* or *smoke* comes from a synthetic dataset at CPU scale and is not "
            "comparable in value with the paper's; only orderings are compared, and each table page checks them "
            "against the validation set's sampling noise. No table was run at the *full* profile here: that "
            "needs the datasets (Something-Something, Jester, Kinetics-400, UCF-101, HMDB-51) and GPUs.", "",
            *sections]
    return "\n".join(out) + "\n"


def _at_chance(doc: dict) -> bool:
    """Every measured top-1 of a proxy run within two binomial standard errors of chance."""
    from stm_lib.book.experiments import at_chance

    classes = ((doc.get("settings") or {}).get("proxy") or {}).get("proxy_classes")
    vals = [(r["top1"], r.get("n_val") or 0) for r in doc.get("rows", []) if r.get("top1") is not None]
    if not classes or not vals:
        return False
    chance = 100.0 / classes
    return all(n and at_chance(v, n, chance) for v, n in vals)


def _orderings(doc: dict) -> str:
    """How the paper's orderings fare in this run (verdicts at two standard errors, see
    experiments.verdict)."""
    from stm_lib.book.experiments import verdict

    by_id = {r.get("id"): r for r in doc.get("rows", [])}
    claims = []
    for c in doc.get("claims") or []:
        if "verdict" not in c:   # results written before verdicts were stored: recompute from the rows
            ra, rb, key = by_id.get(c.get("better")), by_id.get(c.get("worse")), c.get("metric", "top1")
            c = {**c, "verdict": verdict(ra, rb, key)[3] if ra and rb and None not in (ra.get(key), rb.get(key))
                 else "not measured"}
        if c["verdict"] in ("holds", "reversed", "noise"):
            claims.append(c)
    if not claims:
        return "—"
    n = {k: sum(1 for c in claims if c["verdict"] == k) for k in ("holds", "noise", "reversed")}
    return f"{n['holds']} of {len(claims)} hold" + (f", {n['noise']} within noise" if n["noise"] else "") + \
        (f", {n['reversed']} reversed" if n["reversed"] else "")


def build(runs: str | Path = "runs", root: str | Path = ".", allow_missing: bool = False,
          builder: str = "html") -> int:
    root = Path(root).resolve()
    runs = (root / runs).resolve() if not Path(runs).is_absolute() else Path(runs)
    results = load_results(runs)
    chosen = published(results)
    missing = [notebook_name(t) for t in TABLES if notebook_name(t) not in chosen]
    if missing and not allow_missing:
        print(f"stm book: error: no complete run for {', '.join(missing)} under {runs}; run e.g. "
              f"`make reproduce TABLE={missing[0].removeprefix('table')} PROFILE=smoke` (or pass --allow-missing)",
              file=sys.stderr)
        return 2
    write_toc(root, runs, chosen)
    rel = os.path.relpath(runs, root / "book")
    (root / "book" / "status.md").write_text(status_markdown(results, chosen, rel))
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb if jb.exists() else "jupyter-book"), "build", str(root), "-W", "-n", "--keep-going",
           "--builder", builder]
    print("$", " ".join(cmd), flush=True)
    rc = subprocess.run(cmd, cwd=root).returncode
    if rc == 0:
        print(f"book: {root / '_build' / builder / 'index.html'}")
    return rc
