"""The results.json schema (book/result.py) and the verdict statistics (book/stats.py): values
computed by hand, boundaries of the two-standard-error rule, files a careless or malicious editor
would write."""
import json
import math

import pytest

from stm_lib.book import stats
from stm_lib.book.result import Claim, Result, Row, SchemaError, SeedRun, make_claims, paper_text
from stm_lib.config import full_recipe


# ---- stats ----------------------------------------------------------------------------------------

def test_mean_std_by_hand():
    assert stats.mean([40.0, 42.0, 44.0]) == 42.0
    assert stats.std([40.0, 42.0, 44.0]) == 2.0            # sqrt((4 + 0 + 4) / 2)
    assert stats.std([42.0]) is None                       # one seed: no spread known
    assert stats.seed_se([40.0, 44.0]) == 2.0              # sqrt(8 / 2)
    assert math.isclose(stats.binomial_se(10.0, 100), 3.0)  # 100 * sqrt(0.1 * 0.9 / 100)


# ---- the stated test (issue 27): Welch + Holm, against scipy and by hand ---------------------------

FIXED = [([61.5, 58.0, 63.2, 60.1, 59.4], [55.0, 57.5, 52.1, 56.6, 54.9]),
         ([80.0, 81.5, 79.0, 82.0, 80.5, 78.5], [79.0, 80.0, 78.0]),
         ([30.0, 45.0, 12.0, 50.0, 41.0], [20.0, 22.0, 19.5, 21.0, 20.5])]


@pytest.mark.parametrize("a, b", FIXED)
def test_welch_against_scipy(a, b):
    from scipy import stats as st

    c = stats.compare(a, b, n_val=1000, chance_percent=10.0)
    ref = st.ttest_ind(a, b, equal_var=False)
    assert c.why == "welch"
    assert math.isclose(c.p, ref.pvalue, rel_tol=1e-9)
    assert math.isclose(c.df, ref.df, rel_tol=1e-9)                       # Welch-Satterthwaite, its own df
    lo, hi = ref.confidence_interval(0.95)
    assert math.isclose(c.ci[0], lo, rel_tol=1e-9) and math.isclose(c.ci[1], hi, rel_tol=1e-9)
    # a family of one: the adjusted p is the p, and the verdict follows it exactly
    (adj,) = stats.adjust([c])
    assert adj.p_adj == c.p
    assert adj.verdict == ("holds" if ref.pvalue < 0.05 and ref.statistic > 0 else "not resolved")


def test_holm_by_hand():
    # sorted 0.01, 0.02, 0.03, 0.04 -> x4, x3, x2, x1 = 0.04, 0.06, 0.06, 0.04 -> monotone 0.04, 0.06, 0.06, 0.06
    assert stats.holm([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert stats.holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    assert stats.holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])   # 0.6 x 2 capped at 1; 0.7 x 1 raised to 1
    assert stats.holm([]) == []


def test_holm_decides_the_verdict_across_a_family():
    # each claim alone would hold at p < 0.05; with three in the family only the strongest survives
    strong = stats.compare([70.0, 71.0, 72.0, 70.5, 71.5], [50.0, 51.0, 52.0, 50.5, 51.5], 1000, 10.0)
    weak = stats.compare([60.0, 64.0, 58.0, 63.0, 61.0], [57.5, 59.5, 55.5, 59.0, 56.5], 1000, 10.0)
    assert strong.p < 0.001 and 0.025 < weak.p < 0.05
    out = stats.adjust([weak, strong, weak])
    assert [c.verdict for c in out] == ["not resolved", "holds", "not resolved"]
    assert out[0].p_adj == pytest.approx(min(1, 2 * weak.p))
    # reversed: significant and negative
    (rev,) = stats.adjust([stats.compare([50.0, 51.0, 52.0, 50.5, 51.5], [70.0, 71.0, 72.0, 70.5, 71.5], 1000, 10.0)])
    assert rev.verdict == "reversed"


