"""`stm reproduce`: a table's notebook -> runs/<table>/<profile>/ with results.json and provenance,
written atomically; clear errors for bad arguments."""
import json
import math
from pathlib import Path

import nbformat
import pytest

from stm_lib import provenance as P
from stm_lib import reproduce as R
from stm_lib.book import runner
from stm_lib.book.result import Result, Row, SeedRun
from stm_lib.cli import main


def _notebook(path: Path, body: str) -> None:
    """A minimal parameterised notebook: a `parameters` cell and one code cell."""
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell('profile = "proxy"\nout_dir = "x"\ndata_root = None\ndevice = "auto"\nseeds = None\n'
                                  'cache_dir = None')
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


WRITE_ROWS = ('from stm_lib.book.result import Result, Row\n'
              'Result("5", profile, "t", None, [Row("new", "New", "stm", 8, "smoke", seeds={"top1": [1.0, 3.0]}, '
              'n_val={"top1": 10})], seeds=[0, 1]).save(out_dir + "/result.json")')


@pytest.fixture
def fake_book(tmp_path, monkeypatch):
    book = tmp_path / "book"
    book.mkdir()
    monkeypatch.setattr(R, "BOOK", book)
    return book


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown table"):
        R.reproduce("42", "smoke", out_root=tmp_path)
    with pytest.raises(ValueError, match="unknown profile"):
        R.reproduce("5", "huge", out_root=tmp_path)
    with pytest.raises(ValueError, match="data-root"):
        R.reproduce("5", "full", out_root=tmp_path)
    with pytest.raises(FileNotFoundError, match="data root not found"):
        R.reproduce("5", "full", data_root=str(tmp_path / "nope"), out_root=tmp_path)
    with pytest.raises(ValueError, match="seeds must be a positive integer"):
        R.reproduce("5", "smoke", seeds=0, out_root=tmp_path)
    assert not any(tmp_path.iterdir())
    assert main(["reproduce", "--table", "42", "--profile", "smoke", "--out-root", str(tmp_path)]) == 2


def test_full_profile_needs_data_in_the_notebook_too(tmp_path):
    with pytest.raises(ValueError, match="data_root"):
        runner.run("5", "full", out_dir=str(tmp_path))
    with pytest.raises(ValueError, match="unknown table"):
        runner.run("42", "smoke", out_dir=str(tmp_path))


