"""`stm reproduce`: a table's notebook -> runs/<table>/<profile>/ with results.json and provenance,
written atomically; clear errors for bad arguments."""
import json
from pathlib import Path

import nbformat
import pytest

from stm_lib import reproduce as R
from stm_lib.book.experiments import Experiment
from stm_lib.cli import main


def _notebook(path: Path, body: str) -> None:
    """A minimal parameterised notebook: a `parameters` cell and one code cell."""
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell('profile = "proxy"\nout_dir = "x"\ndata_root = None\ndevice = "auto"\nseed = 0')
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


WRITE_ROWS = ('import json, pathlib\n'
              'pathlib.Path(out_dir, "rows.json").write_text(json.dumps({"table": "5", "rows": [{"id": "new", "top1": 1.0}]}))')


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
    assert not any(tmp_path.iterdir())
    assert main(["reproduce", "--table", "42", "--profile", "smoke", "--out-root", str(tmp_path)]) == 2


def test_full_profile_needs_data_in_the_notebook_too(tmp_path):
    with pytest.raises(ValueError, match="data_root"):
        Experiment("5", profile="full", out_dir=str(tmp_path))


def test_success_writes_results_with_provenance_and_replaces_old(fake_book, tmp_path):
    _notebook(fake_book / "table5.ipynb", WRITE_ROWS)
    out = tmp_path / "runs"
    old = out / "table5" / "smoke"
    old.mkdir(parents=True)
    (old / "results.json").write_text('{"rows": "old"}')
    d = R.reproduce("5", "smoke", out_root=out, progress=False, command="test")
    res = json.loads((d / "results.json").read_text())
    assert res["rows"] == [{"id": "new", "top1": 1.0}]
    prov = res["provenance"]
    assert prov["command"] == "test" and prov["seed"] == 0 and prov["parameters"]["profile"] == "smoke"
    assert "commit" in prov["git"] and prov["versions"]["torch"] and prov["hardware"]["cpu_count"]
    assert prov["wall_time_s"] >= 0
    assert not (d / "rows.json").exists()
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
    prov = json.loads((R.reproduce("5", "smoke", out_root=tmp_path, progress=False) / "results.json").read_text())["provenance"]
    assert prov["git"]["commit"] == "a" * 40 and prov["git_changed_during_run"]["commit"] == "b" * 40
    monkeypatch.setattr(R, "git_state", lambda: {"commit": "c" * 40, "dirty": False, "branch": "main"})
    prov = json.loads((R.reproduce("5", "smoke", out_root=tmp_path, progress=False) / "results.json").read_text())["provenance"]
    assert prov["git"]["commit"] == "c" * 40 and "git_changed_during_run" not in prov


@pytest.mark.parametrize("body", ['raise RuntimeError("boom")', 'x = 1  # finishes without rows.json'])
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
    """The issue's acceptance check: rows tsn/cstm/cmm/stm with a measured top-1, and the commit."""
    d = R.reproduce("5", profile="smoke", out_root=tmp_path, progress=False)
    assert d == tmp_path / "table5" / "smoke"
    res = json.loads((d / "results.json").read_text())
    rows = {r["id"]: r for r in res["rows"]}
    assert set(rows) == {"tsn", "cstm", "cmm", "stm"}
    for rid, r in rows.items():
        assert isinstance(r["top1"], float) and 0 <= r["top1"] <= 100, r
        assert r["status"] == "smoke" and r["paper_top1"] > 0 and r["model"] == rid
        assert (d / r["run"] / "metrics.csv").exists()
    assert len(res["provenance"]["git"]["commit"]) == 40
    assert res["settings"]["profile"] == "smoke"
    assert (d / "table5.ipynb").exists() and (d / "table5.csv").exists()
    assert (d / "figures" / "bars.png").exists() and (d / "figures" / "curves.png").exists()
    nb = json.loads((d / "table5.ipynb").read_text())
    assert not [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]


def test_verdict_uses_two_standard_errors():
    from stm_lib.book.experiments import verdict

    a = {"top1": 80.0, "n_val": 200}
    assert verdict(a, {"top1": 20.0}, "top1")[3] == "holds"
    assert verdict(a, {"top1": 78.0}, "top1")[3] == "noise"     # 2 SE of a 200-clip set is ~8 points
    assert verdict({"top1": 20.0, "n_val": 200}, {"top1": 80.0}, "top1")[3] == "reversed"
