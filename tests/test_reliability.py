"""Reliability and security (issue 11), probed as a careful user and as an attacker would: files
a malicious user would craft (pickles that run code, `../` clip ids), faults a long run meets
(NaN, clips that all fail, a mistyped --out, killed writes). Each test fails on the code before
the fix. Tiny settings throughout (width 0.25, 32 px, 4 frames)."""
from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import torch

from stm_lib.cli import main
from stm_lib.config import Config


def _tiny_flags(out: Path, cache: Path, *extra: str) -> list[str]:
    return ["train", "--dataset", "proxy-temporal", "--proxy-cache", str(cache), "--proxy-videos", "40",
            "--proxy-classes", "4", "--proxy-frames", "8", "--proxy-resolution", "32", "--model", "tsm",
            "--frames", "4", "--input-size", "32", "--width-mult", "0.25", "--epochs", "1", "--batch-size", "8",
            "--lr", "0.01", "--num-workers", "0", "--no-progress", "--no-tensorboard", "--out", str(out), *extra]


def _one_line_error(err: str, cmd: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"stm {cmd}: error: "), lines[0]
    return lines[0]


# ---- 1. no code from a checkpoint ------------------------------------------------------------

class _Evil:
    """What an attacker ships as a checkpoint: unpickling it runs a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_checkpoint(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = Config().update("model", name="tsm", frames=4, num_classes=4, width_mult=0.25).to_dict()
    torch.save({"model": _Evil(marker), "config": cfg, "num_classes": 4, "epoch": 1}, path)
    return path


def _route(name: str, tmp_path: Path, evil: Path) -> tuple[str, list[str]]:
    run = tmp_path / "run"
    if name == "evaluate --checkpoint":
        return "evaluate", ["evaluate", "--run", str(run), "--checkpoint", str(evil)]
    if name == "predict --checkpoint":
        return "predict", ["predict", str(tmp_path), "--run", str(run), "--checkpoint", str(evil)]
    if name == "evaluate --run":
        evil.rename(run / "checkpoint_best.pt")
        return "evaluate", ["evaluate", "--run", str(run)]
    evil.rename(run / "checkpoint_last.pt")  # train --resume
    return "train", _tiny_flags(run, tmp_path / "cache", "--resume")


@pytest.mark.parametrize("route", ["evaluate --checkpoint", "predict --checkpoint", "evaluate --run",
                                   "train --resume"])
def test_malicious_checkpoint_runs_no_code(route, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    evil = _evil_checkpoint(tmp_path / "run" / "evil.pt", marker)
    cmd, argv = _route(route, tmp_path, evil)
    assert main(argv) != 0
    assert not marker.exists(), f"{route}: the checkpoint ran code"
    line = _one_line_error(capsys.readouterr().err, cmd)
    assert "refused" in line and "weights_only" in line


def test_truncated_and_foreign_checkpoints_get_one_line(tmp_path, capsys):
    from stm_lib.engine import checkpoint as ckpt

    cfg = Config().update("model", name="tsm", frames=4, num_classes=4, width_mult=0.25)
    from stm_lib.models import build_model

    good = {"model": build_model(cfg.model).state_dict(), "config": cfg.to_dict(), "num_classes": 4, "epoch": 1}
    buf = io.BytesIO()
    torch.save(good, buf)
    cases = {
        "truncated.pt": (buf.getvalue()[: len(buf.getvalue()) // 2], "not a readable checkpoint"),
        "text.pt": (b"hello, not a checkpoint\n", "not a readable checkpoint"),
    }
    for name, (data, want) in cases.items():
        (tmp_path / name).write_bytes(data)
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "foreign.pt")     # another tool's layout
    cases["foreign.pt"] = (None, "not a stm training checkpoint")
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    cases["list.pt"] = (None, "expected a dict")
    other = dict(good, model={k: v[:1] if v.dim() else v for k, v in good["model"].items()})  # wrong shapes
    torch.save(other, tmp_path / "shapes.pt")
    cases["shapes.pt"] = (None, "do not fit")
    for name, (_, want) in cases.items():
        assert main(["evaluate", "--run", str(tmp_path), "--checkpoint", str(tmp_path / name)]) == 2
        line = _one_line_error(capsys.readouterr().err, "evaluate")
        assert want in line and name in line, line
    # and the same through `train --resume`: a truncated checkpoint_last.pt
    run = tmp_path / "cut"
    run.mkdir()
    (run / ckpt.LAST).write_bytes(cases["truncated.pt"][0])
    assert main(_tiny_flags(run, tmp_path / "cache", "--resume")) == 2
    assert "not a readable checkpoint" in _one_line_error(capsys.readouterr().err, "train")


# ---- 2. the NaN/inf guard saves nothing poisoned; a new --lr on resume is applied ----------

def _nonfinite(obj, where="") -> list[str]:
    """Every floating tensor anywhere in a loaded checkpoint that holds NaN or inf."""
    if torch.is_tensor(obj):
        return [where] if obj.is_floating_point() and not bool(torch.isfinite(obj).all()) else []
    if isinstance(obj, dict):
        return [w for k, v in obj.items() for w in _nonfinite(v, f"{where}.{k}")]
    if isinstance(obj, (list, tuple)):
        return [w for i, v in enumerate(obj) for w in _nonfinite(v, f"{where}[{i}]")]
    return []


@pytest.mark.parametrize("poison, at_step", [("weight", 8), ("momentum", 6)])
def test_forced_nan_leaves_no_nonfinite_tensor_on_disk(poison, at_step, tmp_path, capsys, monkeypatch):
    """A NaN appears in the weights (end of epoch 2) or in the optimiser's momentum (epoch 2,
    right before a mid-epoch checkpoint); the loss of that step was finite. No checkpoint on disk
    may hold it, and the message names the checkpoint that is kept."""
    real_step = torch.optim.SGD.step
    calls = {"n": 0}

    def step(self, *a, **k):
        out = real_step(self, *a, **k)
        calls["n"] += 1
        if calls["n"] == at_step:
            p = self.param_groups[0]["params"][0]
            (p.data if poison == "weight" else self.state[p]["momentum_buffer"]).fill_(float("nan"))
        return out

    monkeypatch.setattr(torch.optim.SGD, "step", step)
    out = tmp_path / "run"
    rc = main(_tiny_flags(out, tmp_path / "cache", "--epochs", "2", "--lr-steps", "10", "--checkpoint-every-steps", "2"))
    err = capsys.readouterr().err
    assert rc == 3 and "non-finite" in err and "last good checkpoint" in err
    pts = sorted(out.glob("*.pt"))
    assert pts
    for p in pts:
        assert _nonfinite(torch.load(p, weights_only=True)) == [], p.name
    last = torch.load(out / "checkpoint_last.pt", weights_only=True)
    # kept: the last save before the NaN (weight: epoch 2's step-2 save; momentum: epoch 1's end)
    assert last["epoch"] == 1 and (last["partial"] or {}).get("step") == (2 if poison == "weight" else None)


def test_inf_gradient_with_a_finite_loss_stops_the_run(tmp_path, capsys, monkeypatch):
    """Gradient clipping turns an inf gradient into NaN weights (inf * 0); the guard must see
    the gradient norm itself, since the loss of that step was finite."""
    real_clip = torch.nn.utils.clip_grad_norm_
    calls = {"n": 0}

    def clip(params, *a, **k):  # the gradients reach clipping with an inf in the last step of epoch 1
        params = [p for p in params if p.grad is not None]
        calls["n"] += 1
        if calls["n"] == 4:
            params[0].grad.fill_(float("inf"))
        return real_clip(params, *a, **k)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    out = tmp_path / "run"
    rc = main(_tiny_flags(out, tmp_path / "cache", "--epochs", "2", "--max-steps-per-epoch", "4"))
    assert rc == 3 and "non-finite gradient norm (inf) at epoch 1 step 4" in capsys.readouterr().err
    for p in out.glob("*.pt"):
        assert _nonfinite(torch.load(p, weights_only=True)) == [], p.name


def test_huge_lr_stops_with_every_checkpoint_finite(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(_tiny_flags(out, tmp_path / "cache", "--lr", "1e6", "--epochs", "3", "--checkpoint-every-steps", "1"))
    assert rc == 3 and "non-finite" in capsys.readouterr().err
    for p in out.glob("*.pt"):
        assert _nonfinite(torch.load(p, weights_only=True)) == [], p.name


def test_resume_with_a_new_lr_applies_and_records_it(tmp_path, capsys):
    import json

    out, cache = tmp_path / "run", tmp_path / "cache"
    assert main(_tiny_flags(out, cache, "--lr-steps", "10", "--max-steps-per-epoch", "2")) == 0
    capsys.readouterr()
    assert main(_tiny_flags(out, cache, "--lr-steps", "10", "--max-steps-per-epoch", "2", "--epochs", "2",
                            "--lr", "0.001", "--resume")) == 0
    printed = capsys.readouterr().out
    assert "lr 0.001" in printed and "0.01 -> 0.001" in printed
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows] == pytest.approx([0.01, 0.001])       # used, not only printed
    state = torch.load(out / "checkpoint_last.pt", weights_only=True)
    base = [g for g in state["optimizer"]["param_groups"] if g["lr_mult"] == 1]
    assert base and all(g["lr"] == pytest.approx(0.001) for g in base)
    assert state["lr_changes"][0]["from"] == pytest.approx(0.01) and state["lr_changes"][0]["to"] == pytest.approx(0.001)
    run = json.loads((out / "run.json").read_text())
    assert run["sessions"][-1]["lr_change"]["to"] == pytest.approx(0.001) and run["effective_lr"] == pytest.approx(0.001)


def test_resume_refuses_a_changed_momentum_in_one_line(tmp_path, capsys):
    out, cache = tmp_path / "run", tmp_path / "cache"
    assert main(_tiny_flags(out, cache, "--max-steps-per-epoch", "1")) == 0
    capsys.readouterr()
    assert main(_tiny_flags(out, cache, "--max-steps-per-epoch", "1", "--epochs", "2", "--momentum", "0.5",
                            "--resume")) == 2
    assert "train.momentum" in _one_line_error(capsys.readouterr().err, "train")


# ---- 3. --resume on a mistyped folder --------------------------------------------------------

def test_resume_on_a_missing_folder_refuses_within_seconds(tmp_path):
    """Before: a full-size (224 px, width 1, batch 64) run on a freshly generated proxy began."""
    import subprocess
    import sys
    import time

    out = tmp_path / "runs" / "does-not-exist"
    cmd = [sys.executable, "-m", "stm_lib.cli", "train", "--out", str(out), "--resume", "--epochs", "1",
           "--proxy-cache", str(tmp_path / "cache"), "--no-progress"]
    t0 = time.time()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    except subprocess.TimeoutExpired:
        pytest.fail("`stm train --resume` on a missing folder was still running after 60 s")
    assert r.returncode == 2 and time.time() - t0 < 60
    line = _one_line_error(r.stderr, "train")
    assert "does not exist" in line and "--resume-or-start" in line
    assert not out.exists() and not (tmp_path / "cache").exists()


def test_resume_or_start_starts_a_configured_run(tmp_path):
    out = tmp_path / "new"
    assert main(_tiny_flags(out, tmp_path / "cache", "--max-steps-per-epoch", "1", "--resume-or-start")) == 0
    assert (out / "checkpoint_last.pt").is_file()


# ---- 4. a run whose clips fail does not "succeed" --------------------------------------------

def _ssv1_flags(root: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--dataset", "ssv1", "--data-root", str(root), "--model", "tsm", "--frames", "4",
            "--input-size", "32", "--width-mult", "0.25", "--epochs", "1", "--batch-size", "2", "--lr", "0.01",
            "--num-workers", "0", "--no-progress", "--no-tensorboard", "--out", str(out), *extra]


def _empty_frames(root: Path, ids) -> None:
    for i in ids:
        for f in (root / "20bn-something-something-v1" / str(i)).iterdir():
            f.unlink()


def test_a_run_whose_clips_all_fail_exits_nonzero(tmp_path, capsys):
    from test_data import make_ssv1

    root = make_ssv1(tmp_path / "ss")
    _empty_frames(root, range(1001, 1005))                    # every training clip: an empty folder
    out = tmp_path / "run"
    with pytest.warns(RuntimeWarning, match="skipping clip"):
        rc = main(_ssv1_flags(root, out))
    assert rc == 2
    line = _one_line_error(capsys.readouterr().err, "train")
    assert "no training clip could be read (4 of 4 failed)" in line
    assert not list(out.glob("*.pt"))
    with pytest.warns(RuntimeWarning, match="skipping clip"):  # mid-epoch checkpoints are refused too
        assert main(_ssv1_flags(root, tmp_path / "mid", "--checkpoint-every-steps", "1")) == 2
    assert "epoch 1: no training clip" in _one_line_error(capsys.readouterr().err, "train")
    assert not list((tmp_path / "mid").glob("*.pt"))
    # an impossible input size (every clip raised before) is refused up front
    assert main(_ssv1_flags(root, tmp_path / "run0", "--input-size", "0")) == 2
    assert "data.input_size: must be at least 1, got 0" in _one_line_error(capsys.readouterr().err, "train")
    assert not (tmp_path / "run0").exists()   # refused by the config check (issue 28), before any file


def test_skip_share_limit_and_the_epoch_line_shows_the_count(tmp_path, capsys):
    from test_data import make_ssv1

    root = make_ssv1(tmp_path / "ss")
    _empty_frames(root, [1001])                                # 1 of 4 training clips (25%)
    with pytest.warns(RuntimeWarning, match="skipping clip 1001"):
        assert main(_ssv1_flags(root, tmp_path / "a")) == 2
    line = _one_line_error(capsys.readouterr().err, "train")
    assert "1 of 4 training clips (25%) failed to load, more than --max-skipped 0.1" in line
    with pytest.warns(RuntimeWarning, match="skipping clip 1001"):
        assert main(_ssv1_flags(root, tmp_path / "b", "--max-skipped", "0.5")) == 0
    assert "skipped 1" in capsys.readouterr().out


# ---- 7. smaller: malformed YAML, stale temporary files, every start in run.json ---------------

def test_malformed_yaml_config_is_one_line_with_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  name: stm\n  frames: [8\ntrain:\n  lr: 0.1\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    line = _one_line_error(capsys.readouterr().err, "train")
    assert f"{bad}:" in line and "not valid YAML" in line
    bad.write_text("model: 3\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    line = _one_line_error(capsys.readouterr().err, "train")
    assert f"{bad}:" in line and "'model' must be a mapping" in line


# ---- 5. clip ids stay inside the dataset root; flow output stays inside --out ---------------

def _tree(base: Path) -> dict:
    """Every path under `base` with its size and mtime: a fingerprint of what was touched."""
    return {str(p.relative_to(base)): (p.is_dir(), p.stat().st_size if p.is_file() else 0, p.stat().st_mtime_ns)
            for p in sorted(base.rglob("*"))}


@pytest.fixture
def planted(tmp_path):
    """An SSv1 layout whose train list names `../../victim`: from the frames folder that is a
    folder beside the dataset, holding a file the user cares about."""
    from test_data import make_ssv1

    root = make_ssv1(tmp_path / "ss")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.txt").write_text("years of work\n")
    ann = root / "something-something-v1-train.csv"
    ann.write_text(ann.read_text() + "../../victim;Holding something\n")
    return root, ann, tmp_path


def test_dotdot_clip_id_refused_by_data_check(planted, capsys):
    root, ann, base = planted
    before = _tree(base)
    assert main(["data", "check", "--dataset", "ssv1", "--data-root", str(root)]) == 1
    out = capsys.readouterr().out
    assert f"{ann}:5: clip id '../../victim' is not a path inside the dataset folder" in out
    assert _tree(base) == before


def test_dotdot_clip_id_refused_by_data_flow(planted, capsys):
    root, ann, base = planted
    before = _tree(base)
    rc = main(["data", "flow", "--dataset", "ssv1", "--data-root", str(root), "--out", str(root / "flow")])
    assert rc == 2
    assert f"{ann}:5: clip id '../../victim'" in _one_line_error(capsys.readouterr().err, "data")
    assert _tree(base) == before and (base / "victim" / "thesis.txt").read_text() == "years of work\n"


def test_dotdot_clip_id_refused_by_training(planted, capsys):
    root, ann, base = planted
    before = _tree(base)
    assert main(_ssv1_flags(root, base / "run")) == 2
    assert f"{ann}:5: clip id '../../victim'" in _one_line_error(capsys.readouterr().err, "train")
    assert _tree(base) == before


@pytest.mark.parametrize("bad", ["../victim", "a/../../victim", "/abs/victim", ".", ""])
def test_flow_output_is_confined_to_out(bad, tmp_path):
    """Below the readers: extraction itself refuses an id whose folder is not inside --out,
    before writing or deleting anything."""
    import numpy as np

    from stm_lib.data import flow
    from stm_lib.data.datasets import Sample

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("x")
    out = tmp_path / "flow"
    good = Sample("ok", tmp_path / "ok", 0)
    before = _tree(tmp_path)
    with pytest.raises(ValueError, match="not inside --out"):
        flow.extract_dataset([good, Sample(bad, tmp_path / "x", 0)], out,
                             lambda s: np.zeros((3, 8, 8, 3), np.uint8), progress=False)
    assert _tree(tmp_path) == before  # not even the good clip was written first


@pytest.mark.parametrize("line", ["/etc 8 0", "../outside 8 0", "frames/../../x 8 0"])
def test_list_file_paths_are_confined(line, tmp_path):
    from stm_lib.data.datasets import read_list_file

    lst = tmp_path / "train.txt"
    lst.write_text(f"frames/a 8 0\n{line}\n")
    with pytest.raises(ValueError, match=rf"{lst}:2: clip id"):
        read_list_file(lst)


# ---- 7. smaller: bytes that are not UTF-8, an absurd label ----------------------------------

def test_non_utf8_annotation_named_by_file_and_line(tmp_path, capsys):
    from test_data import make_ssv1

    root = make_ssv1(tmp_path / "ss")
    ann = root / "something-something-v1-train.csv"
    ann.write_bytes(ann.read_bytes() + b"1001;Holding \xff\xfe something\n")
    assert main(_ssv1_flags(root, tmp_path / "run")) == 2
    assert f"{ann}:5: not UTF-8 text" in _one_line_error(capsys.readouterr().err, "train")
    assert main(["data", "check", "--dataset", "ssv1", "--data-root", str(root)]) == 1
    assert f"{ann}:5: not UTF-8 text" in capsys.readouterr().out


def test_absurd_label_refused_in_one_line(tmp_path, capsys):
    from test_data import make_list

    train_list, val_list = make_list(tmp_path / "list")
    train_list.write_text(train_list.read_text() + "frames/train0 20 99999999\n")
    argv = ["train", "--dataset", "list", "--list-file", str(train_list), "--val-list-file", str(val_list),
            "--model", "tsm", "--frames", "4", "--input-size", "32", "--width-mult", "0.25", "--epochs", "1",
            "--batch-size", "2", "--num-workers", "0", "--no-progress", "--no-tensorboard", "--out",
            str(tmp_path / "run")]
    assert main(argv) == 2
    assert f"{train_list}:5: label 99999999 is not a plausible class index" in _one_line_error(
        capsys.readouterr().err, "train")


# ---- 6. `stm data check` and the loader agree ------------------------------------------------

def test_data_check_and_loader_agree_on_small_videos(tmp_path, capsys):
    """Small H.264 clips written with PyAV: decord opens some of them (16 and 48 px) but fails
    to read them, the loader falls back to PyAV. Check must call exactly the same clips good."""
    import av
    import numpy as np

    from stm_lib.data.datasets import VideoDataset, read_list_file
    from test_data import write_frames, write_video

    if "libx264" not in av.codecs_available:
        pytest.skip("PyAV without libx264")
    lines = []
    for size in (16, 32, 48):
        for n in (9, 24):
            a = np.zeros((n, size, size, 3), np.uint8)
            a[..., 0] = (np.arange(n) * 9)[:, None, None]
            write_video(tmp_path / "v" / f"h264_{size}_{n}.mp4", a, "libx264")
            lines.append(f"v/h264_{size}_{n}.mp4 {n} {len(lines) % 2}")
    write_video(tmp_path / "v" / "mpeg4.avi", np.full((12, 32, 48, 3), 90, np.uint8), "mpeg4")
    write_frames(tmp_path / "v" / "frames", np.full((10, 32, 48, 3), 60, np.uint8))
    lines += ["v/mpeg4.avi 12 0", "v/frames 10 1"]
    lst = tmp_path / "good.txt"
    lst.write_text("\n".join(lines) + "\n")

    def loader_ok(sample) -> bool:
        ds = VideoDataset([sample], ["0", "1"], 4, train=False, input_size=16, strict=True)
        try:
            return ds[0][0].shape == (1, 4, 3, 16, 16)
        except Exception:
            return False

    samples = read_list_file(lst)
    assert all(loader_ok(s) for s in samples)
    assert main(["data", "check", "--dataset", "list", "--list-file", str(lst), "--min-frames", "8"]) == 0
    assert capsys.readouterr().out.strip().endswith("OK")
    # a broken one: both call it bad
    (tmp_path / "v" / "junk.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    lst.write_text(lst.read_text() + "v/junk.mp4 12 0\n")
    assert not loader_ok(read_list_file(lst)[-1])
    assert main(["data", "check", "--dataset", "list", "--list-file", str(lst), "--min-frames", "8"]) == 1
    out = capsys.readouterr().out
    assert "corrupt (1):" in out and "junk" in out


def test_killed_session_is_kept_in_run_json_and_stale_tmp_files_are_removed(tmp_path, capsys):
    """A process dies hard (os._exit, as under SIGKILL: no `finally`) right after its epoch-1
    checkpoint; a stale temporary file of an interrupted write is left too. The resumed run
    removes the file, and run.json lists both starts, their seconds summing to its wall time."""
    import json
    import subprocess
    import sys

    out, cache = tmp_path / "run", tmp_path / "cache"
    flags = _tiny_flags(out, cache, "--epochs", "2", "--max-steps-per-epoch", "2")
    die = ("import os, sys\n"
           "from stm_lib.engine import checkpoint as ckpt\n"
           "real = ckpt.atomic_save\n"
           "def save(obj, path):\n"
           "    real(obj, path)\n"
           "    if path.name == ckpt.LAST and obj['epoch'] == 1:\n"
           "        os._exit(9)\n"
           "ckpt.atomic_save = save\n"
           "from stm_lib.cli import main\n"
           "sys.exit(main(sys.argv[1:]))\n")
    r = subprocess.run([sys.executable, "-c", die, *flags], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 9, r.stderr[-2000:]
    stale = out / ".checkpoint_last.pt.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    assert main(flags + ["--resume"]) == 0
    assert not stale.exists() and not list(out.glob(".*.tmp"))
    run = json.loads((out / "run.json").read_text())
    assert len(run["sessions"]) == 2 and run["status"] == "finished"
    first, second = run["sessions"]
    assert first["status"].startswith("killed") and first["seconds"] > 0
    assert second["resumed_from_epoch"] == 1 and second["status"] == "finished"
    assert run["wall_time_s"] == pytest.approx(first["seconds"] + second["seconds"], abs=1e-3)