def test_success_writes_results_with_provenance_and_replaces_old(fake_book, tmp_path):
    _notebook(fake_book / "table5.ipynb", WRITE_ROWS)
    out = tmp_path / "runs"
    old = out / "table5" / "smoke"
    old.mkdir(parents=True)
    (old / "results.json").write_text('{"rows": "old"}')
    d = R.reproduce("5", "smoke", seeds=2, out_root=out, progress=False, command="test")
    res = json.loads((d / "results.json").read_text())
    assert res["version"] == 2 and res["rows"][0]["top1_seeds"] == [1.0, 3.0] and res["rows"][0]["top1"] == 2.0
    assert Result.load(d / "results.json").row("new").std("top1") == math.sqrt(2)
    prov = res["provenance"]
    assert prov["command"] == "test" and prov["seed"] == [0, 1] and prov["parameters"]["profile"] == "smoke"
    assert prov["parameters"]["seeds"] == 2 and "out_dir" not in prov["parameters"]
    assert "commit" in prov["git"] and prov["versions"]["torch"] and prov["hardware"]["cpu_count"]
    assert prov["wall_time_s"] >= 0
    assert not (d / "result.json").exists()
    assert sorted(p.name for p in (out / "table5").iterdir()) == ["smoke"]   # no temp or old folder left
    nb = json.loads((d / "table5.ipynb").read_text())
    injected = [c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert injected and "remove-cell" in injected[0]["metadata"]["tags"]


def test_provenance_records_the_code_at_the_start(fake_book, tmp_path, monkeypatch):
    """A commit made while a long run goes on must not be credited with its numbers."""
    _notebook(fake_book / "table5.ipynb", WRITE_ROWS)
    states = iter([{"commit": "a" * 40, "dirty": False, "branch": "main"},
                   {"commit": "b" * 40, "dirty": False, "branch": "main"}])
    monkeypatch.setattr(R, "git_state", lambda: next(states))
    monkeypatch.setattr(P, "git_state", lambda: next(states))
    prov = json.loads((R.reproduce("5", "smoke", out_root=tmp_path, progress=False) / "results.json").read_text())["provenance"]
    assert prov["git"]["commit"] == "a" * 40 and prov["git_changed_during_run"]["commit"] == "b" * 40
    monkeypatch.setattr(R, "git_state", lambda: {"commit": "c" * 40, "dirty": False, "branch": "main"})
    monkeypatch.setattr(P, "git_state", lambda: {"commit": "c" * 40, "dirty": False, "branch": "main"})
    prov = json.loads((R.reproduce("5", "smoke", out_root=tmp_path, progress=False) / "results.json").read_text())["provenance"]
    assert prov["git"]["commit"] == "c" * 40 and "git_changed_during_run" not in prov


def test_results_written_under_runs_are_not_a_dirty_tree(tmp_path):
    """`make reproduce TABLE=all` rewrites runs/table1/... before Table 2 starts: Table 2's code is
    still the commit's. A changed code file is dirt; a changed result is only `results_changed`."""
    import subprocess

    def git(*a):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "runs" / "table1").mkdir(parents=True)
    (tmp_path / "runs" / "table1" / "results.json").write_text("{}")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "c")
    state = P.git_state(tmp_path)
    assert len(state["commit"]) == 40 and state["dirty"] is False and state["results_changed"] is False
    (tmp_path / "runs" / "table1" / "results.json").write_text('{"rows": []}')
    state = P.git_state(tmp_path)
    assert state["dirty"] is False and state["results_changed"] is True
    (tmp_path / "code.py").write_text("x = 2\n")
    assert P.git_state(tmp_path)["dirty"] is True


@pytest.mark.parametrize("body", ['raise RuntimeError("boom")', 'x = 1  # finishes without result.json',
                                  'open(out_dir + "/result.json", "w").write("{\\"rows\\": []}")  # schema 1'])
def test_failure_keeps_previous_result(fake_book, tmp_path, body):
    _notebook(fake_book / "table5.ipynb", body)
    out = tmp_path / "runs"
    good = out / "table5" / "smoke"
    good.mkdir(parents=True)
    (good / "results.json").write_text('{"rows": "good"}')
    with pytest.raises(R.NotebookFailed, match="untouched"):
        R.reproduce("5", "smoke", out_root=out, progress=False)
    assert (good / "results.json").read_text() == '{"rows": "good"}'
    failed = out / "table5" / ".smoke.failed"
    assert (failed / "table5.ipynb").exists() and not (failed / "results.json").exists()
    assert not list((out / "table5").glob(".smoke.tmp-*"))


def test_failure_without_previous_result_leaves_none(fake_book, tmp_path):
    _notebook(fake_book / "table5.ipynb", 'raise RuntimeError("boom")')
    out = tmp_path / "runs"
    with pytest.raises(R.NotebookFailed, match="no result was written"):
        R.reproduce("5", "smoke", out_root=out, progress=False)
    assert not list(out.rglob("results.json"))


