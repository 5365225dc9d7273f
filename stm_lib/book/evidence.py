"""The book's evidence goals, measured over every proxy `results.json`: pure functions of the
results (no I/O), shown on the status page (`report.status_page`).

What a reader checks before trusting a proxy verdict, each as one number against its goal:
- seeds: every trained row has at least `SEEDS` runs;
- spread: on each proxy, the pooled within-row SD of the runs that did not fail is <= `POOLED_SD`
  points (pooled over rows: sum (n_i - 1) s_i^2 / sum (n_i - 1));
- failures: failed runs (stats.FAILURE_RULE) are <= `FAILED_SHARE` of all runs;
- power: the median minimum detectable difference over the claims that have one is <= `MDD`;
- validation: every trained row was measured on >= `VAL_CLIPS` clips;
- grading: on the temporal proxy TSN is >= 3 binomial SEs above chance and >= `REFERENCE_GAP`
  points below the frame-difference reference (Table 5's `tsn-diff` row);
- no table has every trained row at the ceiling or every one at chance.

A run that serves several tables (one run-cache key) counts once; a row whose runs are all
another table's (Tables 1, 5 and 6 share their TSN and STM rows) counts once too.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

from stm_lib.book import stats
from stm_lib.book.result import Result, Row

SEEDS = 5
POOLED_SD = 3.0
FAILED_SHARE = 0.05
MDD = 6.0
VAL_CLIPS = 1000
REFERENCE_GAP = 20.0
METRIC = "top1"


@dataclass
class Goal:
    name: str
    target: str
    measured: str
    met: bool | None          # None: nothing to judge yet


def proxy_name(runs) -> str:
    """The proxy some runs were trained on, from their configs: dataset, classes, clips, size, seed."""
    for r in runs:
        d = (r.config or {}).get("data") or {}
        if d.get("dataset"):
            return (f"{d['dataset']} ({d.get('proxy_classes', '?')} classes, {d.get('proxy_videos', '?')} clips at "
                    f"{d.get('proxy_resolution', '?')} px, seed {d.get('proxy_seed', '?')})")
    return "unknown proxy"


@dataclass
class _Arm:
    """One trained row on one accuracy metric (a metric with a chance level: top1, top1_scene, ...)."""
    table: str
    row: Row
    metric: str
    chance: float
    ids: list[str]             # one per seed: its run-cache key (or table/row/metric/index)
    proxy: str

    @property
    def xs(self) -> list[float]:
        return self.row.seeds[self.metric]

    @property
    def name(self) -> str:
        return f"{self.table}/{self.row.id}" + (f" ({self.metric})" if self.metric != "top1" else "")

    def failed(self) -> list[bool]:
        return self.row.failed(self.metric, self.chance)


def _arms(results: dict[str, Result]) -> list[_Arm]:
    """Every trained row and accuracy metric once: an arm is its set of runs."""
    seen, out = set(), []
    for t, res in sorted(results.items()):
        for metric, ch in sorted(res.chance.items()):
            for row in res.rows:
                xs = row.seeds.get(metric)
                if not xs:
                    continue
                runs = [r for r in row.runs if metric in r.metrics]
                ids = [(runs[i].cache if i < len(runs) else None) or f"{t}/{row.id}/{metric}/{i}"
                       for i in range(len(xs))]
                if tuple(sorted(ids)) in seen:
                    continue
                seen.add(tuple(sorted(ids)))
                out.append(_Arm(t, row, metric, ch, ids, proxy_name(runs)))
    return out


def pooled_sd(groups: list[list[float]]) -> float | None:
    """sqrt(sum (n_i - 1) s_i^2 / sum (n_i - 1)) over the groups with >= 2 values."""
    num = sum((len(g) - 1) * stats.variance(g) for g in groups if len(g) >= 2)
    den = sum(len(g) - 1 for g in groups if len(g) >= 2)
    return (num / den) ** 0.5 if den else None


def goals(results: dict[str, Result]) -> list[Goal]:
    """Each goal of the module docstring over `results` (table -> its proxy Result)."""
    arms = _arms(results)
    out = []

    few = [f"{a.name}: {len(a.xs)}" for a in arms if len(a.xs) < SEEDS]
    out.append(Goal("seeds per trained row", f">= {SEEDS}", f"{len(arms) - len(few)} of {len(arms)} rows"
                    + (f" (fewer: {_some(few)})" if few else ""), not few if arms else None))

    by_proxy: dict[str, list[list[float]]] = {}
    for a in arms:
        by_proxy.setdefault(a.proxy, []).append([x for x, f in zip(a.xs, a.failed()) if not f])
    for name, groups in sorted(by_proxy.items()):
        sd = pooled_sd(groups)
        out.append(Goal(f"pooled within-row SD, {name}", f"<= {POOLED_SD:g} points",
                        "—" if sd is None else f"{sd:.2f} points over {sum(len(g) >= 2 for g in groups)} rows",
                        None if sd is None else sd <= POOLED_SD))

    runs: dict[str, bool] = {}
    for a in arms:
        for run, f in zip(a.ids, a.failed()):
            runs.setdefault(run, f)
    k, n = sum(runs.values()), len(runs)
    out.append(Goal("failed runs", f"<= {FAILED_SHARE:.0%} of all runs",
                    f"{k} of {n} ({k / n:.1%})" if n else "—", (k / n <= FAILED_SHARE) if n else None))

    mdds = [c.mdd for res in results.values() for c in res.claims if c.mdd is not None]
    med = statistics.median(mdds) if mdds else None
    out.append(Goal("median minimum detectable difference", f"<= {MDD:g} points",
                    f"{med:.1f} points over {len(mdds)} claims" if mdds else "—",
                    None if med is None else med <= MDD))

    small = [f"{a.name}: {a.row.n_val.get(a.metric)}" for a in arms if (a.row.n_val.get(a.metric) or 0) < VAL_CLIPS]
    out.append(Goal("validation clips per row", f">= {VAL_CLIPS:,}", f"{len(arms) - len(small)} of {len(arms)} rows"
                    + (f" (fewer: {_some(small)})" if small else ""), not small if arms else None))

    out.append(_grading(results.get("5")))

    flat = []
    for t, res in sorted(results.items()):
        for metric, ch in sorted(res.chance.items()):
            trained = [r for r in res.rows if r.seeds.get(metric)]
            if not trained:
                continue
            where = f"Table {t}" + (f" ({metric})" if metric != "top1" else "")
            if all(stats.mean(r.seeds[metric]) >= stats.CEILING for r in trained):
                flat.append(f"{where}: ceiling")
            elif all(r.n_val.get(metric) and stats.near_chance(r.seeds[metric], r.n_val[metric], ch) for r in trained):
                flat.append(f"{where}: chance")
    out.append(Goal("tables with every row at ceiling or at chance", "none", ", ".join(flat) or "none", not flat))
    return out


def _some(items: list[str], k: int = 6) -> str:
    return ", ".join(items[:k]) + (f" and {len(items) - k} more" if len(items) > k else "")


def _grading(res: Result | None) -> Goal:
    name, target = "TSN on the temporal proxy (Table 5)", ">= 3 binomial SEs above chance, " \
                                                          f">= {REFERENCE_GAP:g} points below the reference"
    ids = {r.id: r for r in res.rows} if res else {}
    tsn, ref = ids.get("tsn"), ids.get("tsn-diff")
    ch = res.chance.get(METRIC) if res else None
    if not (tsn and ref and tsn.seeds.get(METRIC) and ref.seeds.get(METRIC) and ch is not None
            and tsn.n_val.get(METRIC)):
        return Goal(name, target, "not measured (Table 5 needs its tsn and tsn-diff rows)", None)
    m, r = tsn.value(METRIC), ref.value(METRIC)
    ses = (m - ch) / stats.binomial_se(ch, tsn.n_val[METRIC])
    return Goal(name, target, f"TSN {m:.1f}: {ses:.1f} SEs above chance {ch:g}, {r - m:.1f} points below "
                f"the reference {r:.1f}", ses >= 3 and r - m >= REFERENCE_GAP)


def markdown(goals_: list[Goal]) -> list[str]:
    """The goals as a table (lines)."""
    word = {True: "met", False: "**not met**", None: "—"}
    return ["| goal | target | measured | |", "|---|---|---|---|",
            *[f"| {g.name} | {g.target} | {g.measured} | {word[g.met]} |" for g in goals_]]
