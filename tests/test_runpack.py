"""Runs as portable units (issue 31 item 2; issue 10 item 8 and issue 28 before it): `stm runs pack`
puts the finished runs of a cache into one file, `stm runs unpack` checks it and puts its runs into
another clone's cache, and `stm reproduce` there renders the page without training anything.
Packs a careless or malicious machine could send back are refused with one line and leave the
cache as it was. Fast tests build packs by hand; the slow ones train Table 4's STM rows at the
smoke profile (a pre-training run and two fine-tunes from its backbone) through tools/gpu_job.py."""
from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from stm_lib import runpack
from stm_lib.book import runner
from stm_lib.config import Config
from stm_lib.data.proxy import proxy_path

ROOT = Path(__file__).resolve().parents[1]


def stm(*args, cwd: Path, proxies: Path, timeout=900) -> subprocess.CompletedProcess:
    env = {**os.environ, "STM_PROXY_CACHE": str(proxies), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "stm_lib.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def tree(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*")) if d.exists() else []


def refused(pack: Path, tmp: Path, precreate: bool = True) -> str:
    """`stm runs unpack PACK` into a fresh clone's cache: exit 2, one line on stderr naming the
    problem, no output but progress, nothing written into the clone (no run, no temporary folder)."""
    clone = tmp / "clone"
    (clone / "runs" / "_cache" if precreate else clone).mkdir(parents=True, exist_ok=True)
    before = tree(clone)
    r = stm("runs", "unpack", pack, cwd=clone, proxies=tmp / "proxy-here", timeout=300)
    assert r.returncode == 2, r.stdout + r.stderr
    assert all(line.startswith("generating proxy") for line in r.stdout.splitlines()), r.stdout   # progress only
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("stm runs unpack: error: ")
    assert tree(clone) == before   # nothing added, nothing left behind
    return r.stderr


# ---- hand-made packs (fast) -------------------------------------------------------------------------

KEY = "0123456789abcdef"


def _done(top1=34.0, file="eval_val_1x1_last.json", **kw) -> bytes:
    return json.dumps({"key": KEY, "top1": top1, "top5": 90.0, "n": 200, "file": file, **kw}).encode()


def _add(tar, name, data: bytes = b"", **kw):
    m = tarfile.TarInfo(name)
    m.size = len(data)
    for k, v in kw.items():
        setattr(m, k, v)
    tar.addfile(m, io.BytesIO(data) if data else None)


def _manifest(runs=(KEY,), **kw) -> bytes:
    runs = runs if isinstance(runs, str) else list(runs)
    return json.dumps({"format": runpack.FORMAT, "version": runpack.VERSION, "cache": "/nowhere", "runs": runs,
                       "proxy_digests": {}, "starts": {}, "flow": {}, "missing": [], **kw}).encode()


def _pack(tmp: Path, members, manifest: bytes | None = None) -> Path:
    p = tmp / "runs.tar.gz"
    with tarfile.open(p, "w:gz") as tar:
        _add(tar, runpack.MANIFEST, manifest if manifest is not None else _manifest())
        for m in members:
            _add(tar, *m[:2], **(m[2] if len(m) > 2 else {}))
    return p


def _run(cache: Path, cfg: Config, top1=34.0, key_cfg: Config | None = None, cache_for_key=None) -> str:
    """A finished run folder made by hand (no training): its record, evaluation file and metrics,
    filed under the cache key of `key_cfg` (default: its own config)."""
    key = runner.cache_key(key_cfg or cfg, cache_for_key or cache.resolve())
    d = cache / key
    d.mkdir(parents=True)
    (d / "done.json").write_text(json.dumps({"key": key, "top1": top1, "top5": 90.0, "n": 200,
                                             "file": "eval_val_1x1_last.json", "config": cfg.to_dict()}, default=list))
    (d / "eval_val_1x1_last.json").write_text(json.dumps({"top1": top1 / 100, "top5": 0.9, "n": 200}))
    (d / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "val_top1": top1 / 100}) + "\n")
    (d / "checkpoint_last.pt").write_bytes(b"weights stay behind")
    (cache / f"{key}.log").write_text("trained\n")
    return key


