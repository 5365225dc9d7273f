"""The chapter "STM among its relatives" (issue 13): its table, the two-stream model's flow on a
proxy, cost readings checked against hand-made counts, and run identities that did not move."""
from pathlib import Path

from stm_lib.book import report, runner
from stm_lib.book.result import Complexity, Result, Row, Speed
from stm_lib.book.tables import TABLES
from stm_lib.config import Config

MODELS = ["tsn", "tsm", "stsm", "sth", "st-resnet-rgb", "st-resnet", "stm"]
SUCCESSORS = ["tea", "tdn", "tam", "tin"]   # issue 30


def test_chapter_table_has_every_relative_on_both_proxies():
    t = TABLES["relatives"]
    assert t.chapter and t.notebook == "relatives" and [r["model"] for r in t.paper_rows()] == MODELS + SUCCESSORS
    assert [(p.name, p.proxy_dataset) for p in t.parts] == [("temporal", "proxy-temporal"), ("scene", "proxy-scene")]
    assert t.complexity and t.speed and t.speed_frames == (8,)
    assert ("st-resnet", "st-resnet-rgb") in t.claims and not any(r.get("paper_top1") for r in t.paper_rows())
    plan = runner.plan("relatives", "smoke", 1)
    assert sorted((row, part) for row, part, _, _ in plan) == sorted((m, p) for m in MODELS + SUCCESSORS
                                                                     for p in ("temporal", "scene"))


def test_successors_are_judged_against_tsn_and_stm_with_their_own_numbers_labelled_theirs():
    """Issue 30: each successor's verdict against TSN and against STM (in the order of their
    reported SSv1 top-1s), and that reported figure in a column headed as theirs."""
    t = TABLES["relatives"]
    for m in SUCCESSORS:
        assert (m, "tsn") in t.claims and ((m, "stm") in t.claims or ("stm", m) in t.claims), m
    rep = {r["model"]: r["reported"] for r in t.paper_rows()}
    assert rep["tdn"].startswith("52.3") and rep["tea"].startswith("48.9") and rep["stm"].startswith("49.2")
    assert ("tdn", "stm") in t.claims and ("stm", "tin") in t.claims   # 52.3 > 49.2 > 44.25
    assert "theirs" in dict(t.columns)["reported"]


def test_two_stream_rows_read_the_proxys_own_flow_and_keys_ignore_where_it_lies(tmp_path):
    plan = {(row, part): cfg for row, part, _, cfg in runner.plan("relatives", "smoke", 1)}
    two, rgb = plan[("st-resnet", "temporal")], plan[("st-resnet-rgb", "temporal")]
    assert two.data.flow_root and two.data.flow_root.endswith("/flow") and rgb.data.flow_root is None
    moved = two.update("data", flow_root=str(tmp_path / "elsewhere"))
    assert runner.cache_key(moved) == runner.cache_key(two)
    # an unset flow_root leaves a run's identity exactly as before the chapter existed
    d = Config().to_dict()
    assert runner.cache_key(Config.from_dict(d)) == runner.cache_key(Config.from_dict(d).update("data", flow_root=None))


def _row(model, params, flops, vps=None, tsn_vps=None):
    r = Row(model, model.upper(), model, 8, "exact", "")
    r.complexity = Complexity(params, flops, {})
    if vps:
        r.speed = Speed(vps, "CPU", vps / tsn_vps, None, {})
    return r


def test_cost_readings_follow_the_counts():
    rows = [_row("tsn", 23_000_000, 32_000_000_000, 10.0, 10.0), _row("stsm", 23_000_000, 32_000_000_000, 9.0, 10.0),
            _row("sth", 20_000_000, 29_000_000_000)]
    text = report.cost_readings(Result("relatives", "proxy", "t", None, rows, [], {}, [0], {}))
    assert "STSM adds no parameters or FLOPs" in text and "holds exactly" in text
    assert "fewer parameters" in text and "**holds** (-13.0%)" in text and "0.90x TSN" in text
    rows[1] = _row("stsm", 23_000_001, 32_000_000_000)
    text = report.cost_readings(Result("relatives", "proxy", "t", None, rows, [], {}, [0], {}))
    assert "does not hold" in text


