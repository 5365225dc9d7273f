"""Untrusted inputs end to end (issue 28), probed as an attacker or a careless user would: config
files with wrong types, alias bombs and deep nesting; `--params` names and values that would be
code in the notebook; two `stm reproduce` in one tree; a full disk and a read-only `--out`. Each
case must end in one line naming the problem, keep what was computed, and touch nothing else.
Tiny settings throughout; no real training except the disk tests (4 frames of 32 px, 1 step)."""
from __future__ import annotations

import ast
import errno
import json
import multiprocessing as mp
import os
import re
import signal
import subprocess
import time
import tracemalloc
from pathlib import Path

import pytest

from stm_lib import reproduce as R
from stm_lib.cli import main
from stm_lib.config import Config, load_yaml


def _one_line_error(err: str, cmd: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err[:2000]
    assert lines[0].startswith(f"stm {cmd}: error: "), lines[0]
    assert len(lines[0]) < 600, lines[0][:600]
    return lines[0]


# ---- 1. typed configs ------------------------------------------------------------------------

BAD_CONFIGS = [
    ("train:\n  epochs: abc\n", "train.epochs: expected an integer, got 'abc'"),
    ("train:\n  batch_size: abc\n", "train.batch_size: expected an integer, got 'abc'"),
    ("train:\n  lr: [1, 2]\n", "train.lr: expected a finite number, got [1, 2]"),
    ("model:\n  frames: 1.5\n", "model.frames: expected an integer, got 1.5"),
    ("model:\n  frames: true\n", "model.frames: expected an integer, got True"),   # bool is not an int
    ("train:\n  lr: .nan\n", "train.lr: expected a finite number"),
    ("train:\n  lr_steps: [3, x]\n", "train.lr_steps: expected a list of integers"),
    ("train:\n  amp: 16\n", "train.amp: expected a string, got 16"),
    ("train:\n  resume: 'yes'\n", "train.resume: expected true or false, got 'yes'"),
    ("data:\n  data_root: 5\n", "data.data_root: expected a string or null, got 5"),
    ("train:\n  epochs: 0\n", "train.epochs: must be at least 1, got 0"),
    ("train:\n  batch_size: -8\n", "train.batch_size: must be at least 1, got -8"),
    ("train:\n  lr: 0\n", "train.lr: must be above 0, got 0"),
    ("model:\n  dropout: 1.0\n", "model.dropout: must be in [0, 1), got 1.0"),
    ("data:\n  input_size: 0\n", "data.input_size: must be at least 1, got 0"),
    ("train:\n  lr_steps: [3, -1]\n", "train.lr_steps: must be 0 or more, got -1"),
    ("train:\n  max_skipped: 2\n", "train.max_skipped: must be in [0, 1], got 2"),
]


@pytest.mark.parametrize("text, want", BAD_CONFIGS, ids=[w.split(":")[0] for _, w in BAD_CONFIGS])
def test_a_mistyped_config_is_one_line_naming_file_and_key_and_writes_nothing(text, want, tmp_path, capsys):
    y = tmp_path / "f.yaml"
    y.write_text(text)
    out = tmp_path / "run"
    assert main(["train", "--config", str(y), "--out", str(out)]) == 2
    line = _one_line_error(capsys.readouterr().err, "train")
    assert line.startswith(f"stm train: error: {y}: {want}"), line
    assert not out.exists()                      # checked before any file is written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.yaml"]


def test_flags_and_notebook_overrides_get_the_same_checks(tmp_path, capsys):
    for flags, want in ((["--epochs", "0"], "train.epochs: must be at least 1"),
                        (["--dropout", "1"], "model.dropout: must be in [0, 1)"),
                        (["--lr", "nan"], "train.lr: expected a finite number"),
                        (["--proxy-classes", "1"], "data.proxy_classes: must be at least 2")):
        assert main(["train", *flags, "--out", str(tmp_path / "r")]) == 2
        assert want in _one_line_error(capsys.readouterr().err, "train")
    assert not (tmp_path / "r").exists()
    with pytest.raises(ValueError, match=r"train\.epochs: expected an integer, got 'abc'"):
        Config().merge({"train": {"epochs": "abc"}})      # a notebook's `overrides`


def test_good_values_still_load(tmp_path):
    import numpy as np

    y = tmp_path / "ok.yaml"
    # `1e-3` is text to YAML 1.1: read as the number it means; an int is a float; aliases are fine
    y.write_text("model: {frames: &t 4, width_mult: 1}\ndata: {proxy_frames: *t}\ntrain: {lr: 1e-3, warmup_epochs: 0.5}\n")
    cfg = load_yaml(y)
    assert (cfg.train.lr, cfg.model.frames, cfg.data.proxy_frames, cfg.model.width_mult) == (0.001, 4, 4, 1)
    assert cfg.train.warmup_epochs == 0.5
    c = Config().update("model", frames=np.int64(8)).update("train", lr=np.float32(0.5))
    assert type(c.model.frames) is int and type(c.train.lr) is float      # numpy scalars become Python's
    assert load_yaml(tmp_path / "ok.yaml") == cfg and Config.from_dict(Config().to_dict()) == Config()


def _billion_laughs() -> str:
    doc = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for prev, cur in zip("abcdefgh", "bcdefghi"):
        doc += f"{cur}: &{cur} [{', '.join(['*' + prev] * 9)}]\n"
    return doc


@pytest.mark.parametrize("name, text, want", [
    ("bomb", _billion_laughs(), "more than 10000 values (aliases expanded)"),
    ("deep", "[" * 100_000 + "]" * 100_000, "nested deeper than"),
    ("deep-map", "{a: " * 5000 + "1" + "}" * 5000, "nested deeper than"),
    ("self", "model: &m\n  block: *m\n", "contains itself"),
])
def test_hostile_yaml_is_one_short_line_and_little_memory(name, text, want, tmp_path, capsys):
    """A 400-byte alias bomb once gave a 351 MB error line and 1.9 GB of memory; 100,000 `[` a
    RecursionError traceback."""
    y = tmp_path / f"{name}.yaml"
    y.write_text(text)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=re.escape(want)):
            load_yaml(y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50e6, f"{peak / 1e6:.0f} MB"
    assert main(["train", "--config", str(y), "--out", str(tmp_path / "r")]) == 2
    line = _one_line_error(capsys.readouterr().err, "train")
    assert f"{y}:" in line and want in line and len(line) < 300
    assert not (tmp_path / "r").exists()


# ---- 2. notebook parameters ------------------------------------------------------------------

def _reproduce(tmp_path: Path, params: str) -> list[str]:
    return ["reproduce", "--table", "5", "--profile", "smoke", "--jobs", "1", "--quiet",
            "--out-root", str(tmp_path / "runs"), "--params", params]


def test_a_parameter_name_that_is_code_is_refused_before_anything_runs(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    evil = {f'x=__import__("os").system("touch {marker}");y': 1}
    assert main(_reproduce(tmp_path, json.dumps(evil))) == 2
    line = _one_line_error(capsys.readouterr().err, "reproduce")
    assert "unknown parameter" in line and "known: dataset, frames, epochs, models, overrides" in line
    assert not marker.exists() and not (tmp_path / "runs").exists()
    # the library call refuses it too, before its temporary folder exists
    with pytest.raises(ValueError, match="unknown parameter"):
        R.reproduce("5", "smoke", out_root=tmp_path / "runs", extra_params=evil, progress=False)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("params, want", [
    ({"epoch": 3}, "unknown parameter 'epoch'"),                       # a typo, silently ignored before
    ({"out_dir": "/etc"}, "'out_dir' is set by stm reproduce itself; use --out-root"),
    ({"seeds": 2}, "use --seeds"),
    ({"models": {"__class__": 1}}, "models must be a JSON number, string"),
    ({"models": [["tsn"]]}, "models must be"),
    ({"epochs": float("nan")}, "epochs must be"),
    ({"overrides": [1]}, "overrides must be a JSON object"),
    ({"overrides": {"train": {"epochs": "abc"}}}, "overrides: train.epochs: expected an integer"),
    ({"overrides": {"os": {}}}, "--params: overrides: unknown section 'os'"),
    ([1], "expected a JSON object"),
])
def test_bad_params_are_one_line(params, want, tmp_path, capsys):
    assert main(_reproduce(tmp_path, json.dumps(params))) == 2
    assert want in _one_line_error(capsys.readouterr().err, "reproduce")
    assert not (tmp_path / "runs").exists()


def test_params_that_are_not_json_or_too_deep_are_one_line(tmp_path, capsys):
    for text, want in (("{epochs: 3}", "not valid JSON"), ("[" * 100_000, "not valid JSON")):
        assert main(_reproduce(tmp_path, text)) == 2
        assert want in _one_line_error(capsys.readouterr().err, "reproduce")


CRAFTED = ['"; __import__("os").system("touch PWNED"); "', "\\\"\n__import__('os').system('touch PWNED')\n#",
           "'''\nimport os\n'''", "\x00\u2028{}", "\\"]


def test_crafted_values_stay_values_in_the_parameters_cell():
    """What papermill writes for every value the check lets through is `name = <literal>`, nothing
    else: strings with quotes, newlines and backslashes, and a crafted key inside `overrides`."""
    from papermill.translators import PythonTranslator

    declared = R.declared_parameters(R.BOOK / "table5.ipynb")
    assert {"epochs", "models", "overrides", "frames", "dataset", "threads"} <= set(declared)
    params = {"dataset": CRAFTED[0], "models": CRAFTED, "threads": None, "frames": 8,
              "overrides": {"model": {"block": {CRAFTED[1]: CRAFTED[2]}}, "train": {"lr": 0.5}}}
    R.check_params(params, declared, "table5.ipynb")
    tree = ast.parse(PythonTranslator.codify(params))
    assert [n.targets[0].id for n in tree.body] == list(params)
    assert {n.targets[0].id: ast.literal_eval(n.value) for n in tree.body} == params   # values round-trip


def test_a_crafted_value_runs_no_code_in_a_real_notebook(tmp_path, monkeypatch):
    """The whole path once: papermill injects the crafted value into a notebook that declares it,
    and the notebook sees it as a string."""
    import nbformat

    book = tmp_path / "book"
    book.mkdir()
    monkeypatch.setattr(R, "BOOK", book)
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell('profile = "proxy"\nout_dir = "x"\ndata_root = None\ndevice = "auto"\nseeds = None\n'
                                  'cache_dir = None\ndataset = None')
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p, nbformat.v4.new_code_cell('open(out_dir + "/../seen.txt", "w").write(dataset)\nraise SystemExit')]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, book / "table5.ipynb")
    value = f'"; __import__("os").system("touch {tmp_path}/PWNED"); "'
    with pytest.raises(R.NotebookFailed):
        R.reproduce("5", "smoke", out_root=tmp_path / "runs", extra_params={"dataset": value}, progress=False)
    assert not (tmp_path / "PWNED").exists()
    assert (tmp_path / "runs" / "table5" / "seen.txt").read_text() == value


