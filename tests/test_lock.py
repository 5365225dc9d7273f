"""The locked environment: requirements.lock answers pyproject.toml (every requirement pinned inside
its specifier, every entry hashed, the digest of pyproject's requirements recorded), environment.yml
is generated from it, this venv is exactly the lock, and provenance and the book carry its hash."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("lockfile", ROOT / "tools" / "lockfile.py")
lockfile = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lockfile)
LOCK_TEXT = lockfile.LOCK.read_text()
SHA = hashlib.sha256(lockfile.LOCK.read_bytes()).hexdigest()


def test_lock_answers_pyproject():
    assert lockfile.disagreements() == []
    pins = lockfile.read_lock(LOCK_TEXT)
    assert pins["torch"][0] == "2.14.1" and pins["torchvision"][0] == "0.29.1" and pins["decord"][0] == "0.6.0"
    assert {"pip", "setuptools", "pytest", "submitit", "jupyter-book", "sphinx-mathjax-offline"} <= set(pins)
    assert all(len(h) == 64 for _, hashes in pins.values() for h in hashes)


def test_lock_command_is_the_makefile_one():
    """The header's command is the one `make lock` runs (uv writes it; -q aside)."""
    command = LOCK_TEXT.splitlines()[1].removeprefix("#    uv ")
    assert command.startswith("pip compile pyproject.toml") and command in (ROOT / "Makefile").read_text()


def _pyproject_with(tmp_path, old, new):
    text = (ROOT / "pyproject.toml").read_text()
    assert old in text
    (tmp_path / "pyproject.toml").write_text(text.replace(old, new))
    return tmp_path / "pyproject.toml"


@pytest.mark.parametrize("old, new, expect", [
    ('"torch==2.14.1"', '"torch==2.13.0"', "torch==2.13.0: the lock pins 2.14.1"),
    ('test = ["pytest"]', 'test = ["pytest", "hypothesis"]', "hypothesis: not in the lock"),
    ('"tqdm", ', '', "requirements changed"),    # a removal: only the digest can see it
])
def test_a_pyproject_change_without_relocking_fails(tmp_path, old, new, expect):
    problems = lockfile.disagreements(_pyproject_with(tmp_path, old, new))
    assert any(expect in p for p in problems), problems


def test_an_entry_without_hash_fails():
    text = LOCK_TEXT + "tabulate2==1.0\n"
    assert "tabulate2: no sha256 hash" in lockfile.disagreements(lock_text=text)


def test_stamp_is_idempotent_and_environment_yml_is_generated():
    assert lockfile.stamp(LOCK_TEXT, lockfile.digest()) == LOCK_TEXT
    assert lockfile.ENVIRONMENT.read_text() == lockfile.environment_yml(LOCK_TEXT)


@pytest.mark.skipif(sys.prefix == sys.base_prefix, reason="not in a venv (make setup builds .venv from the lock)")
def test_this_venv_is_exactly_the_lock():
    """`pip freeze --all` here equals the lock (names and versions; pip checked the hashes)."""
    assert lockfile.installed_differences() == []


@pytest.mark.skipif(sys.prefix == sys.base_prefix, reason="not in a venv (make setup builds .venv from the lock)")
def test_importing_setuptools_does_not_change_what_is_installed():
    """setuptools puts its _vendor folder (dist-infos of zipp, jaraco-*, ...) on sys.path when
    imported, as torch's inductor does mid-suite: the lock check reads site-packages only."""
    before = lockfile.installed_differences()
    import setuptools  # noqa: F401

    vendored = [p for p in sys.path if p.rstrip("/").endswith("_vendor")]
    assert vendored, "setuptools no longer extends sys.path: this test can go"
    assert lockfile.installed_differences() == before


def test_provenance_records_the_lock(tmp_path):
    from stm_lib import provenance as P

    v = P.versions()
    assert v["lock"] == "requirements.lock" and v["lock_sha256"] == SHA and isinstance(v["lock_mismatch"], list)
    assert P.lock_state(tmp_path / "absent.lock") == {"lock": None, "lock_sha256": None, "lock_mismatch": None}
    other = tmp_path / "r.lock"
    other.write_text("# header\naaa-not-installed==1.0 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    state = P.lock_state(other)
    assert state["lock_sha256"] == hashlib.sha256(other.read_bytes()).hexdigest()
    assert state["lock_mismatch"][0] == "aaa-not-installed: installed None, lock 1.0"
    assert len(state["lock_mismatch"]) == 21 and state["lock_mismatch"][-1].endswith("more")   # at most 20 listed


def test_run_json_and_provenance_box_carry_the_lock_hash(tmp_path):
    from stm_lib import provenance as P
    from stm_lib.book import report
    from stm_lib.book.result import Result
    from stm_lib.config import Config
    from stm_lib.engine.distributed import DistInfo
    from stm_lib.engine.train import _write_provenance

    _write_provenance(tmp_path, Config(), {"id": "s0", "status": "finished", "command": "stm train"}, DistInfo())
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["versions"]["lock_sha256"] == SHA and run["versions"]["lock"] == "requirements.lock"

    res = Result("5", "proxy", "t", None, [])
    res.provenance = P.record(command="stm reproduce")
    box = report.provenance_box(res, {}, "runs/x")
    assert f"`requirements.lock` sha256 `{SHA}`" in box
    res.provenance = {"versions": {"torch": "2.14.1"}}   # a run from before the lock
    assert "no lock recorded" in report.provenance_box(res, {}, "runs/x")