def _real_data(seed: int) -> Config:   # a real dataset: no proxy to generate or digest
    return Config().update("data", dataset="ssv1", data_root="/data/ssv1").update("train", seed=seed)


ESCAPE = "x/" + "../" * 12 + "tmp/stm-untrusted-PWNED.txt"


def test_pack_and_unpack_round_trip_by_hand(tmp_path):
    """Two runs packed by `stm runs pack`, unpacked by `stm runs unpack` into another clone: the
    small files travel, checkpoints do not, and a second unpack keeps what is there."""
    a, b = tmp_path / "a", tmp_path / "b"
    keys = sorted(_run(a / "runs" / "_cache", _real_data(s)) for s in (0, 1))
    r = stm("runs", "pack", "--out", "runs.tar.gz", cwd=a, proxies=tmp_path / "px")
    assert r.returncode == 0 and "packed 2 run(s)" in r.stdout, r.stdout + r.stderr
    with tarfile.open(a / "runs.tar.gz") as tar:
        names = tar.getnames()
        assert names[0] == runpack.MANIFEST and not [n for n in names if n.endswith(".pt")]
        m = json.loads(tar.extractfile(runpack.MANIFEST).read())
    assert m["runs"] == keys and m["cache"] == str((a / "runs" / "_cache").resolve()) and m["proxy_digests"] == {}
    b.mkdir()
    r = stm("runs", "unpack", a / "runs.tar.gz", cwd=b, proxies=tmp_path / "px")
    assert r.returncode == 0 and "added 2 of 2" in r.stdout, r.stdout + r.stderr
    here, there = b / "runs" / "_cache", a / "runs" / "_cache"
    for k in keys:
        assert (here / k / "done.json").read_bytes() == (there / k / "done.json").read_bytes()
        assert (here / f"{k}.log").is_file() and not (here / k / "checkpoint_last.pt").exists()
        assert runner.check_done(here / k)["top1"] == 34.0
    assert runpack.unpack(a / "runs.tar.gz", b / "runs" / "_cache", log=lambda *x: None) == []   # kept
    assert not [p for p in b.iterdir() if p.name.startswith(".unpack-")]


def test_pack_refuses_a_forged_run_in_its_own_cache(tmp_path):
    cache = tmp_path / "_cache"
    key = _run(cache, _real_data(0))
    done = cache / key / "done.json"
    done.write_text(done.read_text().replace('"top1": 34.0', '"top1": 99.0'))
    r = stm("runs", "pack", "--cache", cache, "--out", tmp_path / "p.tar.gz", cwd=tmp_path, proxies=tmp_path / "px")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "is not its evaluation file's" in r.stderr
    assert not (tmp_path / "p.tar.gz").exists() and not list(tmp_path.glob(".p.tar.gz*"))
    r = stm("runs", "pack", "--cache", tmp_path / "nope", "--out", tmp_path / "p.tar.gz", cwd=tmp_path,
            proxies=tmp_path)
    assert r.returncode == 2 and "no run cache there" in r.stderr


def test_a_run_fine_tuned_from_the_shared_start_is_keyed_by_its_hash(tmp_path):
    """A proxy-profile run names the shared start by its path on the machine that trained it; its
    cache key names the start's SHA-256. Unpacked, it is the run this checkout's start would train;
    from another start, it is refused."""
    from stm_lib import provenance
    from stm_lib.book.tables import START
    from stm_lib.pretrain import RECORD

    there = "/elsewhere/stm/" + START
    sha = json.loads((provenance.ROOT / START).with_name(RECORD).read_text())["sha256"]
    cfg = _real_data(0).update("model", pretrained=there)
    here = cfg.update("model", pretrained=str(provenance.ROOT / START))
    src = tmp_path / "src"
    key = _run(src, cfg, key_cfg=here)
    files = [(f"{key}/{p.name}", p.read_bytes()) for p in sorted((src / key).iterdir()) if p.suffix != ".pt"]
    good = _pack(tmp_path, files, _manifest([key], starts={there: sha}))
    cache = tmp_path / "clone" / "runs" / "_cache"
    assert runpack.unpack(good, cache, log=lambda *a: None) == [key]
    shutil.rmtree(tmp_path / "clone")
    bad = _pack(tmp_path, files, _manifest([key], starts={there: "f" * 64}))
    assert "not the same start" in refused(bad, tmp_path)