# ---- 3. one writer per run -------------------------------------------------------------------

def _fake_engine(monkeypatch, log: Path) -> None:
    """train_cached with a 2-second fake training that logs who trained, and a fake evaluation."""
    from stm_lib.book import runner
    import stm_lib.engine

    def fake_train(cfg):
        out = Path(cfg.train.out)
        out.mkdir(parents=True)
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(2.0)
        (out / "checkpoint_last.pt").write_bytes(b"weights")     # a deleted folder fails here
        return out

    monkeypatch.setattr(runner, "run_full_or_local", fake_train)
    monkeypatch.setattr(runner, "_prepare_proxy", lambda *a, **k: None)
    monkeypatch.setattr(stm_lib.engine, "evaluate", lambda *a, **k: {"top1": 0.5, "top5": 1.0, "n": 8})


def _train_cached_child(cache: str, q) -> None:
    from stm_lib.book import runner

    try:
        key, run_dir, ev, cached = runner.train_cached(Config().update("train", epochs=1), cache, "smoke")
        q.put((os.getpid(), key, cached, ev["top1"]))
    except BaseException as e:   # noqa: BLE001 - reported to the parent
        q.put((os.getpid(), "error", repr(e), None))


def test_two_processes_train_a_run_once_and_both_get_it(tmp_path, monkeypatch):
    """Two `stm reproduce` in one tree started apart: the second took the first's unfinished run
    folder for an interrupted one and deleted it (both failed). Now it waits and reuses the run."""
    log = tmp_path / "trained.log"
    _fake_engine(monkeypatch, log)
    ctx = mp.get_context("fork")   # the children inherit the fake engine
    q = ctx.Queue()
    first = ctx.Process(target=_train_cached_child, args=(str(tmp_path / "cache"), q))
    first.start()
    time.sleep(0.7)    # the first is inside its 2-second training
    second = ctx.Process(target=_train_cached_child, args=(str(tmp_path / "cache"), q))
    second.start()
    got = sorted([q.get(timeout=60), q.get(timeout=60)], key=lambda r: r[2])
    first.join(10), second.join(10)
    assert [r[1] for r in got if r[1] == "error"] == [], got
    assert len(log.read_text().split()) == 1                     # trained once
    (_, k1, cached1, _), (_, k2, cached2, _) = got
    assert k1 == k2 and (cached1, cached2) == (False, True)
    run = tmp_path / "cache" / k1
    assert (run / "checkpoint_last.pt").read_bytes() == b"weights" and (run / "done.json").is_file()


