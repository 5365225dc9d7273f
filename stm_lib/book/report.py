"""Reports are pure functions of a `Result`: the side-by-side table, the figures, the commentary
and the whole book page. The notebooks call them after a run; `stm book` calls them on a
`results.json` read back from `runs/`, so a page re-renders without training anything.

Nothing here types a measured number: values come from the result, the paper's from `paper.py`
(through the result), verdicts from `stats.compare` (stored in the result's claims).
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

from stm_lib.book import evidence, stats
from stm_lib.book.paper import paper_rows
from stm_lib.book.result import Result, Row
from stm_lib.book.tables import DATASETS, PROFILES, Table

ROOT = Path(__file__).resolve().parents[2]

# STM's videos/s on a GTX 1080 Ti (paper Table 9, paper.py): the GPU-hour yardstick
PAPER_SPEED = {r["frames"]: r["paper_videos_per_s"] for r in paper_rows("9") if r["model"] == "stm"}
TRAIN_COST = 3                      # a training step costs about 3 forward passes (forward + backward)
IMAGENET_FILE = "resnet50-0676ba61.pth"   # torchvision's IMAGENET1K_V1 ResNet-50, the weights TSN/TSM/STM used

VERDICT_WORDS = {"holds": "holds", "reversed": "reversed", "not resolved": "not resolved",
                 "uninformative": "uninformative"}
WHY = {
    "ceiling": "both sides are at the ceiling (>= {ceiling:g}%), so the proxy leaves no room for an ordering",
    "chance": "both means are within 2 binomial SEs of chance ({chance:.3g}%): the proxy was not learned by either",
    "one seed": "one seed per row: without a seed spread no difference can be judged",
    "no spread": "no spread at all over seeds: Welch's test is undefined",
    "welch": "Welch's t-test, Holm-adjusted",
    "not measured": "not measured in this run",
}


# ---- stored strings as text -------------------------------------------------------------------

_LINES = re.compile(r"[\r\n\t\v\f\x85\u2028\u2029]+")
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]|~$])")        # inline markup, roles, math, table cells
_MD_LEAD = re.compile(r"^(\s*|\s*\d+(?=[.)]))([#+=:%!.)-])")      # what opens a block at the start of a line


def text(v) -> str:
    """Any value read from a results.json as inert text in MyST Markdown: newlines collapsed,
    `& < >` as HTML entities, every Markdown / MyST special (backticks, braces, brackets, `|`,
    `*`, `_`, `$`, `~`) backslash-escaped, and so is a block opener at its start (`#`, `:::`, `-`,
    `%`, `1.`), so no stored string can open a role, a directive, a fence, a link, math or raw HTML
    on a page. Plain words, digits, dots and parentheses stay as they were."""
    s = _LINES.sub(" ", str(v))
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_LEAD.sub(lambda m: m.group(1) + "\\" + m.group(2), _MD_SPECIAL.sub(r"\\\1", s))


def code(v) -> str:
    """A stored value as an inline code span (the page's look for settings and commands): the
    fence is one backtick longer than any run of backticks inside, so the value cannot close it;
    a code span's content is never Markdown and its HTML is escaped by the renderer."""
    s = _LINES.sub(" ", str(v))
    fence = "`" * (max((len(m) for m in re.findall(r"`+", s)), default=0) + 1)
    pad = " " if s.startswith("`") or s.endswith("`") or not s.strip() else ""
    return f"{fence}{pad}{s}{pad}{fence}"


_text = text   # for functions whose local `text` is the paragraph they build


def _fmt_num(x, spec: str, scale: float = 1.0, suffix: str = "") -> str:
    """A stored number formatted by `spec`, or "—" for anything that is not a finite number."""
    return format(x * scale, spec) + suffix if stats.finite(x) else "—"


# ---- numbers as text --------------------------------------------------------------------------

def _fmt(metric: str, v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if metric == "params_m":
        return f"{v:.2f}"
    if metric == "flops_g":
        return f"{v:.3f}" if v < 100 else f"{v:.1f}"
    if metric == "videos_per_s":
        return f"{v:.3g}"
    if metric.startswith("ratio"):
        return f"{v:.2f}"
    if metric.startswith("corr"):
        return f"{v:.3f}"
    return f"{v:.1f}"


def measured_text(row: Row, metric: str) -> str:
    """Mean over seeds, with the sample std when there are two seeds or more."""
    if metric in ("ratio_vs_tsm", "ratio_vs_tsn"):
        return _fmt(metric, getattr(row.speed, metric) if row.speed else None)
    v = row.value(metric)
    s = row.std(metric)
    text = _fmt(metric, v)
    if s is not None:
        text += f" ± {_fmt(metric, s)}"
    if metric in ("params_m", "flops_g") and row.exact(metric):
        text += "\u00a0✓"
    return text


def _num_classes(result: Result, table: Table, metric: str) -> int | None:
    part = next((p.name for p in (*table.parts, *((table.pretrain,) if table.pretrain else ()))
                 if p.metric == metric.replace("top5", "top1")), "")
    try:
        return table.num_classes(result.profile, part)
    except (KeyError, ValueError):
        return None


def hidden_columns(result: Result, table: Table) -> dict[str, str]:
    """Measured columns a page leaves out, with the reason: top-5 where the data has so few
    classes that top-5 is near-trivial (a 10-class proxy: top-5 is half the classes)."""
    out = {}
    for key, _ in table.columns:
        if key.startswith("top5"):
            n = _num_classes(result, table, key)
            if n is not None and n <= 10:
                out[key] = (f"measured top-5 is not shown: the {text(result.profile)} data has {n} classes, so top-5 "
                            f"covers {min(100, round(500 / n))}% of them and says little")
    return out


# ---- the side-by-side table -------------------------------------------------------------------

def _status_badge(row: Row, notes: dict[str, int]) -> str:
    label = {"not_run": "not run"}.get(row.status, row.status)
    if row.reason:
        n = notes.setdefault(row.reason, len(notes) + 1)
        label += f" [{n}]"
    return label


def table_rows(result: Result, table: Table) -> tuple[list[str], list[list[str]], dict[str, int]]:
    """(headers, cells, footnotes {reason: number}) of the page's table."""
    hidden = hidden_columns(result, table)
    cols = [(k, h) for k, h in table.columns if k not in hidden]
    seeds = len(result.seeds)
    notes: dict[str, int] = {}
    headers = []
    for k, h in cols:
        if not k.startswith("paper:") and k in result.metrics() and seeds > 1:
            h += f" (mean ± std, {seeds} seeds)"
        headers.append(h)
    cells = []
    for r in result.rows:
        line = []
        for k, _ in cols:
            if k.startswith("paper:"):
                line.append(r.paper.get(k.split(":", 1)[1]) or "—")
            elif k == "status":
                line.append(_status_badge(r, notes))
            elif k in ("setting",):
                line.append(r.setting)
            elif k == "frames":
                line.append("—" if r.frames is None else str(r.frames))
            elif k == "run_frames":
                line.append("—" if r.run_frames is None else str(r.run_frames))
            elif k in r.info:
                line.append("—" if r.info[k] is None else str(r.info[k]))
            else:
                line.append(measured_text(r, k))
        cells.append(line)
    # failed runs (stats.FAILURE_RULE), one column per trained accuracy, before the status
    for m in [m for m in table.metrics if any(m in r.seeds for r in result.rows)]:
        at = headers.index("status") if "status" in headers else len(headers)
        headers.insert(at, "failed runs (95% CI)" + (f", {m.removeprefix('top1_')}" if m != "top1" else ""))
        for r, line in zip(result.rows, cells):
            f = r.failures(m, result.chance.get(m))
            line.insert(at, "—" if f is None else f"{f['k']} of {f['n']} ({100 * f['ci'][0]:.0f}-{100 * f['ci'][1]:.0f}%)")
    return headers, cells, notes


def table_frame(result: Result, table: Table):
    """The side-by-side table as a DataFrame (what a notebook displays)."""
    import pandas as pd

    headers, cells, _ = table_rows(result, table)
    return pd.DataFrame(cells, columns=headers)


def table_markdown(result: Result, table: Table) -> str:
    headers, cells, notes = table_rows(result, table)
    esc = [[text(c) for c in line] for line in cells]   # every cell may hold a stored string
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(line) + " |" for line in esc]
    foot = [f"[{n}] {text(reason)}" for reason, n in notes.items()]
    extra = list(hidden_columns(result, table).values())
    if any(r.complexity for r in result.rows):
        extra.append("✓: equal to the paper's figure at the precision the paper printed")
    out = "\n".join(lines)
    if foot or extra:
        out += "\n\n" + "  \n".join(foot + extra)
    return out


# ---- figures ----------------------------------------------------------------------------------

def _label(r: Row) -> str:
    f = r.run_frames or r.frames
    return f"{r.setting} {f}F" if f and r.model else r.setting


def figures(result: Result, table: Table) -> dict:
    """{name: matplotlib Figure} re-drawn from the result alone."""
    out = {}
    for metric in [m for m in table.metrics if any(m in r.seeds for r in result.rows)]:
        out[f"bars-{metric}" if metric != "top1" else "bars"] = _bars(result, metric)
    if any(s.val_top1 for r in result.rows for s in r.runs):
        out["curves"] = _curves(result)
    if table.speed and any(r.speed for r in result.rows):
        out["tradeoff" if table.tradeoff else "speed"] = _tradeoff(result, table) if table.tradeoff else _speed(result)
    for name, fig in out.items():
        fig.set_label(name)          # runner.save names the file after it
    return out


def _bars(result: Result, metric: str):
    import matplotlib.pyplot as plt

    shown = [r for r in result.rows if metric in r.seeds or (r.model and r.paper.get(metric))]
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.45 * len(shown) + 1.6), sharey=True)
    ys = range(len(shown))
    paper = [r.paper_value(metric) for r in shown]
    axes[0].barh(ys, [v or 0 for v in paper], color="#8c8c8c")
    meas = [r.value(metric) for r in shown]
    err = [r.std(metric) or 0 for r in shown]
    axes[1].barh(ys, [v or 0 for v in meas], xerr=err, color="#1f77b4", capsize=3)
    for ax, vals, none in ((axes[0], paper, "not in the paper's table"), (axes[1], meas, "not run")):
        for i, v in enumerate(vals):
            ax.text((v or 0) + 1, i, none if v is None else f"{v:.1f}", va="center", fontsize=8)
        ax.set_xlim(0, 108)
    chance = result.chance.get(metric)
    if chance is not None:
        axes[1].axvline(chance, color="#d62728", ls="--", lw=1, label=f"chance {chance:.3g}%")
        axes[1].legend(fontsize=8, loc="lower right")
    n = len(result.seeds)
    axes[0].set_title(f"paper, {metric.replace('_', ' ')} (%)")
    axes[1].set_title(f"measured ({result.profile}), mean" + (f" ± std over {n} seeds" if n > 1 else ", 1 seed"))
    axes[0].set_yticks(list(ys), [_label(r) for r in shown])
    axes[0].invert_yaxis()
    fig.tight_layout()
    return fig


