"""Engine: optimiser recipe, schedule, checkpoints, the run folder, guards, evaluation, predict,
and the `stm train / evaluate / predict` command line. Small and fast (tiny proxy, CPU)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from stm_lib.config import Config
from stm_lib.engine import checkpoint as ckpt
from stm_lib.io import atomic_write
from stm_lib.engine import optim
from stm_lib.engine.distributed import ShardedSampler
from stm_lib.engine.evaluate import metrics_from_confusion

from conftest import tiny_config as tiny_cfg


@pytest.fixture(scope="module")
def cache(proxy_cache):
    return proxy_cache


@pytest.fixture(scope="module")
def trained(tiny_run):
    """One tiny finished run (conftest) shared by the evaluation / predict / CLI tests."""
    return tiny_run


def make_mp4(path: Path, frames: int = 24, size: int = 48) -> Path:
    """A real H.264/MPEG-4 file written with PyAV: a square moving right."""
    import av

    with av.open(str(path), "w") as c:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        s = c.add_stream(codec, rate=8)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        for t in range(frames):
            img = np.full((size, size, 3), 30, np.uint8)
            x = (2 * t) % (size - 8)
            img[20:28, x : x + 8] = (250, 200, 40)
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


# ---- optimiser recipe (paper 4.2 + TSM) --------------------------------------------------

class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.mid = nn.Linear(4, 4)
        self.fc = nn.Linear(4, 3)


def test_param_groups_follow_the_tsm_recipe():
    m = Tiny()
    groups = {g["name"]: g for g in optim.param_groups(m, lr=0.1, weight_decay=5e-4, fc_lr_mult=5)}
    ids = lambda g: {id(p) for p in g["params"]}  # noqa: E731
    assert ids(groups["fc_weight"]) == {id(m.fc.weight)}
    assert ids(groups["fc_bias"]) == {id(m.fc.bias)}
    assert groups["fc_weight"]["lr"] == pytest.approx(0.5) and groups["fc_weight"]["weight_decay"] == 5e-4
    assert groups["fc_bias"]["lr"] == pytest.approx(1.0) and groups["fc_bias"]["weight_decay"] == 0
    assert ids(groups["no_decay"]) == {id(m.bn.weight), id(m.bn.bias), id(m.mid.bias)}
    assert groups["no_decay"]["weight_decay"] == 0
    assert ids(groups["weight"]) == {id(m.conv.weight), id(m.mid.weight)}
    assert sum(len(g["params"]) for g in groups.values()) == len(list(m.parameters()))


def test_lr_rules():
    assert optim.effective_lr(0.01, 16, lr_scale=True) == pytest.approx(0.0025)
    assert optim.effective_lr(0.02, 16, lr_scale=False) == 0.02
    assert optim.paper_lr_steps(50) == (30, 40, 45)
    assert optim.paper_lr_steps(8) == (5, 6, 7)
    f = lambda e, **k: optim.lr_factor(e, 50, **k)  # noqa: E731
    assert [f(e) for e in (0, 29.99, 30, 39.5, 40, 45, 49.9)] == pytest.approx([1, 1, .1, .1, .01, .001, .001])
    assert f(0, schedule="cosine") == 1 and f(25, schedule="cosine") == pytest.approx(0.5)
    assert f(50, schedule="cosine") == pytest.approx(0, abs=1e-12)
    assert f(0.5, warmup_epochs=2) == pytest.approx(0.25) and f(2, warmup_epochs=2) == 1
    with pytest.raises(ValueError):
        optim.lr_factor(0, 10, "linear")


def test_scheduler_is_per_iteration_and_resumable():
    m = Tiny()
    opt = optim.build_optimizer(m, 0.1, 0.9, 5e-4, 5)
    sch = optim.build_scheduler(opt, steps_per_epoch=10, epochs=4, steps=(2, 3))
    for _ in range(25):
        opt.step()
        sch.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)  # epoch 2.5
    st = optim.scheduler_state(sch)
    opt2 = optim.build_optimizer(m, 0.1, 0.9, 5e-4, 5)
    sch2 = optim.build_scheduler(opt2, steps_per_epoch=10, epochs=4, steps=(2, 3))
    optim.load_scheduler_state(sch2, st)
    for _ in range(5):
        opt2.step()
        sch2.step()
    fc_bias = [g for g in opt2.param_groups if g["name"] == "fc_bias"][0]
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.001) and fc_bias["lr"] == pytest.approx(0.01)


# ---- checkpoints ------------------------------------------------------------------------

def test_atomic_write_leaves_no_temp_and_rng_roundtrips(tmp_path):
    ckpt.seed_everything(3)
    st = ckpt.rng_state()
    a = (torch.rand(3), np.random.rand(3), __import__("random").random())
    ckpt.atomic_save({"rng": st, "x": [1, 2.0, "s", None]}, tmp_path / "c.pt")
    back = torch.load(tmp_path / "c.pt", weights_only=True)  # plain data only
    ckpt.set_rng_state(back["rng"])
    b = (torch.rand(3), np.random.rand(3), __import__("random").random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "c.pt", boom)
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # old file intact, no temp left
    assert torch.load(tmp_path / "c.pt", weights_only=True)["x"] == [1, 2.0, "s", None]


def test_sharded_sampler_ddp_batches_union_to_single_process_batches():
    n, B, W = 37, 8, 2
    single = list(ShardedSampler(n, 1, 0, seed=5))
    ranks = [list(ShardedSampler(n, W, r, seed=5)) for r in range(W)]
    for k in range(n // B):
        union = sorted(sum((rk[k * B // W:(k + 1) * B // W] for rk in ranks), []))
        assert union == sorted(single[k * B:(k + 1) * B])
    s = ShardedSampler(n, 1, 0, seed=5)
    s.set_epoch(1)
    epoch1 = list(s)
    assert epoch1 != single and sorted(epoch1) == sorted(single)  # a new order each epoch
    s.set_epoch(1, skip=8)
    assert list(s) == epoch1[8:] and len(s) == n - 8  # mid-epoch resume skips what was done
    ev = [list(ShardedSampler(n, 3, r, shuffle=False, pad=False)) for r in range(3)]
    assert sorted(sum(ev, [])) == list(range(n))  # evaluation: every video exactly once


# ---- training: the run folder, resume, guards ------------------------------------------

def test_train_writes_the_run_folder(trained):
    out = trained
    for f in ("config.yaml", "command.txt", "metrics.csv", "metrics.jsonl", "run.json",
              ckpt.LAST, ckpt.BEST):
        assert (out / f).is_file(), f
    assert not list(out.glob(".*tmp"))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for k in ("train_loss", "train_top1", "train_top5", "val_top1", "val_top5", "lr", "clips_per_s",
              "wall_time_s", "epoch_time_s"):
        assert all(math.isfinite(r[k]) for r in rows), k
    assert [r["lr"] for r in rows] == pytest.approx([0.01, 0.001])  # x0.1 at the step
    assert (out / "metrics.csv").read_text().count("\n") == 3
    state = torch.load(out / ckpt.LAST, weights_only=True)
    assert state["epoch"] == 2 and state["num_classes"] == 4 and len(state["classes"]) == 4
    for k in ("model", "optimizer", "scheduler", "scaler", "rng", "config", "history"):
        assert k in state
    cfg = Config.from_dict(state["config"])
    assert cfg.model.num_classes == 4  # 0 resolved from the dataset
    import yaml

    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["num_classes"] == 4
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "finished" and run["seed"] == 0 and "torch" in run["versions"]
    assert {"commit", "dirty"} <= set(run["git"]) and run["hardware"]["cpu_count"]


def test_existing_run_needs_resume_and_finished_run_resumes_to_a_no_op(trained, cache):
    from stm_lib.engine import train

    with pytest.raises(ValueError, match="--resume"):
        train(tiny_cfg(trained, cache))
    before = (trained / "metrics.csv").read_text()
    train(tiny_cfg(trained, cache, resume=True))
    assert (trained / "metrics.csv").read_text() == before
    with pytest.raises(ValueError, match="differs"):
        train(tiny_cfg(trained, cache, resume=True).update("model", name="tsn"))


def test_class_count_mismatch_is_caught_before_the_first_step(tmp_path, cache):
    from stm_lib.engine import train

    cfg = tiny_cfg(tmp_path / "r", cache).update("model", num_classes=174)
    with pytest.raises(ValueError, match=r"174 classes.*dataset has 4"):
        train(cfg)
    assert not (tmp_path / "r" / ckpt.LAST).exists()


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, cache, monkeypatch):
    from stm_lib.engine import NonFiniteLossError, train

    real = torch.nn.functional.cross_entropy
    calls = {"n": 0}

    def poisoned(logits, y, *a, **k):  # fine for epoch 1 (4 steps), NaN in epoch 2
        calls["n"] += 1
        loss = real(logits, y, *a, **k)
        return loss * float("nan") if calls["n"] > 5 else loss

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", poisoned)
    out = tmp_path / "r"
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss.*epoch 2 step 2.*last good checkpoint"):
        train(tiny_cfg(out, cache))
    assert torch.load(out / ckpt.LAST, weights_only=True)["epoch"] == 1
    assert json.loads((out / "run.json").read_text())["status"].startswith("stopped: non-finite")
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def _resume_cfg(out, cache, workers, **kw):
    c = tiny_cfg(out, cache, checkpoint_every_steps=3, **kw)
    return c.update("data", num_workers=workers)


@pytest.fixture(scope="module")
def resume_ref(tmp_path_factory, cache):
    """The uninterrupted reference run (no loader workers) for both resume tests."""
    from stm_lib.engine import train

    return train(_resume_cfg(tmp_path_factory.mktemp("ref") / "ref", cache, 0))


@pytest.mark.parametrize("workers", [0, 1])
def test_mid_epoch_checkpoint_resume_is_exact(tmp_path, cache, monkeypatch, workers, resume_ref):
    """In-process kill-and-resume: die right after a mid-epoch checkpoint, resume, compare with
    an uninterrupted run. Exact with loader workers too (against the same reference run without
    workers): augmentation is seeded per (seed, epoch, clip)."""
    from stm_lib.engine import train

    if workers:   # decoded proxy arrays are read in-process; the JPEG path is what workers run
        monkeypatch.setenv("STM_PROXY_ARRAYS", "0")
    ref = resume_ref
    out = tmp_path / "cut"

    class Killed(BaseException):
        pass

    real_save = ckpt.atomic_save

    def save_then_die(obj, path):
        real_save(obj, path)
        if obj.get("partial") and obj["epoch"] == 1:  # epoch 2, step 3 written: die here
            raise Killed

    monkeypatch.setattr(ckpt, "atomic_save", save_then_die)
    with pytest.raises(Killed):
        train(_resume_cfg(out, cache, workers))
    monkeypatch.setattr(ckpt, "atomic_save", real_save)
    assert torch.load(out / ckpt.LAST, weights_only=True)["partial"]["step"] == 3
    train(_resume_cfg(out, cache, workers, resume=True))
    assert _metrics(out) == _metrics(ref)
    a = torch.load(ref / ckpt.LAST, weights_only=True)["model"]
    b = torch.load(out / ckpt.LAST, weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def _metrics(run: Path) -> list[dict]:
    """metrics.jsonl without the timing columns."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in rows]


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_and_channels_last_run_on_cpu(tmp_path, cache, amp, monkeypatch):
    """--amp and --channels-last observed inside the forward of training and evaluation: a hook
    on a 3x3 conv records the dtype it computes in (autocast) and the strides of its weight and
    output (channels_last); the checkpoint keeps fp32 master weights."""
    import stm_lib.models
    from stm_lib.engine import evaluate, train

    seen = []

    def hook(mod, inp, out):
        cl = torch.channels_last
        seen.append((mod.training, out.dtype, mod.weight.is_contiguous(memory_format=cl),
                     out.is_contiguous(memory_format=cl) and not out.is_contiguous()))

    real = stm_lib.models.build_model

    def build_and_watch(*a, **k):
        m = real(*a, **k)
        m.layer1[0].conv2.register_forward_hook(hook)
        return m

    monkeypatch.setattr(stm_lib.models, "build_model", build_and_watch)
    out = train(tiny_cfg(tmp_path / "r", cache, epochs=1, amp=amp, channels_last=True, max_steps_per_epoch=2))
    r = evaluate(out, progress=False)
    low = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    assert {mode for mode, *_ in seen} == {True, False}                 # training steps and evaluation
    assert all(dtype == low for _, dtype, _, _ in seen), seen[:3]     # autocast ran the conv in low precision
    assert all(w_cl and o_cl for *_, w_cl, o_cl in seen), seen[:3]      # NHWC weights and activations
    row = json.loads((out / "metrics.jsonl").read_text())
    assert math.isfinite(row["train_loss"]) and row["train_loss"] > 0
    state = torch.load(out / ckpt.LAST, weights_only=True)
    assert all(v.dtype != torch.float16 and v.dtype != torch.bfloat16 for v in state["model"].values())  # fp32 master weights
    assert bool(state["scaler"]) == (amp == "fp16")  # GradScaler only for fp16
    assert 0 <= r["top1"] <= 1