def test_a_pack_with_a_link_is_refused(tmp_path):
    p = _pack(tmp_path, [(f"{KEY}/done.json", _done()),
                         (f"{KEY}/x", b"", {"type": tarfile.SYMTYPE, "linkname": "/tmp"})])
    assert "is a link" in refused(p, tmp_path)


def test_a_done_json_naming_a_file_out_of_its_folder_is_refused(tmp_path):
    p = _pack(tmp_path, [(f"{KEY}/done.json", _done(file=ESCAPE))])
    err = refused(p, tmp_path)
    assert "not a plain file name inside its run folder" in err and "done.json" in err
    assert not Path("/tmp/stm-untrusted-PWNED.txt").exists()


def test_a_size_bomb_is_refused_on_its_declared_sizes(tmp_path):
    """One member declaring 3 GiB (the header alone: nothing that size is ever written)."""
    m = tarfile.TarInfo(f"{KEY}/metrics.csv")
    m.size = 3 << 30
    with gzip.open(tmp_path / "runs.tar.gz", "wb") as f:
        f.write(m.tobuf(tarfile.PAX_FORMAT) + b"\0" * 4096)
    err = refused(tmp_path / "runs.tar.gz", tmp_path)
    assert "declares 3221225472 bytes" in err and "refused before unpacking" in err
    assert (tmp_path / "runs.tar.gz").stat().st_size < 10_000


def test_many_small_members_are_refused(tmp_path):
    cap = runpack.MAX_MEMBERS
    p = _pack(tmp_path, [(f"{KEY}/f{i}.json", b"") for i in range(cap + 1)])
    assert f"more than {cap} members" in refused(p, tmp_path)


def test_a_forged_top1_in_a_pack_is_refused(tmp_path):
    p = _pack(tmp_path, [(f"{KEY}/done.json", _done(top1=99.0)),
                         (f"{KEY}/eval_val_1x1_last.json", json.dumps({"top1": 0.34, "top5": 0.9}).encode())])
    assert "is not its evaluation file's" in refused(p, tmp_path)


@pytest.mark.parametrize("manifest, want", [
    (None, "not a run pack (no pack.json"),
    (b"{", "pack.json is not readable JSON"),
    (b"[" * 100_000, "pack.json is not readable JSON"),
    (json.dumps({"runs": []}).encode(), "is not a stm-runs pack of version 1"),
    (_manifest(runs="all"), "runs must be a JSON list"),
    (_manifest(proxy_digests={"temporal-x": 3}), "proxy_digests must map names to strings"),
    (_manifest(runs=[KEY, "fedcba9876543210"]), "are not the ones pack.json lists"),
], ids=["none", "truncated", "deep", "other-format", "runs-type", "digest-type", "lists-more"])
def test_a_crafted_manifest_is_refused(tmp_path, manifest, want):
    p = tmp_path / "runs.tar.gz"
    with tarfile.open(p, "w:gz") as tar:
        if manifest is not None:
            _add(tar, runpack.MANIFEST, manifest)
        _add(tar, f"{KEY}/done.json", _done())
    assert want in refused(p, tmp_path)


def test_a_deeply_nested_done_json_is_one_line(tmp_path):
    p = _pack(tmp_path, [(f"{KEY}/done.json", b"[" * 100_000)])
    assert "done.json" in refused(p, tmp_path)


def test_what_is_not_a_pack_is_refused_and_no_cache_is_created(tmp_path):
    (tmp_path / "notes.txt").write_text("not a tarball")
    assert "cannot be unpacked" in refused(tmp_path / "notes.txt", tmp_path, precreate=False)
    assert "no such pack file" in refused(tmp_path / "missing.tar.gz", tmp_path, precreate=False)
    (tmp_path / "folder").mkdir()
    assert "no such pack file" in refused(tmp_path / "folder", tmp_path, precreate=False)


