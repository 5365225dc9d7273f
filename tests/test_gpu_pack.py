"""Issue 10 item 8's round trip, run on the CPU: `runs/gpu/device_job.py` trains a table's runs into
a cache and packs them, `runs/gpu/unpack.py` checks the pack and puts its runs in another cache,
and the page then trains nothing. The unpacker is given packs a careless or malicious machine
could send back: each is refused with one line and leaves the cache as it was."""
from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _unpack_module():
    spec = importlib.util.spec_from_file_location("gpu_unpack", ROOT / "runs" / "gpu" / "unpack.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    """Table 4 at the smoke profile, one seed, packed by device_job.py on the CPU: pre-training
    runs and the fine-tunes that start from their backbones."""
    d = tmp_path_factory.mktemp("device")
    env = {**os.environ, "STM_PROXY_CACHE": str(d / "proxy-there"), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(ROOT / "runs" / "gpu" / "device_job.py"), str(d / "out"), "600",
                        "--tables", "4", "--seeds", "1", "--jobs", "2", "--profile", "smoke", "--device", "cpu",
                        "--cache", str(d / "cache-there")], env=env, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return d / "out"


def _copy(pack: Path, to: Path) -> Path:
    shutil.copytree(pack, to)
    return to


def _rewrite(tar_path: Path, change) -> None:
    """Rewrite a pack's tarball, `change(name, bytes)` -> bytes (None: leave the member out)."""
    with tarfile.open(tar_path) as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
    with tarfile.open(tar_path, "w:gz") as tar:
        for m, data in members:
            data = change(m.name, data) if data is not None else None
            if data is not None:
                m.size = len(data)
                tar.addfile(m, io.BytesIO(data))


@pytest.mark.slow
def test_packed_runs_serve_the_page_without_training(pack, tmp_path, monkeypatch, capsys):
    from stm_lib.book import runner

    monkeypatch.setenv("STM_PROXY_CACHE", str(tmp_path / "proxy-here"))   # generated afresh here
    summary = json.loads((pack / "summary.json").read_text())
    assert summary["planned"] == len(summary["runs_done"]) == 8   # 2 pre-trainings, 2 x 3 fine-tunes
    cache = tmp_path / "_cache"
    added = _unpack_module().unpack(pack, cache, log=lambda *a: None)
    assert sorted(added) == sorted(summary["runs_done"])
    assert sum((cache / k / "backbone.pth").is_file() for k in added) == 2   # the fine-tunes' starting points
    capsys.readouterr()
    res = runner.run("4", "smoke", 1, out_dir=str(tmp_path / "t4"), cache_dir=str(cache))
    out = capsys.readouterr().out
    assert out.count("cached run") == 8 and " s)" not in out   # nothing trained here
    assert all(s.trained_on for r in res.rows for s in r.runs)
    # a second unpack keeps what is there
    assert _unpack_module().unpack(pack, cache, log=lambda *a: None) == []


def _refused(pack: Path, cache: Path, capsys) -> str:
    before = sorted(p.name for p in cache.iterdir()) if cache.exists() else []
    r = subprocess.run([sys.executable, str(ROOT / "runs" / "gpu" / "unpack.py"), str(pack), "--cache", str(cache)],
                       cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "STM_PROXY_CACHE": str(cache.parent / "proxy-here")})
    assert r.returncode == 2 and r.stdout == "", r.stdout + r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert sorted(p.name for p in cache.iterdir()) == before   # nothing added, nothing left behind
    return r.stderr


@pytest.mark.slow
def test_a_run_filed_under_another_runs_key_is_refused(pack, tmp_path, capsys):
    p = _copy(pack, tmp_path / "pack")

    def bump_seed(name, data):
        if name.endswith("done.json"):
            d = json.loads(data)
            d["config"]["train"]["seed"] += 1
            return json.dumps(d).encode()
        return data

    _rewrite(p / "cache.tar.gz", bump_seed)
    assert "not its folder's name" in _refused(p, tmp_path / "_cache", capsys)


@pytest.mark.slow
def test_runs_trained_on_other_data_are_refused(pack, tmp_path, capsys):
    p = _copy(pack, tmp_path / "pack")
    s = json.loads((p / "summary.json").read_text())
    name = next(iter(s["proxy_digests"]))
    s["proxy_digests"][name] = "0" * 16
    (p / "summary.json").write_text(json.dumps(s))
    assert "not the same data" in _refused(p, tmp_path / "_cache", capsys)


@pytest.mark.slow
def test_a_member_outside_the_cache_is_refused(pack, tmp_path, capsys):
    p = _copy(pack, tmp_path / "pack")
    with tarfile.open(p / "cache.tar.gz", "w:gz") as tar:
        m = tarfile.TarInfo("../escaped.txt")
        m.size = 3
        tar.addfile(m, io.BytesIO(b"pwn"))
    assert "refused before unpacking" in _refused(p, tmp_path / "_cache", capsys)
    assert not (tmp_path / "escaped.txt").exists()


def test_a_folder_that_is_not_a_pack_is_refused(tmp_path, capsys):
    (tmp_path / "pack").mkdir()
    (tmp_path / "_cache").mkdir()
    assert "summary.json" in _refused(tmp_path / "pack", tmp_path / "_cache", capsys)