def test_flow_cost_is_quoted_in_cpu_seconds_with_its_wall_time():
    """Clips extracted side by side: the per-clip price is CPU time (every thread's), not wall / clips."""
    two, rgb = _row("st-resnet", 47_000_000, 66_000_000_000, 2.0, 10.0), _row("st-resnet-rgb", 24_000_000, 33_000_000_000)
    two.info["flow_cost"] = {"temporal": dict(clips=1000, seconds=75.3, seconds_per_clip=0.0753, cpu_seconds_per_clip=1.1,
                                              fields_per_clip=15, resolution=64, flow_side=32, method="OpenCV DualTVL1",
                                              clips_at_a_time=16, cpu_count=16)}
    text = report.cost_readings(Result("relatives", "proxy", "t", None, [two, rgb], [], {}, [0], {}))
    assert "TV-L1 flow cost 1.10 CPU-seconds per clip on the temporal proxy" in text
    assert "1000 clips in 75 s wall with 16 at a time on 16 cores" in text


def test_all_means_the_papers_tables():
    from stm_lib import reproduce as R

    assert R.table_ids("all") == ["1", "2", "3", "4", "5", "6", "7", "8", "9", "figure1"]
    assert R.table_ids("relatives") == ["relatives"]


def test_figure1_correlates_over_moving_pairs_only():
    """A still pair carries no flow to resemble: it must not enter the average (issue 10 item 9)."""
    import numpy as np

    from stm_lib.book import figure1 as F

    rng = np.random.default_rng(0)
    still = rng.normal(0, 0.1, (20, 20, 2)).astype(np.float32)          # sub-pixel noise
    moving = np.zeros((20, 20, 2), np.float32)
    moving[5:15, 5:15, 0] = 5.0                                           # a square moving 5 px
    assert F.moving_pairs([still, moving]) == [False, True]
    square = np.zeros((20, 20), np.float32)
    square[5:15, 5:15] = 1.0
    maps = {"cmm": np.stack([rng.random((20, 20)).astype(np.float32), square])}
    assert F.flow_similarity(maps, [still, moving])["cmm"] == 1.0        # the still pair's noise is left out
    assert np.isnan(F.flow_similarity(maps, [still, still])["cmm"])


def test_committed_chapter_has_every_relative_and_its_page_reads_the_costs():
    """Issue 13's must-show on the committed run: every model on
    both proxies with >= 3 seeds, exact counts and a measured speed on a named device; the book page
    built from it carries the cost readings the notebook shows."""
    result = Result.load(Path(__file__).resolve().parents[1] / "runs" / "relatives" / "proxy" / "results.json")
    by = {r.model: r for r in result.rows}
    assert sorted(by) == sorted(MODELS)
    for m in MODELS:
        r = by[m]
        assert len(r.seeds["top1_temporal"]) >= 3 and len(r.seeds["top1_scene"]) >= 3, m
        assert r.complexity.params > 0 and r.complexity.flops > 0 and r.speed.videos_per_s > 0 and r.speed.device
    md = report.page(result, TABLES["relatives"])
    assert report.cost_readings(result) in md and "STH has fewer parameters" in md
    assert TABLES["relatives"].claims_lead in md and report.commentary(result, TABLES["relatives"]) in md


def test_notebook_and_page_say_the_same_about_the_numbers():
    """"What the numbers say" is written once (report.numbers_say): each notebook shows exactly
    what its book page shows, with no prose or call of its own beside it."""
    import json
    book = Path(__file__).resolve().parents[1] / "book"
    for t in TABLES.values():
        nb = book / f"{t.notebook}.ipynb"
        if not t.train or not nb.is_file():
            continue
        cells = json.loads(nb.read_text())["cells"]
        i = next(k for k, c in enumerate(cells) if "".join(c["source"]).startswith("## What the numbers say"))
        assert "".join(cells[i]["source"]).strip() == "## What the numbers say", nb.name
        assert "".join(cells[i + 1]["source"]).strip() == "Markdown(report.numbers_say(result, table))", nb.name
        code = "".join("".join(c["source"]) for c in cells)
        assert "report.commentary(" not in code and "report.cost_readings(" not in code, nb.name
    rows = [_row("tsn", 24.0e6, 33.0e9), _row("sth", 20.0e6, 30.0e9)]
    result = Result("relatives", "proxy", "t", None, rows, [], {}, [0], {})
    text = report.numbers_say(result, TABLES["relatives"])
    assert text.index("STH has fewer parameters") < text.index(TABLES["relatives"].claims_lead)
    assert text in report.page(result, TABLES["relatives"])
    paper = Result("5", "proxy", "t", None, [], [], {}, [0], {})
    assert report.numbers_say(paper, TABLES["5"]).startswith("Each ordering the paper draws from this table")