def test_a_proxy_cache_named_by_the_pack_is_never_written(tmp_path):
    """A run's `proxy_cache` is a path on the machine that trained it: the proxy is generated
    (for its digest) in this machine's proxy cache, never where the pack says."""
    evil = tmp_path / "evil"
    cfg = Config().update("data", dataset="proxy-temporal", proxy_cache=str(evil), proxy_videos=8,
                          proxy_classes=2, proxy_frames=4, proxy_resolution=16)
    name = proxy_path("temporal", dataclasses.replace(cfg.data, proxy_cache=None))[0].name
    src = tmp_path / "src"
    key = _run(src, cfg, cache_for_key="/nowhere")
    files = [(f"{key}/{f.name}", f.read_bytes()) for f in (src / key).iterdir() if f.suffix != ".pt"]
    assert "gives no digest" in refused(_pack(tmp_path, files, _manifest([key])), tmp_path)
    assert not (tmp_path / "proxy-here").exists()   # refused before generating anything
    p = _pack(tmp_path, files, _manifest([key], proxy_digests={name: "0" * 16}))
    assert "not the same data" in refused(p, tmp_path)
    assert not evil.exists() and (tmp_path / "proxy-here" / name / "proxy.json").is_file()


def test_a_proxy_too_large_to_generate_is_refused_before_generating(tmp_path):
    cfg = Config().update("data", dataset="proxy-temporal", proxy_videos=10**7, proxy_resolution=256)
    name = proxy_path("temporal", cfg.data)[0].name
    src = tmp_path / "src"
    key = _run(src, cfg, cache_for_key="/nowhere")
    files = [(f"{key}/{f.name}", f.read_bytes()) for f in (src / key).iterdir() if f.suffix != ".pt"]
    err = refused(_pack(tmp_path, files, _manifest([key], proxy_digests={name: "0" * 16})), tmp_path)
    assert "pixels generated to check a pack" in err and not (tmp_path / "proxy-here").exists()


# ---- trained runs (slow): the must-show ------------------------------------------------------------

@pytest.fixture(scope="module")
def clone_a(tmp_path_factory):
    """Clone A, a GPU machine in spirit: tools/gpu_job.py trains Table 4's STM rows at the smoke
    profile on the CPU into A/runs/_cache and packs them with `stm runs pack --table 4`."""
    a = tmp_path_factory.mktemp("clone-a")
    env = {**os.environ, "STM_PROXY_CACHE": str(a / "proxy"), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_job.py"), str(a / "out"), "3000", "--tables", "4",
                        "--models", "stm", "--seeds", "1", "--jobs", "2", "--profile", "smoke", "--device", "cpu",
                        "--cache", str(a / "runs" / "_cache")], env=env, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and (a / "out" / "runs.tar.gz").is_file(), r.stdout + r.stderr
    return a


def _manifest_of(pack: Path) -> dict:
    with tarfile.open(pack) as tar:
        return json.loads(tar.extractfile(runpack.MANIFEST).read())