@pytest.mark.slow
def test_table5_smoke_end_to_end(tmp_path):
    """The issue's acceptance check: rows tsn/cstm/cmm/stm (and the frame-difference reference, a
    row of this project's) with a measured top-1 per seed, the commit, and a run cache that serves
    a second table without training."""
    d = R.reproduce("5", profile="smoke", seeds=2, out_root=tmp_path, progress=False)
    assert d == tmp_path / "table5" / "smoke"
    res = Result.load(d / "results.json")
    rows = {r.id: r for r in res.rows}
    assert set(rows) == {"tsn", "cstm", "cmm", "stm", "tsn-diff"}
    assert rows["tsn-diff"].reference and not rows["tsn-diff"].paper
    for rid, r in rows.items():
        assert len(r.seeds["top1"]) == 2 and all(0 <= v <= 100 for v in r.seeds["top1"]), r
        assert r.status == "smoke" and (r.reference or r.paper["top1"]) and r.model == rid
        assert [s.seed for s in r.runs] == [0, 1] and all((d / s.run / "metrics.csv").exists() for s in r.runs)
        assert all(len(s.val_top1) == s.epochs == 1 and s.config["train"]["seed"] == s.seed for s in r.runs)
    assert {c.verdict for c in res.claims} <= {"holds", "reversed", "not resolved", "uninformative"}
    assert len(res.provenance["git"]["commit"]) == 40
    assert res.settings["profile"] == "smoke" and res.seeds == [0, 1]
    assert (d / "table5.ipynb").exists() and (d / "table5.csv").exists()
    nb = json.loads((d / "table5.ipynb").read_text())
    assert not [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    def runs_in_cache():   # run folders (not the logs or the per-run lock files)
        return sorted(p.name for p in (tmp_path / "_cache").iterdir() if p.is_dir() and not p.name.startswith("."))

    cache = runs_in_cache()
    assert len(cache) == 10   # 5 rows x 2 seeds
    d6 = R.reproduce("6", profile="smoke", seeds=2, out_root=tmp_path, progress=False)
    r6 = Result.load(d6 / "results.json")
    assert r6.row("tsn").seeds["top1"] == rows["tsn"].seeds["top1"]          # the same runs, not retrained
    assert {s.cache for s in r6.row("tsn").runs} <= set(cache)
    assert len(runs_in_cache()) == 12                                        # + stm-concat x 2 seeds only


def test_plan_follows_the_paper_at_full_and_seeds_vary_only_the_seed():
    full = {(rid, seed): c for rid, _, seed, c in runner.plan("9", "full", data_root="/data/ssv1")}
    assert set(full) == {("tsm-8", 0), ("tsm-16", 0), ("stm-8", 0), ("stm-16", 0)}
    for (rid, _), c in full.items():   # section 4.2: 8 x 8 = 64 clips at 8 frames, 8 x 4 = 32 at 16, lr 0.01
        assert c.model.frames == (8 if rid.endswith("-8") else 16)
        assert c.train.batch_size == (64 if c.model.frames == 8 else 32)
        assert c.train.lr == 0.01 and c.train.lr_scale is False and (c.data.test_clips, c.data.test_crops) == (10, 3)
    proxy = runner.plan("5", "proxy", seeds=3, overrides={"model": {"dropout": 0.0}})
    assert len(proxy) == 5 * 3                       # the paper's 4 rows and the frame-difference reference
    for rid in ("tsn", "cstm", "cmm", "stm", "tsn-diff"):
        cs = [c for r, _, _, c in proxy if r == rid]
        assert [c.train.seed for c in cs] == [0, 1, 2] and {c.data.proxy_seed for c in cs} == {0}
        assert all(c.model.dropout == 0.0 for c in cs)
        assert len({json.dumps(dict(c.to_dict(), train={**c.to_dict()["train"], "seed": 0}), default=list)
                    for c in cs}) == 1   # nothing but the seed differs
        keys = {runner.cache_key(c) for c in cs}
        assert len(keys) == 3
    c = proxy[0][3]
    assert runner.cache_key(c) == runner.cache_key(c.update("train", out="/elsewhere", device="cpu"))
    assert runner.cache_key(c) != runner.cache_key(c.update("train", lr=0.03))
    with pytest.raises(ValueError, match="unknown section"):
        runner.plan("5", "smoke", overrides={"optim": {"lr": 1}})
    with pytest.raises(ValueError, match="distinct seed values"):
        runner.plan("5", "smoke", seeds=[1, 1])


def test_prefetch_starts_every_rows_first_seed_before_any_second(tmp_path, monkeypatch):
    """Seed-major order: a prefetch stopped early (a GPU lease ending) leaves every row with its
    first seeds rather than some rows complete and others empty."""
    from concurrent.futures import ThreadPoolExecutor

    from stm_lib.book import pool

    class InOrder(ThreadPoolExecutor):   # one thread: runs execute in submission order
        def __init__(self, max_workers, mp_context=None, initializer=None):
            super().__init__(max_workers=1)

    seen = []
    monkeypatch.setattr(pool, "ProcessPoolExecutor", InOrder)
    monkeypatch.setattr(pool, "_train_one", lambda cfg, *a: seen.append((cfg.train.seed, cfg.model.name)) or (0.0, 0.0))
    monkeypatch.setattr(pool.runner, "_prepare_proxy", lambda *a, **k: None)
    assert pool.prefetch(["5"], "smoke", 2, tmp_path, 1, log=lambda *a, **k: None) == []
    models = [m for _, m in seen]
    assert len(seen) == 10 and [s for s, _ in seen] == [0] * 5 + [1] * 5 and models[:5] == models[5:]


@pytest.mark.slow
def test_prefetch_trains_each_run_once_in_parallel_and_notebooks_find_them(tmp_path, capsys):
    """`stm reproduce --jobs 2`: Table 4's fine-tunes wait for their pre-training run; a second
    prefetch and the table's own run then train nothing."""
    from stm_lib.book import pool

    cache, logs = tmp_path / "_cache", []
    params = {"models": ["stm"]}
    assert pool.prefetch(["4", "6"], "smoke", 1, cache, 2, params=params, log=lambda *a, **k: logs.append(a[0])) == []
    # wave 1: Table 6's stm and Table 4's pre-training; wave 2: the UCF-101 and HMDB-51 fine-tunes
    assert [line.split(" (")[0] for line in logs if line.startswith("training")] == ["training 2 run(s)"] * 2
    done = sorted(p.parent.name for p in cache.glob("*/done.json"))
    assert len(done) == 4 and all((cache / f"{k}.log").is_file() for k in done)
    logs.clear()
    assert pool.prefetch(["4", "6"], "smoke", 1, cache, 2, params=params, log=lambda *a, **k: logs.append(a[0])) == []
    assert logs == []
    capsys.readouterr()
    res = runner.run("4", "smoke", 1, models=["stm"], out_dir=str(tmp_path / "t4"), cache_dir=str(cache))
    out = capsys.readouterr().out
    assert out.count("cached run") == 3   # pre-training and both fine-tunes: nothing trained
    assert len(res.row("stm").seeds["top1_ucf101"]) == 1


def test_a_proxy_generator_change_gives_new_run_keys(monkeypatch):
    """The run key carries the proxy generator's version after the committed runs' versions: a
    committed Table 5 run keeps its recorded key; a scene generator change moves every scene key
    (a cached run on the old clips is not reused) and no temporal one."""
    from stm_lib.data import proxy

    def first(table):
        return next(c for r, p, s, c in runner.plan(table, "proxy", None) if r == "tsn" and s == 0)

    t5, t3 = first("5"), first("3")
    recorded = json.loads((Path(__file__).resolve().parents[1] / "runs/table5/proxy/results.json").read_text())
    tsn0 = next(r for r in recorded["rows"] if r["id"] == "tsn")["runs"][0]
    assert tsn0["seed"] == 0 and runner.cache_key(t5) == tsn0["cache"]
    before = runner.cache_key(t3)
    monkeypatch.setattr(proxy, "SCENE_VERSION", proxy.SCENE_VERSION + 1)
    assert runner.cache_key(t3) != before and runner.cache_key(t5) == tsn0["cache"]
    monkeypatch.setattr(proxy, "VERSION", proxy.VERSION + 1)
    assert runner.cache_key(t5) != tsn0["cache"]