def test_uninformative_claims_leave_the_family():
    ceil = stats.compare([96.0, 97.0, 98.0], [95.0, 99.0, 100.0], 1000, 10.0)
    ok = stats.compare([60.0, 64.0, 58.0, 63.0, 61.0], [57.0, 59.0, 55.0, 58.5, 56.0], 1000, 10.0)
    out = stats.adjust([ceil, ok])
    assert out[0].verdict == "uninformative" and out[0].p is None
    assert out[1].p_adj == ok.p                                 # a family of one informative claim


def test_minimum_detectable_difference_by_simulation():
    """At the MDD, Welch's two-sided 5% test rejects about 80% of the time (checked by simulation,
    not by the formula that made it; the noncentral-t power of Welch's statistic is an
    approximation: the simulation gives 77.8% at 5 + 5 seeds, the estimated df varying by draw)."""
    import numpy as np
    from scipy import stats as st

    d = stats.mdd(3.0, 5, 3.0, 5)
    assert 5.0 < d < 7.0                        # about (2.31 + 0.87) * sqrt(2 * 9 / 5) = 6.0
    rng = np.random.default_rng(0)
    a = rng.normal(d, 3.0, (20000, 5))
    b = rng.normal(0.0, 3.0, (20000, 5))
    power = np.mean(st.ttest_ind(a, b, axis=1, equal_var=False).pvalue < 0.05)
    assert 0.76 < power < 0.84
    assert stats.mdd(3.0, 1, 3.0, 5) is None     # no spread known on one side


def test_single_seed_or_no_spread_is_never_a_verdict():
    c = stats.compare([80.0], [20.0], n_val=200, chance_percent=10.0)
    assert c.verdict == "not resolved" and c.why == "one seed" and c.se_diff is None
    assert stats.compare([80.0, 81.0, 79.0], [20.0], 200, 10.0).verdict == "not resolved"
    c = stats.compare([80.0, 80.0], [20.0, 20.0], 200, 10.0)
    assert c.why == "no spread" and stats.adjust([c])[0].verdict == "not resolved"


def test_ceiling_and_chance_are_uninformative():
    assert stats.compare([96.0, 97.0, 98.0], [95.0, 99.0, 100.0], 200, 10.0).why == "ceiling"
    # chance 10% on 1000 clips: 2 binomial SEs = 1.90 points
    c = stats.compare([11.0, 11.5, 10.5], [9.0, 10.0, 11.0], 1000, 10.0)
    assert c.verdict == "uninformative" and c.why == "chance"
    # one side learned: the comparison is informative
    (c,) = stats.adjust([stats.compare([30.0, 32.0, 31.0], [9.0, 10.0, 11.0], 1000, 10.0)])
    assert c.verdict == "holds"
    # one side at the ceiling only: informative
    assert stats.compare([99.0, 98.0, 99.5], [90.0, 91.0, 89.0], 200, 10.0).why == "welch"


def test_a_high_spread_row_is_not_at_chance():
    """Table 5's CMM at b87715b (7.0, 57.5, 49.0 on 200 clips): two seeds 18-22 binomial SEs above
    chance. The old rule widened the chance band by the seed SE and called it "at chance"."""
    cmm, tsn = [7.0, 57.5, 49.0], [9.5, 10.0, 8.5]
    assert not stats.near_chance(cmm, 200, 10.0)
    assert stats.compare(cmm, tsn, 200, 10.0).why == "welch"
    assert stats.near_chance([10.0, 12.0, 11.0], 200, 10.0)   # within 2 x 2.12 points


def test_failure_rule_and_clopper_pearson():
    # below half the row's median (median 96.5 -> 48.25): 29.0 fails
    assert stats.failed([96.5, 29.0, 99.5], 200, 10.0) == [False, True, False]
    # within 2 binomial SEs of chance while the row's median is clearly above it
    assert stats.failed([80.0, 11.0, 78.0, 79.0, 81.0], 1000, 10.0) == [False, True, False, False, False]
    # a row at chance fails nothing: chance is the proxy's verdict, not the run's
    assert stats.failed([9.0, 10.5, 11.0], 1000, 10.0) == [False, False, False]
    # k of n with its exact interval (scipy.stats.binomtest): 0 of 5 -> [0, 1 - 0.025 ** (1 / 5)]
    lo, hi = stats.clopper_pearson(0, 5)
    assert lo == 0.0 and math.isclose(hi, 1 - 0.025 ** 0.2, rel_tol=1e-6)
    lo, hi = stats.clopper_pearson(12, 44)
    assert 0.14 < lo < 0.16 and 0.42 < hi < 0.44   # statistics.md: 27%, 95% CI 15-43%