@pytest.mark.slow
def test_a_pack_serves_the_page_in_another_clone_without_training(clone_a, tmp_path):
    """The must-show: `stm runs pack` in clone A, `stm runs unpack` in clone B (its own proxies,
    generated there and checked against A's digests), then `stm reproduce` in B trains nothing."""
    job = _manifest_of(clone_a / "out" / "runs.tar.gz")
    assert len(job["runs"]) == 3 and job["missing"] == []   # pre-training + UCF-101 and HMDB-51 fine-tunes
    pack = tmp_path / "runs.tar.gz"
    r = stm("runs", "pack", "--out", pack, cwd=clone_a, proxies=clone_a / "proxy")
    assert r.returncode == 0 and "packed 3 run(s)" in r.stdout, r.stdout + r.stderr
    m = _manifest_of(pack)
    assert m["runs"] == sorted(job["runs"]) and len(m["proxy_digests"]) >= 2
    with tarfile.open(pack) as tar:
        assert sum(n.endswith("/" + runner.BACKBONE) for n in tar.getnames()) == 1   # the fine-tunes' start

    b = tmp_path / "clone-b"
    b.mkdir()
    r = stm("runs", "unpack", pack, cwd=b, proxies=b / "proxy")
    assert r.returncode == 0 and "added 3 of 3" in r.stdout, r.stdout + r.stderr
    cache = b / "runs" / "_cache"
    records = {p: p.read_bytes() for p in cache.glob("*/done.json")}
    assert len(records) == 3 and not list(cache.rglob("*.pt"))
    r = stm("reproduce", "--table", "4", "--profile", "smoke", "--seeds", "1", "--params", '{"models": ["stm"]}',
            "--quiet", cwd=b, proxies=b / "proxy", timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "training" not in r.stdout   # the prefetch found every run cached
    assert not list(cache.rglob("*.pt")) and {p: p.read_bytes() for p in cache.glob("*/done.json")} == records
    page = b / "runs" / "table4" / "smoke"
    nb = (page / "table4.ipynb").read_text()
    assert nb.count("cached run ") == 3   # every run of the page came from the pack
    res = json.loads((page / "results.json").read_text())
    stm_row = next(row for row in res["rows"] if row["id"] == "stm")
    assert {run["cache"] for run in stm_row["runs"]} == set(m["runs"])
    assert all(run["trained_on"] for run in stm_row["runs"])
    # a second unpack keeps what is there
    assert runpack.unpack(pack, cache, log=lambda *a: None) == []


def _rewrite(pack: Path, change) -> None:
    """Rewrite a pack in place, `change(name, bytes)` -> bytes (None: leave the member out)."""
    with tarfile.open(pack) as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
    with tarfile.open(pack, "w:gz") as tar:
        for m, data in members:
            data = change(m.name, data) if data is not None else None
            if data is not None:
                m.size = len(data)
                tar.addfile(m, io.BytesIO(data))


@pytest.mark.slow
def test_a_run_filed_under_another_runs_key_is_refused(clone_a, tmp_path):
    p = shutil.copy(clone_a / "out" / "runs.tar.gz", tmp_path / "runs.tar.gz")

    def bump_seed(name, data):
        if name.endswith("done.json"):
            d = json.loads(data)
            d["config"]["train"]["seed"] += 1
            return json.dumps(d).encode()
        return data

    _rewrite(Path(p), bump_seed)
    assert "not its folder's name" in refused(Path(p), tmp_path)


@pytest.mark.slow
def test_runs_trained_on_other_data_are_refused(clone_a, tmp_path):
    p = Path(shutil.copy(clone_a / "out" / "runs.tar.gz", tmp_path / "runs.tar.gz"))

    def other_digest(name, data):
        if name == runpack.MANIFEST:
            m = json.loads(data)
            m["proxy_digests"] = {k: "0" * 16 for k in m["proxy_digests"]}
            return json.dumps(m).encode()
        return data

    _rewrite(p, other_digest)
    assert "not the same data" in refused(p, tmp_path)


@pytest.mark.slow
def test_a_member_outside_the_cache_is_refused(clone_a, tmp_path):
    p = Path(shutil.copy(clone_a / "out" / "runs.tar.gz", tmp_path / "runs.tar.gz"))
    with tarfile.open(p) as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
    with tarfile.open(p, "w:gz") as tar:
        for m, data in members:
            tar.addfile(m, io.BytesIO(data) if data is not None else None)
        _add(tar, "../escaped.txt", b"pwn")
    assert "refused before unpacking" in refused(p, tmp_path)
    assert not (tmp_path / "escaped.txt").exists()


# ---- adopt: a committed page's runs -----------------------------------------------------------------

PAGE5 = ROOT / "runs" / "table5" / "proxy"


def _page5_known() -> bool:
    commit = json.loads((PAGE5 / "results.json").read_text())["provenance"]["git"]["commit"]
    return subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=ROOT).returncode == 0


needs_page5 = pytest.mark.skipif(not (PAGE5 / "results.json").is_file() or not _page5_known(),
                                 reason="Table 5's committed page or its commit is not in this checkout")