def _hold(lock: str, ready) -> None:
    """A live `stm reproduce` writing its temporary folder, until it is SIGKILLed."""
    from stm_lib.io import locked

    with locked(lock):
        ready.set()
        time.sleep(120)


def _fake_notebook(src, dst, params, progress):
    """reproduce's notebook step without a kernel: writes the notebook and result.json."""
    from stm_lib.book.result import Result, Row

    Path(dst).write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    Result("5", params["profile"], "t", None, [Row("stm", "STM", "stm", 8, "smoke", seeds={"top1": [1.0]},
                                                   n_val={"top1": 10})], seeds=[0]).save(params["out_dir"] + "/result.json")


def test_abandoned_temp_folders_are_cleaned_only_when_no_live_process_holds_them(tmp_path, monkeypatch):
    monkeypatch.setattr(R, "_execute", _fake_notebook)
    folder = tmp_path / "runs" / "table5"
    dead, live = folder / ".smoke.tmp-dead0000", folder / ".proxy.tmp-live0000"
    kept = [folder / ".proxy.failed", folder / ".smoke.old-1234", folder / "proxy"]   # never touched
    for d in (dead, live, *kept):
        d.mkdir(parents=True)
        (d / "table5.ipynb").write_text("{}")
    (dead.parent / (dead.name + ".lock")).write_text("")   # its owner was SIGKILLed: the lock is free
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    owner = ctx.Process(target=_hold, args=(str(live.parent / (live.name + ".lock")), ready))
    owner.start()
    assert ready.wait(30)
    try:
        d = R.reproduce("5", "smoke", out_root=tmp_path / "runs", progress=False)
        assert (d / "results.json").is_file()
        assert not dead.exists() and not (dead.parent / (dead.name + ".lock")).exists()
        assert live.exists() and all(k.exists() for k in kept)
        assert not list(folder.glob(".smoke.tmp-*"))                # its own temp folder and lock are gone
        os.kill(owner.pid, signal.SIGKILL)                          # the live owner is killed
        owner.join(10)
        assert R._clean_abandoned(folder) == [live]
        assert all(k.exists() for k in kept) and (d / "results.json").is_file()
    finally:
        if owner.is_alive():
            owner.kill()
        owner.join(10)