@pytest.mark.parametrize("n", [None, 0, -5, 2.5, True])
def test_missing_sample_size_is_refused(n):
    with pytest.raises(ValueError, match="sample size"):
        stats.compare([50.0, 51.0], [40.0, 41.0], n_val=n, chance_percent=10.0)


def test_convergence_rule():
    assert not stats.converged([10, 20, 30, 40, 50, 60, 61, 62])      # 60 -> 62: a 2-point band
    assert stats.converged([10, 20, 30, 40, 50, 60, 61, 61.5])
    assert not stats.converged([10, 20, 30, 40, 50, 61, 61, 55])     # fell: not settled
    assert not stats.converged([50.0])                                # one epoch shows nothing


# ---- the schema ------------------------------------------------------------------------------------

def _result() -> Result:
    stm = Row("stm", "STM", "stm", 8, "proxy", run_frames=8, paper={"top1": paper_text(49.2)},
              seeds={"top1": [40.0, 42.0, 44.0], "top5": [100.0, 100.0, 100.0]}, n_val={"top1": 200, "top5": 200},
              runs=[SeedRun(s, f"train/stm-s{s}", epochs=3, val_top1=[10.0, 30.0, 40.0 + 2 * s],
                            train_loss=[2.0, 1.5, 1.2], converged=False, config={"train": {"seed": s}})
                    for s in range(3)])
    tsn = Row("tsn", "TSN", "tsn", 8, "proxy", paper={"top1": paper_text(19.7)}, seeds={"top1": [10.0, 11.0, 12.0]},
              n_val={"top1": 200})
    other = Row("i3d", "I3D", None, "32", "not_run", reason="other method", paper={"top1": paper_text(72.0)})
    return Result("5", "proxy", "Impact of CSTM and CMM", "caption", [stm, tsn, other],
                  claims=make_claims({r.id: r for r in (stm, tsn, other)},
                                     [("stm", "tsn", "top1"), ("stm", "i3d", "top1")], {"top1": 10.0}), seeds=[0, 1, 2],
                  chance={"top1": 10.0}, provenance={"git": {"commit": "a" * 40}})


def test_round_trip_and_the_must_show_keys():
    res = _result()
    text = res.to_json()
    d = json.loads(text)
    row = d["rows"][0]
    assert row["top1_seeds"] == [40.0, 42.0, 44.0] and row["top1"] == 42.0 and row["top1_std"] == 2.0
    assert d["rows"][1]["top1_std"] == 1.0
    assert d["rows"][2]["paper"]["top1"] == "72.0"            # the paper's precision, not 72
    assert d["claims"][0]["verdict"] == "holds" and d["claims"][1]["verdict"] == "not resolved"
    assert d["claims"][1]["why"] == "not measured"
    back = Result.from_json(text)
    assert back == res and back.to_json() == text
    assert back.row("stm").runs[2].val_top1 == [10.0, 30.0, 44.0]


def test_one_clear_error_per_problem():
    d = json.loads(_result().to_json())

    def fails(mutate, match):
        doc = json.loads(json.dumps(d))
        mutate(doc)
        with pytest.raises(SchemaError, match=match):
            Result.from_dict(doc, "r.json")

    fails(lambda x: x.update(version=3), "version 3")
    fails(lambda x: x.pop("version"), "version None")
    fails(lambda x: x["rows"][0].pop("status"), r"rows\[0\] \(stm\): missing field 'status'")
    fails(lambda x: x["rows"][0].update(status="proxy (sort of)"), "not one of")
    fails(lambda x: x["rows"][0].update(top1=50.0), "top1 = 50.0 does not match")   # edited the mean only
    fails(lambda x: x["rows"][0].update(top1_seeds=[]), "non-empty list")
    fails(lambda x: x["rows"][0].update(colour="red"), "unknown field")
    fails(lambda x: x["claims"][0].update(verdict="noise"), "verdict 'noise'")
    fails(lambda x: x["rows"][0]["runs"][0].pop("seed"), r"runs\[0\]: missing field 'seed'")
    with pytest.raises(SchemaError, match="schema 1"):
        Result.from_dict({"table": "5", "rows": []}, "old.json")
    with pytest.raises(SchemaError, match="r.json:1: not valid JSON"):
        Result.from_json("{", "r.json")


