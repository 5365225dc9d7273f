"""Issue 28 items 1-3, probed as an attacker would: a cached run whose `done.json` names a file out
of its folder, a forged top-1, a results.json whose strings are HTML / MyST, a symlink in a run
folder, and results.json fields of the wrong type. Each ends in one line naming the file and the
field, writes nothing outside the folders named, and no stored string reaches a page as live
markup. Fast: nothing is trained. (Crafted packs of runs: tests/test_runpack.py.)"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from stm_lib.book import build as B
from stm_lib.book import report, runner
from stm_lib.book.result import Result, SchemaError
from stm_lib.book.tables import TABLES

ROOT = Path(__file__).resolve().parents[1]
KEY = "0123456789abcdef"


def _done(top1=34.0, file="eval_val_1x1_last.json", **kw) -> bytes:
    return json.dumps({"key": KEY, "top1": top1, "top5": 90.0, "n": 200, "file": file, **kw}).encode()


# ---- 1. cached runs ------------------------------------------------------------------------

ESCAPE = "x/" + "../" * 12 + "tmp/stm-untrusted-PWNED.txt"


def test_a_cached_run_naming_a_file_out_of_its_folder_is_refused_before_any_copy(tmp_path):
    """The reproduce side: a run already in the cache with a crafted done.json and a link."""
    from stm_lib.config import Config

    cfg = Config()
    cache = tmp_path / "_cache"
    run = cache / runner.cache_key(cfg, cache.resolve())
    run.mkdir(parents=True)
    (run / "done.json").write_bytes(_done(file=ESCAPE))
    with pytest.raises(ValueError, match="not a plain file name inside its run folder"):
        runner.train_cached(cfg, cache, "smoke")
    (tmp_path / "outside.txt").write_text("secret")
    (run / "eval.json").symlink_to(tmp_path / "outside.txt")
    (run / "done.json").write_bytes(_done(file="eval.json"))
    with pytest.raises(ValueError, match="is a link or leads out of its run folder"):
        runner.check_done(run)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_cache", "outside.txt"]


def _run_folder(d: Path, top1=34.0, eval_top1=0.34, last_val=0.34) -> Path:
    d.mkdir(parents=True)
    (d / "done.json").write_bytes(_done(top1=top1, config={"data": {"test_clips": 1, "test_crops": 1}}))
    (d / "eval_val_1x1_last.json").write_text(json.dumps({"top1": eval_top1, "top5": 0.9, "n": 200}))
    (d / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "val_top1": 0.1}) + "\n"
                                     + json.dumps({"epoch": 2, "val_top1": last_val}) + "\n")
    return d


def test_an_honest_record_passes(tmp_path):
    assert runner.check_done(_run_folder(tmp_path / "r"))["top1"] == 34.0


@pytest.mark.parametrize("top1, eval_top1, last_val, want", [
    (99.0, 0.34, 0.34, "is not its evaluation file's"),          # done.json forged alone
    (99.0, 0.99, 0.34, "disagrees with the run's last validation top-1"),   # done.json and the eval file
    (float("inf"), 0.34, 0.34, "top1 must be a finite percentage in [0, 100]"),
    (340.0, 3.4, 3.4, "top1 must be a finite percentage in [0, 100]"),
    ("34", 0.34, 0.34, "top1 must be a finite percentage in [0, 100]"),
], ids=["alone", "with-eval", "inf", "340", "string"])
def test_a_forged_top1_is_refused_in_one_line(tmp_path, top1, eval_top1, last_val, want):
    run = _run_folder(tmp_path / KEY, top1, eval_top1, last_val)
    with pytest.raises(ValueError) as e:
        runner.check_done(run)
    assert want in str(e.value) and str(run / "done.json") in str(e.value) and "\n" not in str(e.value)


# ---- 2. the book escapes what it did not write ------------------------------------------------

BAD = {
    "script": "<script>alert(1)</script>",
    "img": "<img src=x onerror=alert(2)>",
    "tick": "x` {raw}`html` <b>bold</b>",
    "raw": "\n```{raw} html\n<script>alert(3)</script>\n```\n",
    "include": "\n```{include} ../../../../etc/passwd\n```\n",
    "literal": "{literalinclude}`../../etc/hostname`",
    "fence": "\n:::{danger}\nowned\n:::\n",
}


def _hostile_doc() -> dict:
    doc = json.loads((ROOT / "runs" / "table5" / "proxy" / "results.json").read_text())
    doc = copy.deepcopy(doc)
    old = doc["rows"][0]["id"]
    doc["rows"][0]["id"] = BAD["img"]
    for c in doc["claims"]:
        c["better"] = BAD["img"] if c["better"] == old else c["better"]
        c["worse"] = BAD["img"] if c["worse"] == old else c["worse"]
    doc["rows"][0]["setting"] = BAD["script"] + BAD["tick"]
    doc["rows"][1]["reason"] = BAD["raw"]
    doc["rows"][1]["info"] = {**doc["rows"][1].get("info", {}), "backbone": BAD["literal"]}
    doc["rows"][2]["paper"] = {k: BAD["img"] for k in doc["rows"][2].get("paper", {})}
    doc["notes"] = [BAD["raw"], BAD["include"], BAD["fence"]]
    doc["provenance"]["command"] = "stm reproduce ` " + BAD["script"]
    doc["provenance"].setdefault("hardware", {})["cpu"] = BAD["img"]
    doc["provenance"]["versions"] = {"torch": BAD["tick"], "python": BAD["literal"]}
    doc["settings"]["dataset"] = "proxy` " + BAD["script"]
    doc["settings"]["proxy"] = {"proxy_" + BAD["tick"]: BAD["img"]}
    return doc


def test_injected_strings_reach_the_page_only_as_text(tmp_path):
    res = Result.from_dict(_hostile_doc(), "hostile/results.json")
    md = report.page(res, TABLES["5"], files={"results.json": "files/table5/results.json"}, runs_path="runs/x")
    for bad in ("{raw}", "{include}", "{literalinclude}", "{danger}"):   # only ever escaped or in code
        assert all(f"\\{bad[1:-1]}" in chunk or "`" in chunk for chunk in md.split(bad)[:-1]), bad
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md and "&lt;img src=x onerror=alert(2)&gt;" in md
    for line in md.splitlines():   # no stored string opens a fence or a directive
        assert not line.lstrip().startswith("```{"), line
        assert not line.startswith(":::{danger"), line
    from markdown_it import MarkdownIt

    html = MarkdownIt("commonmark").enable("table").render(md)
    assert "<script" not in html and "<img" not in html and "<b>" not in html
    assert "&lt;script&gt;" in html   # shown, escaped
    # inline code spans hold the stored values and cannot be closed by them
    assert report.code("a`b") == "``a`b``" and report.code("`x") == "`` `x ``"


def test_honest_strings_read_as_before():
    for honest in ("TSM 8F (ResNet-50), 2 blocks", "CPU (AMD EPYC) (1 run)", "2026-12-04T16:23:05+00:00"):
        assert report.text(honest) == honest
    assert report.text("1. x") == "1\\. x" and report.text(":::{x}") == "\\:::\\{x\\}"
    from markdown_it import MarkdownIt

    assert MarkdownIt().renderInline(report.text("a_b * c [1] 27.64\u00a0✓")) == "a_b * c [1] 27.64\u00a0✓"


def test_a_symlink_in_a_run_folder_is_not_copied(tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_text('{"password": 1}')
    run = tmp_path / "runs" / "table5" / "proxy"
    (run / "figures").mkdir(parents=True)
    (run / "results.json").write_text("{}")
    (run / "leak.json").symlink_to(secret)
    (run / "figures" / "leak.png").symlink_to(secret)
    (run / "a`b.json").write_text("{}")   # a name that would break a {download} link
    dest = tmp_path / "out" / "files" / "table5"
    files = B._copy_run_files(run, dest)
    assert files == {"results.json": "files/table5/results.json"}
    assert sorted(p.name for p in dest.rglob("*")) == ["results.json"]


# ---- 3. results.json typed ---------------------------------------------------------------------

def _row0(d):
    return d["rows"][next(i for i, r in enumerate(d["rows"]) if r.get("top1_seeds"))]


TYPE_ERRORS = [
    ("seeds-1e308", lambda d: d.update(seeds=[1e308]), "seeds: expected list[int]"),
    ("seeds-string", lambda d: d.update(seeds="0,1,2"), "seeds: expected list[int]"),
    ("runs-entry", lambda d: _row0(d).update(runs=[5]), "runs[0]: expected an object"),
    ("runs-not-list", lambda d: _row0(d).update(runs={"a": 1}), "runs must be a list"),
    ("n_val-string", lambda d: _row0(d).update(n_val={"top1": "200"}), "n_val: expected dict[str, int]"),
    ("n_val-zero", lambda d: _row0(d).update(n_val={"top1": 0}), "n_val: validation clips must be positive"),
    ("paper-number", lambda d: _row0(d).update(paper={"top1": 42.0}), "paper: expected dict[str, str]"),
    ("rows-not-list", lambda d: d.update(rows={"a": 1}), "rows must be a list"),
    ("top1-150", lambda d: _row0(d).update(top1_seeds=[150.0] * len(_row0(d)["top1_seeds"]), top1=150.0,
                                           top1_std=0.0), "accuracies must be percentages in [0, 100]"),
    ("setting-number", lambda d: _row0(d).update(setting=5), "setting: expected str"),
    ("notes-string", lambda d: d.update(notes="hi"), "notes: expected list[str]"),
    ("seed-float", lambda d: _row0(d)["runs"][0].update(seed=0.5), "seed: expected int"),
]


@pytest.mark.parametrize("name, change, want", TYPE_ERRORS, ids=[t[0] for t in TYPE_ERRORS])
def test_a_mistyped_results_file_is_one_line_naming_file_and_field(name, change, want, tmp_path, capsys):
    doc = json.loads((ROOT / "runs" / "table5" / "proxy" / "results.json").read_text())
    change(doc)
    res = tmp_path / "runs" / "table5" / "proxy" / "results.json"
    res.parent.mkdir(parents=True)
    res.write_text(json.dumps(doc))
    with pytest.raises(SchemaError) as e:
        Result.load(res)
    assert str(res) in str(e.value) and want in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert B.build(runs=tmp_path / "runs", out=tmp_path, allow_missing=True) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and str(res) in err and want in err, err
    assert not (tmp_path / "_build").exists()


def test_injected_bench_results_and_flow_cost_render_as_text():
    """A `stm bench` results.json and a row's flow-cost record are stored data too: strings are
    escaped, non-numbers show as a dash, and nothing raises."""
    root = Path(__file__).resolve().parents[1]
    bench = json.loads((root / "runs" / "bench" / "nvidia-h200" / "results.json").read_text())
    bench["device"] = "<script>alert(1)</script>"
    bench["note"] = "```{raw} html\n<img src=x onerror=alert(1)>"
    bench["rows"][0].update(model="`x`<b>", videos_per_s="fast", mfu=float("inf"))
    bench["rows"].append(5)
    md = report.bench_section([(bench, "bench.json")])
    assert "<script" not in md and "<img" not in md and "<b>" not in md and "```" not in md
    assert "&lt;script&gt;" in md and "| — (" in md
    res = Result.load(root / "runs" / "relatives" / "proxy" / "results.json")
    two = res.row("st-resnet")
    two.info["flow_cost"] = {"temporal": {"seconds": "soon", "method": "<script>"}, "scene": "x"}
    text = report.cost_readings(res)
    assert "not readable" in text and "<script" not in text


def test_bench_section_shows_the_per_round_ratio_and_its_interval():
    """The CPU training-step bench (issue 29) on the speed page: the per-round ratio to TSN with
    its 95% interval as stored; a forged one shows as a dash; build() picks `stm bench` files by
    schema (the stm-profile ratio files beside them are not bench rows)."""
    root = Path(__file__).resolve().parents[1]
    path = root / "runs" / "bench" / "cpu" / "train-224-2thread.json"
    bench = json.loads(path.read_text())
    p = next(r for r in bench["rows"] if r["model"] == "stm")["ratio_vs_tsn_paired"]
    md = report.bench_section([(bench, "b.json")])
    assert f"{p['geomean']:.3f} ({p['ci95'][0]:.3f}-{p['ci95'][1]:.3f})" in md
    bench["rows"][1]["ratio_vs_tsn_paired"] = {"geomean": "<b>", "ci95": "x"}
    bench["rows"][2]["ratio_vs_tsn_paired"] = [1, 2]
    md = report.bench_section([(bench, "b.json")])
    assert "<b>" not in md and md.count("| — |") >= 2
    schemas = {f.name: json.loads(f.read_text()).get("schema") for f in (root / "runs" / "bench" / "cpu").glob("*.json")}
    assert schemas["train-224-1thread.json"].startswith("stm-bench/") and schemas["profile_stm_vs_tsn.json"] != "stm-bench/2"