# ---- 4. a full disk, a read-only --out ---------------------------------------------------------

def _tiny(out: Path, cache: Path, *extra: str) -> list[str]:
    return ["train", "--dataset", "proxy-temporal", "--proxy-cache", str(cache), "--proxy-videos", "40",
            "--proxy-classes", "4", "--proxy-frames", "8", "--proxy-resolution", "32", "--model", "tsm",
            "--frames", "4", "--input-size", "32", "--width-mult", "0.25", "--batch-size", "8", "--lr", "0.01",
            "--lr-steps", "10", "--max-steps-per-epoch", "1", "--num-workers", "0", "--no-progress",
            "--no-tensorboard", "--out", str(out), *extra]


@pytest.fixture
def cache(proxy_cache):
    """The session's proxy cache with the tiny proxy generated (its progress bar is on stderr)."""
    from stm_lib.config import DataConfig
    from stm_lib.data.proxy import ensure_proxy

    ensure_proxy("temporal", DataConfig(proxy_cache=str(proxy_cache), proxy_videos=40, proxy_classes=4,
                                        proxy_frames=8, proxy_resolution=32), progress=False)
    return proxy_cache


def _epochs(out: Path) -> list[int]:
    return [json.loads(ln)["epoch"] for ln in (out / "metrics.jsonl").read_text().splitlines() if ln.strip()]