def test_editing_the_seeds_changes_the_result():
    d = json.loads(_result().to_json())
    d["rows"][0].update(top1_seeds=[50.0, 50.0, 50.0], top1=50.0, top1_std=0.0)
    assert Result.from_dict(d).row("stm").value("top1") == 50.0
    d["rows"][0].update(top1_seeds=[50.0, 52.0, 54.0])
    del d["rows"][0]["top1"], d["rows"][0]["top1_std"]   # derived values may be left out
    assert Result.from_dict(d).row("stm").std("top1") == 2.0


def test_exact_at_the_papers_precision():
    r = Row("cstm", "Channel-wise", "cstm", 8, "proxy", paper={"params_m": "23.88", "flops_g": "32.93"})
    from stm_lib.book.result import Complexity

    r.complexity = Complexity(23_875_886, 32_924_327_936)
    assert r.exact("params_m") is True         # 23.875886 -> 23.88
    assert r.exact("flops_g") is False         # 32.924 -> 32.92, paper 32.93
    assert r.exact("top1") is None
    r.info["pretrain"] = "ImageNet"
    assert (r.get("paper:params_m"), r.get("params_m"), r.get("setting"), r.get("pretrain"), r.get("top1")) == \
        ("23.88", 23.875886, "Channel-wise", "ImageNet", None)
    assert isinstance(Claim("a", "b", "top1", [None, None], [None, None], "not resolved", "not measured"), Claim)


# ---- migration of schema-1 files -------------------------------------------------------------------

def test_from_legacy_turns_prose_into_values(tmp_path):
    from stm_lib.book.migrate import migrate, status_of

    assert status_of("exact (params, FLOPs); speed: measured here; not run: budget (16 frames)", "proxy", True) \
        == ("exact", "budget (16 frames)")
    assert status_of("params exact; FLOPs -0.006G; top-1: proxy", "proxy", True) == ("proxy", "")
    assert status_of("not run: other method", "proxy", False) == ("not_run", "other method")
    assert status_of("speed: measured here; reference row", "proxy", False) == ("not_run", "speed reference")
    run = tmp_path / "table5" / "proxy"
    (run / "train" / "stm").mkdir(parents=True)
    (run / "train" / "stm" / "metrics.jsonl").write_text(
        "".join(json.dumps({"epoch": e, "val_top1": v, "train_loss": 1.0 / e}) + "\n"
                for e, v in enumerate([0.2, 0.41, 0.42], 1)))
    legacy = {"table": "5", "caption": "c", "profile": "proxy", "settings": {"seed": 0, "proxy": {"proxy_classes": 10}},
              "rows": [{"id": "stm", "setting": "STM", "model": "stm", "frames": 8, "paper_top1": 49.2,
                        "status": "proxy", "top1": 42.5, "top5": 100.0, "n_val": 200, "run": "train/stm",
                        "run_frames": 8},
                       {"id": "cmm", "setting": "CMM", "model": "cmm", "frames": 8, "paper_top1": 44.1,
                        "status": "proxy", "top1": 8.5, "n_val": 200}],
              "claims": [{"better": "stm", "worse": "cmm", "verdict": "holds"}], "figures": [], "notes": [],
              "provenance": {"git": {"commit": "e" * 40, "dirty": True}}}
    (run / "results.json").write_text(json.dumps(legacy))
    assert migrate(tmp_path) == [run / "results.json"] and migrate(tmp_path) == []   # once
    res = Result.load(run / "results.json")
    stm = res.row("stm")
    assert stm.seeds["top1"] == [42.5] and stm.std("top1") is None and stm.n_val["top1"] == 200
    assert stm.runs[0].val_top1 == [20.0, 41.0, 42.0] and stm.runs[0].converged is True
    assert [(c.better, c.worse) for c in res.claims] == [("stm", "cmm")]
    assert res.claims[0].verdict == "not resolved" and res.claims[0].why == "one seed"   # was "holds"
    assert res.row("cmm").paper["top1"] == "44.1" and res.chance == {"top1": 10.0}
    assert res.provenance["git"]["commit"] == "e" * 40 and "migrated" in res.provenance


