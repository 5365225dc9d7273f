"""The book's evidence goals (stm_lib/book/evidence.py) against hand-computed numbers: pooled SD,
runs shared between tables counted once, failed runs out of the spread, the median MDD, the
temporal proxy's grading, and flat tables; and their place on the status page."""
from __future__ import annotations

import math

import pytest

from stm_lib.book import evidence, report
from stm_lib.book.result import Claim, Result, Row, SeedRun

TEMPORAL = {"data": {"dataset": "proxy-temporal", "proxy_classes": 10, "proxy_videos": 2600,
                     "proxy_resolution": 32, "proxy_seed": 0}}
SCENE = {"data": {**TEMPORAL["data"], "dataset": "proxy-scene"}}


def _row(rid: str, xs: list[float], key: str, config=TEMPORAL, n_val: int = 1000, metric: str = "top1") -> Row:
    runs = [SeedRun(s, f"train/{rid}-s{s}", metrics={metric: x}, cache=f"{key}{s}", config=config)
            for s, x in enumerate(xs)]
    return Row(rid, rid.upper(), rid, 8, "proxy", seeds={metric: xs}, n_val={metric: n_val}, runs=runs)


def _res(table: str, rows: list[Row], mdds=(), chance: float = 10.0) -> Result:
    claims = [Claim("a", "b", "top1", [None, None], [None, None], "not resolved", "tested", mdd=m) for m in mdds]
    return Result(table, "proxy", "t", None, rows, claims=claims, chance={"top1": chance})


def _goal(goals, start: str) -> evidence.Goal:
    return next(g for g in goals if g.name.startswith(start))


def test_pooled_sd_by_hand():
    # [1, 2, 3]: variance 1 (2 df); [10, 14]: variance 8 (1 df); [7]: no df -> sqrt(10 / 3)
    assert evidence.pooled_sd([[1, 2, 3], [10, 14], [7]]) == pytest.approx(math.sqrt(10 / 3))
    assert evidence.pooled_sd([[5], []]) is None


def test_goals_count_a_shared_row_once_and_leave_failed_runs_out_of_the_spread():
    tsn = _row("tsn", [50.0, 51.0, 52.0, 53.0, 54.0], "t")              # variance 2.5
    stm = _row("stm", [60.0, 62.0, 10.0, 64.0, 66.0], "s")              # 10.0 < half the median: failed
    res = {"1": _res("1", [tsn, stm], mdds=[4.0, 8.0]),
           "5": _res("5", [_row("tsn", tsn.seeds["top1"], "t"), _row("stm", stm.seeds["top1"], "s")], mdds=[5.0])}
    g = evidence.goals(res)
    assert _goal(g, "seeds").met and _goal(g, "seeds").measured == "2 of 2 rows"      # not 4 of 4
    # non-failed: tsn variance 2.5 (4 df), stm [60, 62, 64, 66] variance 20/3 (3 df) -> sqrt(30 / 7)
    sd = _goal(g, "pooled within-row SD, proxy-temporal")
    assert sd.measured.startswith(f"{math.sqrt(30 / 7):.2f} points over 2 rows") and sd.met
    failed = _goal(g, "failed runs")
    assert failed.measured == "1 of 10 (10.0%)" and failed.met is False
    assert _goal(g, "median minimum").measured == "5.0 points over 3 claims" and _goal(g, "median minimum").met


def test_goals_name_rows_short_of_seeds_or_clips_and_group_by_proxy():
    few = _row("tsm", [50.0, 52.0, 51.0], "m", n_val=200)
    scene = _row("tsn", [70.0, 70.0, 70.0, 70.0, 70.0], "c", config=SCENE)
    g = evidence.goals({"3": _res("3", [few, scene])})
    assert not _goal(g, "seeds").met and "3/tsm: 3" in _goal(g, "seeds").measured
    assert not _goal(g, "validation").met and "3/tsm: 200" in _goal(g, "validation").measured
    assert _goal(g, "pooled within-row SD, proxy-scene").measured.startswith("0.00")
    assert _goal(g, "pooled within-row SD, proxy-temporal").measured.startswith("1.00")


def test_grading_of_the_temporal_proxy_and_flat_tables():
    ref = _row("tsn-diff", [88.0, 90.0, 89.0, 91.0, 87.0], "r")
    tsn = _row("tsn", [50.0] * 5, "t")
    g = evidence.goals({"5": _res("5", [tsn, ref])})
    grading = _goal(g, "TSN on the temporal proxy")
    # chance 10% on 1000 clips: SE sqrt(.1 * .9 / 1000) = 0.949 points -> (50 - 10) / 0.949 = 42.2 SEs; gap 39
    assert grading.met and "42.2 SEs" in grading.measured and "39.0 points below" in grading.measured
    close = _row("tsn", [71.0] * 5, "t")
    assert _goal(evidence.goals({"5": _res("5", [close, ref])}), "TSN on").met is False      # 18 below
    near = _row("tsn", [11.0] * 5, "t")                                                      # 1.05 SEs
    assert _goal(evidence.goals({"5": _res("5", [near, ref])}), "TSN on").met is False
    assert _goal(evidence.goals({"1": _res("1", [tsn])}), "TSN on").met is None               # no Table 5

    top = _res("3", [_row("a", [96.0] * 5, "a"), _row("b", [99.0] * 5, "b")])
    low = _res("2", [_row("a", [10.5] * 5, "x"), _row("b", [9.0] * 5, "y")])
    flat = _goal(evidence.goals({"3": top, "2": low, "5": _res("5", [tsn, ref])}), "tables with")
    assert flat.measured == "Table 2: chance, Table 3: ceiling" and flat.met is False


def test_status_page_shows_the_goals():
    tsn = _row("tsn", [50.0] * 5, "t")
    page = report.status_page({"5": {"proxy": _res("5", [tsn])}}, {"5": "proxy"})
    assert "## Evidence goals" in page and "| seeds per trained row | >= 5 | 1 of 1 rows | met |" in page