def _curves(result: Result):
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, r in enumerate(result.rows):
        for part in dict.fromkeys(s.part for s in r.runs):
            runs = [s for s in r.curves(part) if s.val_top1]
            if not runs:
                continue
            colour = f"C{i % 10}"
            label = _label(r) + (f" ({part})" if part else "")
            for k, s in enumerate(runs):
                ep = range(1, len(s.val_top1) + 1)
                a1.plot(ep, s.val_top1, color=colour, lw=1, alpha=0.8, label=label if k == 0 else None,
                        ls="-" if part in ("", "ucf101") else "--")
                if s.train_loss:
                    a2.plot(range(1, len(s.train_loss) + 1), s.train_loss, color=colour, lw=1, alpha=0.8,
                            label=label if k == 0 else None)
    chance = result.chance.get("top1")
    if chance is not None:
        a1.axhline(chance, color="#d62728", ls="--", lw=1, label=f"chance {chance:.3g}%")
    a1.set(xlabel="epoch", ylabel="val top-1 (%)", title=f"validation top-1, every seed ({result.profile})")
    a2.set(xlabel="epoch", ylabel="loss", title="training loss")
    a1.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def _tradeoff(result: Result, table: Table):
    """Accuracy against cost: one point per model (mean, error bar = std over seeds), per part
    (rows of the figure) against FLOPs and against measured videos/s (columns)."""
    import matplotlib.pyplot as plt

    parts = [p for p in table.parts if any(p.metric in r.seeds for r in result.rows)] or list(table.parts)
    fig, axes = plt.subplots(len(parts), 2, figsize=(10, 3.6 * len(parts)), squeeze=False)
    rows = [r for r in result.rows if r.model and not r.reference]
    sp = result.extra.get("speed_setting") or {}
    where = f"{sp.get('device', '?')}, batch {sp.get('batch_size', '?')}, {sp.get('input_size', '?')} px"
    for (ax_f, ax_s), part in zip(axes, parts):
        for ax, cost, xlabel in ((ax_f, "flops_g", "GFLOPs per clip (8 frames, 224 px, exact)"),
                                 (ax_s, "videos_per_s", f"videos/s ({where})")):
            for i, r in enumerate(rows):
                x, y = r.value(cost), r.value(part.metric)
                if x is None or y is None:
                    continue
                ax.errorbar([x], [y], yerr=[r.std(part.metric) or 0], fmt="o", color=f"C{i % 10}", capsize=3)
                ax.annotate(r.setting, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
            chance = result.chance.get(part.metric)
            if chance is not None:
                ax.axhline(chance, color="#d62728", ls="--", lw=1, label=f"chance {chance:.3g}%")
                ax.legend(fontsize=7, loc="lower right")
            ax.set(xlabel=xlabel, ylabel=f"{part.name} proxy top-1 (%)", title=f"{part.name} proxy: accuracy vs "
                   + ("FLOPs" if cost == "flops_g" else "speed"))
    fig.tight_layout()
    return fig


def _speed(result: Result):
    import matplotlib.pyplot as plt

    rows = [r for r in result.rows if r.speed]
    by = {(r.model, r.run_frames or r.frames): r for r in rows}
    fig, ax = plt.subplots(figsize=(8, 3.6))
    xs = range(len(rows))
    meas = [r.speed.ratio_vs_tsm or 0 for r in rows]
    paper = []
    for r in rows:
        tsm = by.get(("tsm", r.run_frames or r.frames))
        p, q = r.paper_value("videos_per_s"), tsm.paper_value("videos_per_s") if tsm else None
        paper.append(p / q if p and q else 0)
    ax.bar([x - 0.2 for x in xs], paper, 0.4, color="#8c8c8c", label="paper (GTX 1080 Ti)")
    ax.bar([x + 0.2 for x in xs], meas, 0.4, color="#1f77b4", label=f"measured ({rows[0].speed.device})")
    ax.set_xticks(list(xs), [_label(r) for r in rows], rotation=20)
    ax.axhline(1.0, color="k", lw=0.5)
    ax.set(ylabel="videos/s relative to TSM", title="inference speed relative to TSM (same frames)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ---- commentary -------------------------------------------------------------------------------

def _p(p: float | None) -> str:
    return "—" if p is None else f"{p:.2g}" if p >= 0.001 else "< 0.001"


def commentary(result: Result, table: Table) -> str:
    """One line per ordering the paper claims: the paper's numbers, the measured means and the
    verdict, word for word as stored in the result (stats.compare)."""
    by = {r.id: r for r in result.rows}
    lines = []
    for c in result.claims:
        a, b = by.get(c.better), by.get(c.worse)
        name = f"**{_text(_label(a) if a else c.better)} > {_text(_label(b) if b else c.worse)}**"
        paper = (f"paper {_text(c.paper[0])} vs {_text(c.paper[1])}" if None not in c.paper
                 else "claimed in its seed paper" if table.chapter else "an ordering stated in the paper's text")
        metric = _text(c.metric.replace("_", " "))
        if c.why == "not measured" or None in c.measured:
            lines.append(f"- {name} on {metric} ({paper}): not measured in this run.")
            continue
        sa = a.std(c.metric) if a else None
        sb = b.std(c.metric) if b else None
        meas = (f"{c.measured[0]:.1f}" + (f" ± {sa:.1f}" if sa is not None else "") + " vs "
                + f"{c.measured[1]:.1f}" + (f" ± {sb:.1f}" if sb is not None else ""))
        why = WHY.get(c.why, "")
        if c.why == "chance":
            why = why.replace("{chance:.3g}", f"{c.chance or 0:.3g}")
        elif c.why == "ceiling":
            why = why.replace("{ceiling:g}", f"{stats.CEILING:g}")
        test = ""
        if c.p is not None:
            test = (f" (95% CI {c.ci[0]:+.1f} to {c.ci[1]:+.1f}; Welch t, df {c.df:.1f}, p = {_p(c.p)}, "
                    f"Holm-adjusted p = {_p(c.p_adj)}; minimum detectable difference at 80% power "
                    f"{c.mdd:.1f} points)" if c.mdd is not None else "")
        mixed = ""
        if c.devices and len({d for side in c.devices for d in side}) > 1:
            mixed = f" Runs of more than one device: {_text(' / '.join(', '.join(map(str, s)) for s in c.devices))}."
        lines.append(f"- {name} on {metric} ({paper}). Measured ({_text(result.profile)}, {min(c.n_seeds)} seed"
                     f"{'s' if min(c.n_seeds) != 1 else ''} per row) {meas}: difference {c.diff:+.1f}{test}. "
                     f"Verdict: **{VERDICT_WORDS[c.verdict]}** ({why}).{mixed}")
    if not lines:
        return "No ordering of the paper's is checked in this run."
    counts = {v: sum(c.verdict == v for c in result.claims) for v in VERDICT_WORDS}
    summary = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    text = "\n".join(lines) + f"\n\nOver the {len(result.claims)} orderings: {summary}."
    if result.profile == "smoke":
        text += (" This is the **smoke** profile (one short epoch on a few dozen tiny clips): the verdicts are about "
                 f"noise, not about STM. `make reproduce TABLE={table.id}` gives proxy numbers.")
    elif result.profile == "proxy":
        text += (f" Proxy verdicts are about a small synthetic stand-in for {table.real_name} at CPU scale; a "
                 "verdict there says what this proxy shows, not what the paper's dataset would.")
    return text


def cost_readings(result: Result) -> str:
    """The seed papers' cost claims, read off the exact counts (224 px, 174 classes, 8 frames) and
    the measured speed of this result: STSM adds no parameters or FLOPs to TSN; STH has fewer
    parameters than ResNet-50 (TSN); what the two-stream ST-ResNet pays, optical flow included."""
    by = {r.model: r for r in result.rows if r.model and not r.reference}
    tsn = by.get("tsn")

    def cmp(r, metric):
        a, b = (r.value(metric) if r else None), (tsn.value(metric) if tsn else None)
        return None if a is None or b is None else (a, b)

    lines = []
    p, f = cmp(by.get("stsm"), "params_m"), cmp(by.get("stsm"), "flops_g")
    if p and f:
        same = by["stsm"].complexity.params == tsn.complexity.params and by["stsm"].complexity.flops == tsn.complexity.flops
        lines.append(f"- **STSM adds no parameters or FLOPs** (seed 002): {p[0]:.2f} M vs TSN {p[1]:.2f} M, "
                     f"{f[0]:.2f} G vs {f[1]:.2f} G: **{'holds exactly' if same else 'does not hold'}** (counts).")
    p = cmp(by.get("sth"), "params_m")
    if p:
        lines.append(f"- **STH has fewer parameters than a 2D ResNet-50** (seed 004): {p[0]:.2f} M vs TSN {p[1]:.2f} M: "
                     f"**{'holds' if p[0] < p[1] else 'does not hold'}** ({100 * (p[0] / p[1] - 1):+.1f}%).")
    two, rgb = by.get("st-resnet"), by.get("st-resnet-rgb")
    if two and rgb and two.complexity and rgb.complexity:
        text = (f"- **What the motion stream costs** (seed 003): the two-stream network has {two.value('params_m'):.2f} M "
                f"parameters and {two.value('flops_g'):.1f} GFLOPs per clip against the RGB stream's "
                f"{rgb.value('params_m'):.2f} M and {rgb.value('flops_g'):.1f} G (x{two.value('flops_g') / rgb.value('flops_g'):.2f})")
        if two.speed and rgb.speed:
            text += f", and runs at {two.speed.videos_per_s / rgb.speed.videos_per_s:.2f}x the RGB stream's videos/s"
        for part, cost in (two.info.get("flow_cost") or {}).items():
            if not isinstance(cost, dict) or not cost:
                continue
            cpu = cost.get("cpu_seconds_per_clip", cost.get("seconds_per_clip"))   # older records: wall = CPU time
            need = (cpu, cost.get("seconds"))
            if not all(stats.finite(x) for x in need):   # a record this code did not write: say nothing from it
                text += f"; the flow cost recorded for the {_text(part)} proxy is not readable"
                continue
            text += (f"; before that, TV-L1 flow cost {cpu:.2f} CPU-seconds per clip on the {_text(part)} proxy "
                     f"({_text(cost.get('fields_per_clip', '?'))} fields at "
                     f"{_text(cost.get('flow_side', cost.get('resolution', '?')))} px, {_text(cost.get('method', '?'))}; "
                     f"{_text(cost.get('clips', '?'))} clips in {cost['seconds']:.0f} s wall with "
                     f"{_text(cost.get('clips_at_a_time', 1))} at a time on {_text(cost.get('cpu_count', '?'))} cores), "
                     "which the speed column does not include")
        lines.append(text + ". This is the cost the STM paper argues against (section 1).")
    for m in ("tsm", "stsm", "sth", "st-resnet-rgb", "st-resnet", "stm"):
        r = by.get(m)
        if r and r.speed and r.speed.ratio_vs_tsn is not None:
            lines.append(f"- {_text(r.setting)}: {r.speed.ratio_vs_tsn:.2f}x TSN's videos/s ({_text(r.speed.device)}).")
    return "\n".join(lines) if lines else "No counts or speeds in this result."


def numbers_say(result: Result, table: Table) -> str:
    """The body of "What the numbers say", one text for the notebook and the book page: a chapter's
    cost claims first (counts and speeds), then every ordering with its verdict."""
    parts = []
    if table.chapter:
        parts += ["The seed papers' cost claims, read off the counts and this run's speeds:", cost_readings(result)]
    parts.append(table.claims_lead or "Each ordering the paper draws from this table, tested on the per-seed "
                 f"values (`stm_lib/book/stats.py`): {result.test} Failed runs: {result.failure_rule}. "
                 f"{result.uninformative_rule[0].upper()}{result.uninformative_rule[1:]}.")
    parts.append(commentary(result, table))
    return "\n\n".join(parts)


# ---- the page -----------------------------------------------------------------------------------

def intro_markdown(table: Table) -> str:
    """The notebook's opening prose (its markdown cells before the first code cell): the page's
    narrative, written once, in the notebook that produces the numbers."""
    nb = ROOT / "book" / f"{table.notebook}.ipynb"
    if not nb.is_file():
        return f"# {table.title}"
    cells = json.loads(nb.read_text()).get("cells", [])
    out = []
    for c in cells:
        if c.get("cell_type") != "markdown":
            break
        out.append("".join(c.get("source", [])))
    return "\n\n".join(out) or f"# {table.title}"


def settings_markdown(result: Result) -> str:
    s = dict(result.settings)
    channels = s.pop("stm_channels", None)
    what = {"smoke": "the **smoke profile**: a tiny run that only shows the pipeline works; its numbers mean "
                     "nothing",
            "proxy": "the **proxy profile**: an embedded synthetic proxy dataset at CPU scale; numbers are proxy "
                     "numbers, never the paper's",
            "full": "the **full profile**: the paper's settings on the real dataset"}.get(result.profile, _text(result.profile))
    keys = ", ".join(f"{_text(k)} {code(v)}" for k, v in s.items() if v not in (None, "", [], {}) and not isinstance(v, dict))
    nested = "; ".join(f"{_text(k)}: " + ", ".join(f"{_text(a)} {code(b)}" for a, b in v.items()) for k, v in s.items()
                       if isinstance(v, dict) and v)
    seeds = result.seeds
    text = f"These numbers come from {what}. "
    if seeds:
        text += f"Training seeds: {_text(', '.join(map(str, seeds)))} ({len(seeds)} per trained row). "
    where = Counter(run.trained_on for r in result.rows for run in r.runs if run.trained_on)
    if where:
        text += "Runs trained on: " + ", ".join(f"{_text(k)} ({n} run{'s' if n != 1 else ''})"
                                                 for k, n in where.most_common()) + ". "
    text += f"Settings: {keys}" + (f"; {nested}" if nested else "") + "."
    if channels:   # models.describe_widths: one dict per stage
        text += (" The STM as trained here, per stage (bottleneck width / block output / CMM channels): "
                 + "; ".join(_text(f"stage {c['stage']} {c['width']} / {c['out_channels']} / {c['cmm_channels']}")
                             for c in channels) + ".")
    if any(run.converged is not None for r in result.rows for run in r.runs):
        rule = result.convergence_rule.removeprefix("converged: ")
        text += f"\n\nConvergence rule: a run has converged when {_text(rule)}. " + _convergence(result)
    return text


def _convergence(result: Result) -> str:
    runs = [s for r in result.rows for s in r.runs if s.converged is not None]
    if not runs:
        return ""
    bad = sorted({text(_label(r)) for r in result.rows for s in r.runs if s.converged is False})
    if not bad:
        return f"All {len(runs)} runs meet it."
    return f"{len(runs) - sum(1 for r in result.rows for s in r.runs if s.converged is False)} of {len(runs)} " \
           f"runs meet it; not converged: {', '.join(bad)}."


def provenance_box(result: Result, files: dict[str, str], runs_path: str) -> str:
    pv = result.provenance or {}
    git = pv.get("git") or {}
    hw = pv.get("hardware") or {}
    versions = pv.get("versions") if isinstance(pv.get("versions"), dict) else {}
    links = " · ".join(f"{{download}}`{label} <{path}>`" for label, path in files.items())
    dirty = ""
    if git.get("dirty") or pv.get("git_changed_during_run"):
        dirty = ("\n\n**Warning:** this run was made from a checkout with uncommitted changes"
                 if git.get("dirty") else "\n\n**Warning:** the checkout changed while this run was going") + \
                ": the commit below does not fully describe the code that produced these numbers."
    gpus = text(", ".join(map(str, hw.get("gpus") or []))) or "no GPU"
    notes = "".join(f"\n\n{text(n)}" for n in result.notes)   # plain text, never Markdown
    return (f":::{{admonition}} Provenance\n:class: note\n\n"
            f"Files of this run (`{runs_path}/`): {links or '—'}{dirty}\n\n"
            f"- commit {code(str(git.get('commit') or '?')[:12])}{' (dirty tree)' if git.get('dirty') else ''}, "
            f"branch {code(git.get('branch') or '?')}\n"
            f"- command {code(pv.get('command', '?'))}\n"
            f"- hardware: {text(hw.get('cpu', '?'))} ({text(hw.get('cpu_count', '?'))} cores), {gpus}\n"
            f"- wall time {text(pv.get('wall_time_s', '?'))} s, finished {text(pv.get('end', '?'))}\n"
            f"- torch {text(versions.get('torch', '?'))}, Python "
            f"{text(versions.get('python', '?'))}\n"
            f"- {_lock_line(versions)}{notes}\n:::")


def _lock_line(versions: dict) -> str:
    """The environment: the lock's file and SHA-256 (stm_lib.provenance.lock_state) and whether the
    installed distributions were exactly its pins."""
    if not versions.get("lock_sha256"):
        return "environment: no lock recorded"
    off = versions.get("lock_mismatch")
    state = ("" if not isinstance(off, list) else ", installed exactly" if not off
             else f", {len(off)} installed distribution{'s' if len(off) > 1 else ''} differing")
    return f"environment: {code(versions.get('lock') or '?')} sha256 {code(versions['lock_sha256'])}{state}"


def real_number_box(table: Table) -> str:
    """What the paper's own number takes: the command, the data, the weights and the GPU time."""
    if table.id == "figure1":
        return ""
    parts = [p for p in table.parts] + ([table.pretrain] if table.pretrain else [])
    datasets = list(dict.fromkeys(p.full_dataset for p in parts))
    trainable = sum(1 for r in table.paper_rows() if r.get("model"))
    hours = []
    for d in datasets:
        f = DATASETS[d]
        per_row = (f["epochs"] * f["train"] * TRAIN_COST / PAPER_SPEED[8]
                   + f["val"] * 30 / PAPER_SPEED[8]) / 3600
        hours.append(f"{f['name']}: about {per_row:.0f} GPU-hours per 8-frame row (twice that at 16 frames)")
    root = "DATA_ROOT=/data" if table.id == "4" else f"DATA_ROOT=/data/{datasets[0]}"
    layout = "\n".join(f"- {DATASETS[d]['name']} ({d}): {DATASETS[d]['layout']}" for d in datasets)
    if table.id == "4":
        layout += "\n- Table 4 expects `DATA_ROOT/kinetics400`, `DATA_ROOT/ucf101` and `DATA_ROOT/hmdb51`."
    full = PROFILES["full"]
    return (f":::{{admonition}} The real number\n:class: tip\n\n"
            f"```bash\nmake reproduce TABLE={table.id} PROFILE=full {root}\n```\n\n"
            f"The data, in the layout it ships in:\n\n{layout}\n\n"
            f"ImageNet weights: torchvision's ResNet-50 `IMAGENET1K_V1` ({IMAGENET_FILE}); offline, put that file "
            f"in `~/.cache/torch/hub/checkpoints/` or set `overrides={{\"model\": {{\"pretrained\": "
            f"\"/path/{IMAGENET_FILE}\"}}}}`. Recipe: {full['epochs']} epochs (25 for UCF-101/HMDB-51 "
            f"fine-tuning), batch 64 at 8 frames and 32 at 16 frames, lr {full['lr']}, 10 clips x 3 crops at test.\n\n"
            f"Cost, estimated from the paper's own speed (STM 8F: {PAPER_SPEED[8]:g} videos/s on a GTX 1080 Ti, "
            f"a training step ~{TRAIN_COST}x a forward pass): " + "; ".join(hours) +
            f". This table trains {trainable} of its rows; a current GPU is several times faster.\n:::")


def bench_section(benches: list[tuple[dict, str]]) -> str:
    """`stm bench` results (runs/bench/<device>/results.json, with their link) beside the paper's
    GTX 1080 Ti figures: videos/s and the ratio to TSN measured in the same run, per device."""
    p8 = {r["model"]: r["paper_videos_per_s"] for r in paper_rows("9") if r["frames"] == 8 and r["model"]}
    paper = (f"the paper (GTX 1080 Ti, batch 16, 8 frames): TSM {p8['tsm']} and STM {p8['stm']} videos/s, "
             f"STM/TSM {p8['stm'] / p8['tsm']:.2f}")
    out = ["## Speed benchmark (`stm bench`)",
           f"Measured by `stm bench`, every model timed in turns in one process, ratios to TSN from the same run; "
           f"{paper}."]
    if not any(b.get("device_type") == "cuda" for b, _ in benches):
        out.append("GPU rows (bf16, channels_last, `torch.compile`, training steps, MFU): **not measured**: no GPU "
                   "was available to the runs committed here.")
    for b, link in benches:
        cols = ["model", "frames", "mode", "precision", "channels_last", "compile", "batch", "videos/s (min-max)",
                "/ TSN", "/ TSN per round (95% CI)", "peak memory", "MFU"]
        lines = [f"**{_text(b.get('device', '?'))}** ({{download}}`results.json <{link}>`). {_text(b.get('note', ''))}",
                 "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in b.get("rows", []) if isinstance(b.get("rows"), list) else []:
            if not isinstance(r, dict):
                continue
            head = " | ".join(_text(r.get(k, "?")) for k in ("model", "frames", "mode", "precision"))
            if r.get("error"):
                lines.append(f"| {head} | {_text(r.get('channels_last'))} | {_text(r.get('compile'))} | "
                             f"{_text(r.get('batch_size'))} | error: {_text(r['error'])} | | | | |")
                continue
            mem = r.get("peak_memory_bytes")
            lines.append(
                f"| {head} | {'yes' if r.get('channels_last') else 'no'} | {'yes' if r.get('compile') else 'no'} | "
                f"{_text(r.get('batch_size', '?'))} | {_fmt_num(r.get('videos_per_s'), '.3g')} "
                f"({_fmt_num(r.get('videos_per_s_min'), '.3g')}-{_fmt_num(r.get('videos_per_s_max'), '.3g')}) | "
                f"{_fmt_num(r.get('ratio_vs_tsn'), '.2f')} | {_paired(r.get('ratio_vs_tsn_paired'))} | "
                + (_fmt_num(mem, ".0f", 1 / 2**20, " MiB") if mem else "—") + " | "
                + _fmt_num(r.get("mfu"), ".1f", 100, "%") + " |")
        out.append("\n".join(lines))
    return "\n\n".join(out)


def _paired(p) -> str:
    """A bench row's per-round ratio to TSN: geometric mean (95% CI), or "—" (older files)."""
    if not isinstance(p, dict):
        return "—"
    ci = p.get("ci95")
    ok = isinstance(ci, list) and len(ci) == 2
    return _fmt_num(p.get("geomean"), ".3f") + (f" ({_fmt_num(ci[0], '.3f')}-{_fmt_num(ci[1], '.3f')})" if ok else "")


def earlier_protocol(result: Result) -> str:
    """A proxy result trained under an earlier protocol than the proxy profile's (another start,
    epoch count or input size, fewer seeds): what the page's reader must know, or ""."""
    if result.profile != "proxy" or not any(r.seeds for r in result.rows):
        return ""
    now, s = PROFILES["proxy"], result.settings or {}
    pretrained = any((sr.config or {}).get("model", {}).get("pretrained") for r in result.rows for sr in r.runs)
    if s.get("epochs") == now["epochs"] and s.get("input_size") == now["input_size"] and pretrained \
            and len(result.seeds) >= now["seeds"]:
        return ""
    return (f"These runs predate the current proxy protocol (issue 27): {len(result.seeds)} seed(s), "
            f"{text(s.get('epochs', '?'))} epochs at {text(s.get('input_size', '?'))} px, "
            f"{'from the shared start' if pretrained else 'from random weights'}, on the proxy of their day. "
            f"The verdicts below are re-derived from their seeds under the current test; "
            f"{code(f'make reproduce TABLE={result.table}')} re-runs them under the current protocol "
            f"({now['seeds']} seeds, the shared start).")


def page(result: Result, table: Table, figures: list[str] = (), files: dict[str, str] | None = None,
         other_profiles: list[str] = (), runs_path: str = "runs", benches: list[tuple[dict, str]] = ()) -> str:
    """The whole book page of one table, as MyST Markdown. `benches`: `stm bench` results and
    their links (the speed table's page)."""
    parts = [intro_markdown(table)]
    label = {"proxy": "proxy", "smoke": "smoke", "full": "full"}.get(result.profile, text(result.profile))
    if result.profile != "full":
        parts.append(f":::{{important}}\nMeasured values on this page are **{label}** numbers: "
                     f"{'a tiny pipeline check' if label == 'smoke' else 'a synthetic stand-in for ' + table.real_name + ' at CPU scale'}"
                     f", not the paper's. Compare orderings, not values.\n:::")
    stale = earlier_protocol(result)
    if stale:
        parts.append(f":::{{warning}}\n{stale}\n:::")
    heading = "Paper and measured, side by side" if table.train else "What was measured"
    parts += [f"## {heading}", settings_markdown(result), table_markdown(result, table)]
    if figures:
        parts.append("## Plots")
        parts += [f"![{Path(f).stem}]({f})" for f in figures]
    stored = [p for p in (files or {}) if p.startswith("figures/")]
    if stored and not figures:
        parts.append("## Figures")
        parts += [f"![{Path(p).stem}]({(files or {})[p]})" for p in stored]
    if table.speed and benches:
        parts.append(bench_section(list(benches)))
    parts += ["## What the numbers say", numbers_say(result, table)]
    if other_profiles:
        parts.append(f"Other runs of this table in `runs/`: {text(', '.join(other_profiles))} (the book shows "
                     f"the {label} run).")
    parts += [provenance_box(result, files or {}, runs_path), real_number_box(table)]
    return "\n\n".join(p for p in parts if p) + "\n"


# ---- the status page ----------------------------------------------------------------------------

def status_page(results: dict[str, dict[str, Result]], chosen: dict[str, str]) -> str:
    """Every table: the run the book shows, its seeds, verdict counts and provenance flags."""
    from stm_lib.book.tables import TABLES

    out = ["# Reproduction status", "",
           "Written by `stm book` from every `results.json` under `runs/`; nothing on this page is typed by hand. "
           "Row status: *exact* (measured at the paper's own setting, equal at its printed precision), *proxy* / "
           "*smoke* (trained here on an embedded synthetic proxy at CPU scale: never the paper's number), *full* "
           "(the paper's settings on the real data), *not run* (with the reason). Verdicts on the paper's "
           f"orderings, recomputed from the per-seed values: {stats.TEST} *Not resolved* otherwise (or with one "
           f"seed). {stats.UNINFORMATIVE[0].upper()}{stats.UNINFORMATIVE[1:]}. {stats.FAILURE_RULE[0].upper()}"
           f"{stats.FAILURE_RULE[1:]}.", "",
           "| table | shown | runs | seeds per row | rows trained | rows not run | verdicts |",
           "|---|---|---|---|---|---|---|"]
    sections = []
    for t, table in TABLES.items():
        name = "Figure 1" if t == "figure1" else f"Table {t}"
        profs = results.get(t, {})
        if not profs:
            out.append(f"| {name} | not run | — | — | — | — | — |")
            continue
        res = profs[chosen[t]]
        trained = [r for r in res.rows if r.seeds]
        not_run = [r for r in res.rows if r.status == "not_run"]
        counts = {v: sum(c.verdict == v for c in res.claims) for v in VERDICT_WORDS}
        verdicts = ", ".join(f"{n} {v}" for v, n in counts.items() if n) or "—"
        out.append(f"| [{name}](../tables/{table.notebook}.md) | {chosen[t]} | {', '.join(sorted(profs))} | "
                   f"{len(res.seeds) or '—'} | {len(trained) if table.train else '—'} | {len(not_run)} | {verdicts} |")
        sec = [f"## {name}: {table.title}", ""]
        for p, r in sorted(profs.items()):
            pv = r.provenance or {}
            g = pv.get("git") or {}
            flag = " **(dirty tree)**" if g.get("dirty") else ""
            flag += " **(checkout changed during the run)**" if pv.get("git_changed_during_run") else ""
            sec.append(f"- {code(p)}: commit {code(str(g.get('commit') or '?')[:10])}{flag}, {text(pv.get('wall_time_s', '?'))} s, "
                       f"{len(r.seeds)} seed(s), finished {text(pv.get('end', '?'))}.")
        for c in res.claims:
            test = ""
            if c.p is not None:
                test = (f": difference {c.diff:+.1f} (95% CI {c.ci[0]:+.1f} to {c.ci[1]:+.1f}), Welch p = {_p(c.p)} "
                        f"(df {c.df:.1f}), Holm p = {_p(c.p_adj)}, MDD {c.mdd:.1f}" if c.mdd is not None else "")
            elif c.why != "not measured":
                test = f" ({WHY.get(c.why, '').split(':')[0].split(' (')[0]})"
            sec.append(f"- {text(c.better)} > {text(c.worse)} ({text(c.metric)}): **{c.verdict}**{test}")
        fails = [(r.id, f) for r in res.rows for m in res.chance if (f := r.failures(m, res.chance[m]))]
        if fails:
            k, n = sum(f["k"] for _, f in fails), sum(f["n"] for _, f in fails)
            sec.append(f"- failed runs ({stats.FAILURE_RULE.split(':')[0]} rule): {k} of {n}")
        sections += sec + [""]
    proxy = {t: profs["proxy"] for t, profs in results.items() if "proxy" in profs}
    goals = ["", "## Evidence goals", "",
             "Measured over every proxy `results.json` by `stm_lib/book/evidence.py` (a run that serves "
             "several tables counts once; a failed run is left out of the spread, never out of a mean or a test).",
             "", *evidence.markdown(evidence.goals(proxy))] if proxy else []
    out += [*goals, "", *sections]
    return "\n".join(out) + "\n"