# ---- tables ------------------------------------------------------------------------------------------

def test_every_table_is_consistent():
    from stm_lib.book.tables import PROFILES, TABLES, get

    for tid, t in TABLES.items():
        ids = {r["id"] for r in t.paper_rows()}
        for a, b in t.claims:            # claims name rows of the paper's table (a chapter's own rows)
            assert {a, b} <= ids, (tid, a, b)
        for profile in PROFILES:
            for part in t.parts:
                d = t.data(profile, part.name)
                assert d["dataset"] == (part.full_dataset if profile == "full" else part.proxy_dataset)
                assert 0 < t.chance(profile, part.name) < 100
        assert t.notebook == (tid if tid == "figure1" or t.chapter else f"table{tid}")
    assert TABLES["4"].chance("proxy", "hmdb51") == 100 / 6 and TABLES["2"].num_classes("full") == 27
    assert TABLES["2"].data("proxy")["proxy_seed"] == 1 and "proxy_seed" not in TABLES["5"].data("proxy")
    assert PROFILES["full"]["lr"] == 0.01 and PROFILES["full"]["batch_size"] == 64
    assert full_recipe(8) == {"batch_size": 64, "lr": 0.01, "lr_scale": False} and full_recipe(16)["batch_size"] == 32
    with pytest.raises(ValueError, match="unknown table"):
        get("10")


def test_the_page_says_where_runs_were_trained(tmp_path):
    """run.json's hardware -> SeedRun.trained_on -> one sentence of the settings paragraph."""
    from stm_lib.book import report, runner

    def run_dir(name, hw):
        d = tmp_path / name
        d.mkdir()
        (d / "run.json").write_text(json.dumps({"hardware": hw}))
        return d

    gpu = run_dir("g", {"device": "cuda", "gpus": ["NVIDIA H200"], "cpu": "Xeon"})
    cpu = run_dir("c", {"device": "cpu", "gpus": [], "cpu": "AMD EPYC"})
    assert runner.trained_on(gpu) == "NVIDIA H200" and runner.trained_on(cpu) == "CPU (AMD EPYC)"
    assert runner.trained_on(tmp_path / "missing") is None
    res = _result()
    for i, run in enumerate(res.row("stm").runs):
        run.trained_on = "NVIDIA H200" if i else "CPU (AMD EPYC)"
    assert "Runs trained on: NVIDIA H200 (2 runs), CPU (AMD EPYC) (1 run)." in report.settings_markdown(res)
    assert Result.from_json(res.to_json()) == res


def test_every_committed_claim_is_recomputable_by_the_independent_script(tmp_path):
    """tools/check_claims.py re-derives every stored verdict from the seeds without stm_lib; the
    committed results all match, and an edited verdict is caught."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    tool = root / "tools" / "check_claims.py"
    r = subprocess.run([sys.executable, str(tool), str(root / "runs")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:]
    assert "all match" in r.stdout
    (tmp_path / "table5" / "proxy").mkdir(parents=True)
    doc = json.loads((root / "runs" / "table5" / "proxy" / "results.json").read_text())
    flip = {"holds": "not resolved", "not resolved": "holds", "reversed": "holds", "uninformative": "holds"}
    doc["claims"][0]["verdict"] = flip[doc["claims"][0]["verdict"]]
    (tmp_path / "table5" / "proxy" / "results.json").write_text(json.dumps(doc))
    r = subprocess.run([sys.executable, str(tool), str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "recomputed" in r.stdout