# ---- evaluation and predict -------------------------------------------------------------

class ViewTable(nn.Module):
    """A stub model with known logits per view: each view's pixels all hold its global index
    (video * V + view), and the model returns row `index` of `table`. A mix-up of videos and
    views inside `run_eval` (e.g. reshaping (N*V) as (V, N)) would then change the scores."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = table

    def forward(self, x):
        return self.table[x.flatten(1)[:, 0].round().long()]


def test_multi_view_metrics_by_hand():
    """10 clips x 3 crops (Tables 1-4): softmax scores averaged over the 30 views, then top-1,
    top-5, loss (NLL of the averaged scores), mean class accuracy and the confusion matrix,
    against numbers worked out by hand. Six classes, five videos in two batches:

    video 0 (label 1): 29 views logits e_1 (class 1 at 1, others 0), 1 view 100 on class 0.
        Softmax averaging: p1 = 29/30 * e/(e+5) = 0.340 > p0 = 29/30 / (e+5) + 1/30 = 0.159,
        so class 1 (correct); averaging logits would pick class 0 (100/30 > 29/30).
    videos 1, 2 (labels 4, 5): every view [5,4,3,2,1,0]: predicted 0; label 4 is 5th (in the
        top-5, not in a top-4), label 5 is 6th (not).
    videos 3, 4 (label 0): crop 0 of each clip 3 on class 0, the other crops all 0: predicted 0
        (p0 = 1/3 * e^3/(e^3+5) + 2/3 * 1/6).
    top-1 3/5, top-5 4/5, per class {0: 2/2, 1: 1/1, 4: 0/1, 5: 0/1}, mean 0.5; 2, 3 absent."""
    from stm_lib.engine.evaluate import run_eval

    clips, crops, C, N = 10, 3, 6, 5
    V = clips * crops
    logits = torch.zeros(N, V, C)
    logits[0, :, 1] = 1.0
    logits[0, 7] = torch.tensor([100.0, 0, 0, 0, 0, 0])
    logits[1:3] = torch.tensor([5.0, 4, 3, 2, 1, 0])
    logits[3:5].view(2, clips, crops, C)[:, :, 0, 0] = 3.0       # views are clip-major: v = clip*3 + crop
    labels = torch.tensor([1, 4, 5, 0, 0])
    views = torch.arange(N * V, dtype=torch.float).view(N, V, 1, 1, 1, 1).expand(N, V, 2, 3, 4, 4)
    loader = [(views[:3], labels[:3], 0), (None, torch.tensor([]), 2), (views[3:], labels[3:], 1)]
    m = run_eval(ViewTable(logits.view(N * V, C)), loader, torch.device("cpu"), C)

    e = math.e
    p_video0 = 29 / 30 * e / (e + 5)
    s = sum(math.exp(k) for k in range(6))
    p_ramp = [math.exp(5 - k) / s for k in range(6)]                 # p of class k for [5,4,3,2,1,0]
    p_video3 = 1 / 3 * math.exp(3) / (math.exp(3) + 5) + 2 / 3 * 1 / 6
    assert m["n"] == 5 and m["skipped"] == 3
    assert m["top1"] == pytest.approx(3 / 5) and m["top5"] == pytest.approx(4 / 5)
    assert m["loss"] == pytest.approx(-(math.log(p_video0) + math.log(p_ramp[4]) + math.log(p_ramp[5])
                                        + 2 * math.log(p_video3)) / 5, rel=1e-6)
    expected = [[0] * C for _ in range(C)]
    expected[0][0], expected[1][1], expected[4][0], expected[5][0] = 2, 1, 1, 1
    assert m["confusion"] == expected
    pc = m["per_class"]
    assert pc[0] == 1 and pc[1] == 1 and pc[4] == 0 and pc[5] == 0 and math.isnan(pc[2]) and math.isnan(pc[3])
    assert m["mean_class_acc"] == pytest.approx(0.5)

    # one view per video, (N, T, 3, S, S) batches: plain softmax of that view
    one = run_eval(ViewTable(logits.view(N * V, C)), [(views[:, 7], labels, 0)], torch.device("cpu"), C)
    # video 0's view 7 says class 0 (wrong), p1 = 1/(e^100 + 5): the loss clamps it at 1e-12
    assert one["top1"] == pytest.approx(2 / 5) and one["confusion"][1][0] == 1
    assert one["loss"] == pytest.approx(-(math.log(1e-12) + math.log(p_ramp[4])
                                          + math.log(p_ramp[5]) + 2 * math.log(1 / 6)) / 5, rel=1e-6)


def test_metrics_from_confusion_by_hand():
    conf = torch.tensor([[3, 1, 0], [0, 0, 0], [2, 0, 4]])
    m = metrics_from_confusion(conf, top5_correct=9, nll_sum=5.0, skipped=1)
    assert (m["n"], m["skipped"]) == (10, 1)
    assert m["top1"] == pytest.approx(0.7) and m["top5"] == pytest.approx(0.9) and m["loss"] == pytest.approx(0.5)
    assert m["per_class"][0] == pytest.approx(0.75) and math.isnan(m["per_class"][1])
    assert m["per_class"][2] == pytest.approx(4 / 6)
    assert m["mean_class_acc"] == pytest.approx((0.75 + 4 / 6) / 2)             # absent class 1 left out
    empty = metrics_from_confusion(torch.zeros(2, 2), 0, 0.0, 3)
    assert empty["n"] == 0 and math.isnan(empty["top1"]) and math.isnan(empty["mean_class_acc"])


def test_evaluate_one_and_multi_view_protocols(trained):
    """`evaluate` under 1x1 and 2x3 views against a computation by hand: every view of every
    validation video through the model on its own, softmax, mean over the views, then argmax
    (confusion, top-1) and the NLL of the mean (loss, which changes with any view's scores)."""
    import dataclasses

    from stm_lib.data import build_dataset
    from stm_lib.engine import evaluate
    from stm_lib.engine.evaluate import load_run

    r1 = evaluate(trained, clips=1, crops=1, progress=False)
    r2 = evaluate(trained, clips=2, crops=3, progress=False)
    model, cfg, _, _ = load_run(trained, device="cpu")
    for r, tag, (clips, crops) in ((r1, "val_1x1", (1, 1)), (r2, "val_2x3", (2, 3))):
        data = dataclasses.replace(cfg.data, test_clips=clips, test_crops=crops)
        ds = build_dataset(data, "val", cfg.model.frames, train=False)
        conf, nll = np.zeros((4, 4), int), 0.0
        with torch.no_grad():
            for i in range(len(ds)):
                x, y = ds[i]                                               # (V, T, 3, S, S)
                assert x.shape[0] == clips * crops
                p = torch.stack([model(v[None])[0].softmax(-1) for v in x]).mean(0)
                conf[y, int(p.argmax())] += 1
                nll -= math.log(float(p[y])) / len(ds)
        assert r["n"] == 8 and r["top1"] == pytest.approx(np.trace(conf) / 8)
        assert r["loss"] == pytest.approx(nll, rel=1e-4)                  # sensitive to every view's scores
        per_class = [conf[c, c] / conf[c].sum() for c in range(4) if conf[c].sum()]
        assert r["mean_class_acc"] == pytest.approx(np.mean(per_class))
        saved = json.loads((trained / f"eval_{tag}.json").read_text())
        assert saved["top1"] == r["top1"] and len(saved["per_class"]) == 4 and saved["views"] == clips * crops
        lines = (trained / f"confusion_{tag}.csv").read_text().splitlines()
        assert len(lines) == 5
        assert [[int(v) for v in line.split(",")[1:]] for line in lines[1:]] == conf.tolist()
    # 1x1 is the protocol training validated with: the best checkpoint scores the best epoch's top-1
    best = max(json.loads(line)["val_top1"] for line in (trained / "metrics.jsonl").read_text().splitlines())
    assert r1["top1"] == pytest.approx(best)


def test_predict_on_a_real_video_file(trained, tmp_path):
    from stm_lib.engine import predict

    video = make_mp4(tmp_path / "clip.mp4")
    top = predict(video, trained)
    assert len(top) == 4  # top-5 of a 4-class model
    names = [n for n, _ in top]
    assert set(names) == set(torch.load(trained / ckpt.LAST, weights_only=True)["classes"])
    assert sum(p for _, p in top) == pytest.approx(1, abs=1e-4)
    assert [p for _, p in top] == sorted((p for _, p in top), reverse=True)


# ---- command line -----------------------------------------------------------------------

def test_cli_help_states_the_lr_rule():
    from stm_lib.cli import build_parser

    p = build_parser()
    sub = next(a for a in p._actions if a.dest == "command")
    text = sub.choices["train"].format_help()
    text = " ".join(text.split())   # argparse re-wraps the help
    assert "LR * batch-size / 64" in text and "not the paper's" in text and "GLOBAL" in text
    assert {"train", "evaluate", "predict"} <= set(sub.choices)


def test_cli_config_precedence(tmp_path):
    from stm_lib.cli import build_parser
    from stm_lib.engine.cli import config_from_args

    p = build_parser()
    issue = ("train --dataset ssv1 --data-root DIR --model stm --frames 8 --input-size 64 --width-mult 0.25 "
             "--epochs 8 --batch-size 16 --lr 0.02 --out RUN").split()
    c = config_from_args(p.parse_args(issue))
    assert (c.model.name, c.model.frames, c.model.width_mult, c.model.num_classes) == ("stm", 8, 0.25, 0)
    assert (c.data.dataset, c.data.data_root, c.data.input_size) == ("ssv1", "DIR", 64)
    assert (c.train.epochs, c.train.batch_size, c.train.lr, c.train.lr_scale) == (8, 16, 0.02, False)
    assert c.train.lr_steps == (5, 6, 7) and c.train.out == "RUN"
    c = config_from_args(p.parse_args("train --batch-size 16".split()))
    assert optim.effective_lr(c.train.lr, c.train.batch_size, c.train.lr_scale) == 0.01  # as is: paper 4.2
    assert c.train.lr_steps == (30, 40, 45)
    y = tmp_path / "c.yaml"
    y.write_text("model: {name: tsn}\ntrain: {lr: 0.05, epochs: 20, lr_steps: [10]}\n")
    c = config_from_args(p.parse_args(f"train --config {y} --epochs 12".split()))
    assert (c.model.name, c.train.lr, c.train.epochs, c.train.lr_steps, c.train.lr_scale) == ("tsn", 0.05, 12, (10,), False)


def test_cli_evaluate_json_and_predict(trained, tmp_path, capsys):
    from stm_lib.cli import main

    assert main(["evaluate", "--run", str(trained), "--clips", "2", "--crops", "3", "--json"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    r = json.loads(last)
    assert {"top1", "top5"} <= set(r) and r["clips"] == 2 and r["crops"] == 3
    video = make_mp4(tmp_path / "v.mp4")
    assert main(["predict", str(video), "--run", str(trained)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("1. ")
    assert main(["evaluate", "--run", str(tmp_path / "nope")]) == 2
