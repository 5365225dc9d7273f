"""The shared start (stm_lib/pretrain.py, issue 27): built by one command, deterministic, hashed,
loadable by every proxy arm; a start that changed on disk is refused; the committed start is the
file its record names."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stm_lib import pretrain
from stm_lib.config import ModelConfig
from stm_lib.models import build_model

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--classes", "2", "--gratings", "8", "--per-class", "3", "--size", "16", "--steps", "3",
        "--batch-size", "8", "--threads", "1"]


def _build(out: Path) -> dict:
    r = subprocess.run([sys.executable, "-m", "stm_lib.cli", "pretrain", "--out", str(out), *TINY],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads((out / pretrain.RECORD).read_text())


def test_build_is_deterministic_hashed_and_loadable(tmp_path):
    a, b = _build(tmp_path / "a"), _build(tmp_path / "b")
    assert a["sha256"] == b["sha256"] == pretrain.sha256(tmp_path / "a" / pretrain.BACKBONE)
    assert a["recipe"]["steps"] == 3 and a["provenance"]["git"]["commit"]
    state = torch.load(tmp_path / "a" / pretrain.BACKBONE, weights_only=True)
    assert not any(k.startswith("fc.") for k in state)          # the head is not part of the start
    path = pretrain.verify(tmp_path / "a" / pretrain.BACKBONE)
    m = build_model(ModelConfig(name="stm", frames=4, num_classes=5, width_mult=0.25, pretrained=path))
    assert set(state) <= set(m.load_report.loaded)             # every backbone tensor reaches STM
    assert any("cmm" in k or "cstm" in k for k in m.load_report.new)   # new modules keep the paper's init
    ref = build_model(ModelConfig(name="tsn-diff", frames=4, num_classes=5, width_mult=0.25, pretrained=path))
    w = ref.state_dict()["conv1.weight"]      # [frame, difference]: the RGB mean in all 6 (TSN's cross-modality init)
    mean = state["conv1.weight"].mean(dim=1, keepdim=True)
    assert w.shape[1] == 6 and all(torch.allclose(w[:, i:i + 1], mean) for i in range(6))


def test_a_changed_start_is_refused(tmp_path):
    _build(tmp_path / "s")
    f = tmp_path / "s" / pretrain.BACKBONE
    data = bytearray(f.read_bytes())
    data[-100] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256 differs"):
        pretrain.verify(f)
    with pytest.raises(FileNotFoundError, match="stm pretrain"):
        pretrain.verify(tmp_path / "missing" / pretrain.BACKBONE)


def test_bad_recipe_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "stm_lib.cli", "pretrain", "--out", str(tmp_path / "x"), "--steps", "0"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--steps" in r.stderr


def test_the_committed_start_is_what_its_record_says():
    from stm_lib.book.tables import PROFILES

    path = ROOT / PROFILES["proxy"]["pretrained"]
    rec = json.loads((path.parent / pretrain.RECORD).read_text())
    assert pretrain.sha256(path) == rec["sha256"]
    assert rec["provenance"]["git"]["dirty"] is False
    assert rec["recipe"] == {**pretrain.asdict(pretrain.Recipe()), "seed": 0}   # the default recipe


def test_proxy_schedule_is_the_papers_shape():
    """The proxy profile's schedule is the paper's (x0.1 at 30, 40, 45 of 50) stretched to its
    epochs, as fixed in runs/calibration/README.md before any run under it, and it starts from the
    committed shared start."""
    from stm_lib.book.tables import PROFILES
    from stm_lib.engine.optim import paper_lr_steps

    p = PROFILES["proxy"]
    assert p["epochs"] == 12 and tuple(p["lr_steps"]) == paper_lr_steps(12) == (7, 10, 11)
    assert p["pretrained"] == "runs/pretrain/start/backbone.pth" and p["lr"] == 0.01 and p["seeds"] >= 5