def _last_epoch(out: Path) -> int:
    import torch

    return torch.load(out / "checkpoint_last.pt", weights_only=True)["epoch"]


def test_no_space_while_writing_metrics_is_one_line_and_resume_loses_nothing(tmp_path, cache, capsys, monkeypatch):
    """ENOSPC (simulated: it needs no root) at epoch 2's metrics.jsonl, after its checkpoint."""
    real_fsync, writes = os.fsync, {"n": 0}

    def fsync(fd):
        if ".metrics.jsonl." in os.readlink(f"/proc/self/fd/{fd}"):
            writes["n"] += 1
            if writes["n"] == 3:   # the empty file at the start, epoch 1, then epoch 2
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    out = tmp_path / "run"
    assert main(_tiny(out, cache, "--epochs", "3")) == 1
    line = _one_line_error(capsys.readouterr().err, "train")
    assert f"{out / 'metrics.jsonl'}: No space left on device" in line and "--resume" in line
    assert _epochs(out) == [1] and _last_epoch(out) == 2            # both are the last good versions
    assert not list(out.glob(".*.tmp"))
    monkeypatch.setattr(os, "fsync", real_fsync)                    # space is freed
    assert main(_tiny(out, cache, "--epochs", "3", "--resume")) == 0
    assert _epochs(out) == [1, 2, 3]                                 # epoch 2's row came from the checkpoint


@pytest.fixture
def tmpfs(tmp_path):
    """A small tmpfs at tmp_path/mnt (root only; skipped where mount is not permitted)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()

    def mount(*opts: str) -> None:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(opts), "tmpfs", str(mnt)],
                           capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")

    yield mnt, mount
    subprocess.run(["umount", str(mnt)], capture_output=True)


def test_a_full_disk_keeps_the_last_good_checkpoint(tmpfs, cache, capsys):
    """A real full filesystem: 30 MB holds epoch 1's two 12 MB checkpoints, not epoch 2's."""
    mnt, mount = tmpfs
    mount("size=30m")
    out = mnt / "run"
    assert main(_tiny(out, cache, "--epochs", "3")) == 1
    line = _one_line_error(capsys.readouterr().err, "train")
    assert "No space left on device" in line and str(out / "checkpoint_") in line
    assert _epochs(out) == [1] and _last_epoch(out) == 1 and not list(out.glob(".*.tmp"))
    subprocess.run(["mount", "-o", "remount,size=80m", str(mnt)], check=True)
    assert main(_tiny(out, cache, "--epochs", "3", "--resume")) == 0
    assert _epochs(out) == [1, 2, 3]


def test_a_read_only_out_is_one_line(tmpfs, cache, capsys):
    mnt, mount = tmpfs
    mount("size=1m")
    (mnt / "run").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
    for out, name in ((mnt / "run", mnt / "run" / "config.yaml"), (mnt / "new" / "run", mnt / "new")):
        assert main(_tiny(out, cache, "--epochs", "1")) == 1
        assert _one_line_error(capsys.readouterr().err, "train").endswith(f"{name}: Read-only file system")
    assert [p.name for p in mnt.iterdir()] == ["run"] and not any((mnt / "run").iterdir())


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file modes (the tmpfs tests cover it)")
def test_a_folder_without_write_permission_is_one_line(tmp_path, cache, capsys):
    out = tmp_path / "run"
    out.mkdir()
    out.chmod(0o555)
    try:
        assert main(_tiny(out, cache, "--epochs", "1")) == 1
        assert _one_line_error(capsys.readouterr().err, "train").endswith(f"{out / 'config.yaml'}: Permission denied")
    finally:
        out.chmod(0o755)