def _copy_page(tmp: Path) -> Path:
    page = tmp / "page"
    shutil.copytree(PAGE5, page, ignore=shutil.ignore_patterns("*.ipynb", "figures"))
    return page


@needs_page5
def test_adopt_puts_table5s_runs_where_table_1_finds_them(tmp_path):
    """Table 5's committed runs, adopted, are the ones Tables 1, 8 and 9 plan (their shared rows):
    each under the key the page recorded, with the page's top-1 per seed; nothing is trained."""
    from stm_lib.book import pool

    cache = tmp_path / "cache"
    added = runpack.adopt(PAGE5, cache, log=lambda *_: None)
    res = json.loads((PAGE5 / "results.json").read_text())
    recorded = {sr["cache"]: sr["metrics"]["top1"] for r in res["rows"] for sr in r.get("runs") or []}
    assert sorted(added) == sorted(recorded) and len(added) == 25
    for key, top1 in recorded.items():
        ev = runner.check_done(cache / key)
        assert ev["top1"] == pytest.approx(top1, abs=0.05) and ev["adopted_from"] == str(PAGE5)
    for t, shared in (("1", 10), ("8", 5), ("9", 5)):
        planned = pool.plan_runs([t], "proxy", None, cache)[0]
        assert sum((cache / k / "done.json").is_file() for k in planned) == shared, t
        key, _, ev, cached = runner.train_cached(next(c for k, (_, c, _) in planned.items() if k in recorded),
                                                 cache, "proxy")
        assert cached and key in recorded   # served from the cache, not trained
    assert runpack.adopt(PAGE5, cache, log=lambda *_: None) == []   # kept, not written twice


@needs_page5
@pytest.mark.parametrize("change, want", [
    (lambda p, r: r["provenance"]["git"].update(dirty=True), "not from a clean tree"),
    (lambda p, r: r["rows"][0]["runs"][0]["config"]["train"].update(seed=7), "cache key"),
    (lambda p, r: r["rows"][0]["runs"][0].update(run="../../../etc"), "is not a folder of"),
    (lambda p, r: (p / r["rows"][1]["runs"][2]["run"] / "eval_val_1x1_last.json").write_text(
        json.dumps({**json.loads((p / r["rows"][1]["runs"][2]["run"] / "eval_val_1x1_last.json").read_text()),
                    "top1": 0.99})), "top1"),
    (lambda p, r: (p / "results.json").unlink(), "not a page's results.json"),
])
def test_adopt_refuses_a_page_that_does_not_qualify(tmp_path, change, want):
    """A dirty page, a config edited after the run (its key no longer the recorded one), a run
    folder out of the page, a forged top-1 (not its last validation): one line via the CLI, and the
    cache is left as it was."""
    page = _copy_page(tmp_path)
    res = json.loads((page / "results.json").read_text())
    change(page, res)
    if (page / "results.json").is_file():
        (page / "results.json").write_text(json.dumps(res))
    cache = tmp_path / "runs" / "_cache"
    cache.mkdir(parents=True)
    r = subprocess.run([sys.executable, "-m", "stm_lib.cli", "runs", "adopt", str(page), "--cache", str(cache)],
                       cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2, r.stdout + r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("stm runs adopt: error: ") and want in r.stderr, r.stderr
    assert tree(tmp_path / "runs") == ["_cache"]


@needs_page5
@pytest.mark.parametrize("here", [3, 5])
def test_adopt_refuses_a_page_of_another_generator_version(tmp_path, monkeypatch, here):
    """Table 5's runs read the temporal proxy of generator version 4 (its commit's proxy.py, read as
    text). A checkout generating another version refuses them, an older one (3, whose run keys
    equal version 4's) as a newer one (5, whose keys name it), and the cache stays empty."""
    from stm_lib.data import proxy

    monkeypatch.setattr(proxy, "VERSION", here)
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match=f"generator version 4 .* version {here}: not the same data"):
        runpack.adopt(PAGE5, cache, log=lambda *_: None)
    assert not cache.exists()
