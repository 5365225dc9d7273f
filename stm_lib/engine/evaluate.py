"""Testing protocols and metrics.

Two protocols (paper section 4.2 and notes/implementation-facts.md): Table 9 uses 1 clip x centre
crop; the accuracy tables (Tables 1-4) use 10 clips x 3 crops, softmax scores averaged over the
30 views. Both are `evaluate(run_dir, clips, crops)`; per-epoch validation during training is the
1 x 1 protocol through `run_eval`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from stm_lib.engine import checkpoint as ckpt
from stm_lib.engine.distributed import ShardedSampler, all_reduce_sum, resolve_device
from stm_lib.io import atomic_write_json, atomic_write_text, json_default


def amp_context(device: torch.device, amp: str):
    """torch.autocast for `amp` in {none, bf16, fp16}."""
    if amp in (None, "none", "fp32"):
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    if dtype is None:
        raise ValueError(f"unknown --amp '{amp}' (none | bf16 | fp16)")
    return torch.autocast(device_type=device.type, dtype=dtype)


def topk_correct(logits_or_probs: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> list[int]:
    k = min(max(ks), logits_or_probs.shape[1])
    pred = logits_or_probs.topk(k, dim=1).indices
    hit = pred.eq(labels[:, None])
    return [int(hit[:, : min(kk, k)].any(1).sum()) for kk in ks]


@torch.no_grad()
def run_eval(model, loader, device: torch.device, num_classes: int, amp: str = "none",
             progress: bool = False, desc: str = "eval") -> dict:
    """Evaluate `model` on a loader of test items (N, V, T, 3, S, S) or (N, T, 3, S, S).

    Softmax scores are averaged over the V = clips x crops views of each video. Counts are summed
    over DDP ranks (each rank sees its own shard), so every rank returns the global metrics.
    """
    from tqdm import tqdm

    model.eval()
    conf = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    nll_sum, skipped, top5 = 0.0, 0, 0
    it = tqdm(loader, desc=desc, leave=False, disable=None if progress else True, dynamic_ncols=True)
    for clips, labels, n_skipped in it:
        skipped += int(n_skipped)
        if clips is None or len(labels) == 0:
            continue
        if clips.dim() == 5:  # (N, T, 3, S, S): one view
            clips = clips[:, None]
        n, v = clips.shape[:2]
        x = clips.flatten(0, 1).to(device, non_blocking=True)
        with amp_context(device, amp):
            logits = model(x)
        probs = logits.float().softmax(-1).view(n, v, -1).mean(1).cpu()
        labels = labels.long().cpu()
        nll_sum += float(-probs.gather(1, labels[:, None]).clamp_min(1e-12).log().sum())
        pred = probs.argmax(1)
        conf.index_put_((labels, pred), torch.ones(n, dtype=torch.float64), accumulate=True)
        top5 += topk_correct(probs, labels, (5,))[0]  # needs the scores, not the confusion matrix
    counts = torch.cat([conf.flatten(), torch.tensor([nll_sum, skipped, top5], dtype=torch.float64)])
    counts = all_reduce_sum(counts.to(device)).cpu()
    conf = counts[: num_classes * num_classes].view(num_classes, num_classes)
    nll_sum, skipped, top5 = counts[-3:].tolist()
    return metrics_from_confusion(conf, top5, nll_sum, int(skipped))


def metrics_from_confusion(conf: torch.Tensor, top5_correct: float, nll_sum: float, skipped: int) -> dict:
    conf = conf.double()
    n = float(conf.sum())
    per_class_n = conf.sum(1)
    per_class = torch.where(per_class_n > 0, conf.diag() / per_class_n.clamp_min(1), torch.nan)
    present = per_class_n > 0
    return {
        "n": int(n),
        "skipped": skipped,
        "top1": float(conf.diag().sum() / n) if n else float("nan"),
        "top5": float(top5_correct / n) if n else float("nan"),
        "loss": float(nll_sum / n) if n else float("nan"),
        "mean_class_acc": float(per_class[present].mean()) if present.any() else float("nan"),
        "per_class": per_class.tolist(),
        "confusion": conf.long().tolist(),
    }


# --- loading a trained run -----------------------------------------------------------------

def load_run(run_dir: str | Path, checkpoint: str = "best", device: str | torch.device = "auto"):
    """(model in eval mode on device, Config with num_classes resolved, class names, checkpoint)."""
    from stm_lib.models import build_model, to_channels_last

    run_dir = Path(run_dir)
    path = _checkpoint_path(run_dir, checkpoint)
    state = ckpt.load(path, map_location="cpu", need=("model", "config", "num_classes"))
    cfg = ckpt.config_of(state, path)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pretrained=None,
                                                             num_classes=int(state["num_classes"])))
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    model = build_model(cfg.model)
    ckpt.restore(model, state["model"], path)
    model.to(dev).eval()
    if cfg.train.channels_last:
        to_channels_last(model)
    return model, cfg, list(state.get("classes") or []), state


def _checkpoint_path(run_dir: Path, checkpoint: str) -> Path:
    if checkpoint in ("best", "last"):
        p = run_dir / (ckpt.BEST if checkpoint == "best" else ckpt.LAST)
        if checkpoint == "best" and not p.exists() and (run_dir / ckpt.LAST).exists():
            p = run_dir / ckpt.LAST
        if not p.exists():
            raise FileNotFoundError(f"no checkpoint in {run_dir} (expected {ckpt.BEST} or {ckpt.LAST}); "
                                    "is it a `stm train --out` folder?")
        return p
    return Path(checkpoint)


def evaluate(run_dir: str | Path, clips: int = 1, crops: int = 1, split: str = "val", device: str = "auto",
             checkpoint: str = "best", batch_size: int | None = None, num_workers: int | None = None,
             data_root: str | None = None, amp: str | None = None, save: bool = True,
             progress: bool = True) -> dict:
    """Evaluate a trained run under `clips` x `crops` views (1x1: Table 9; 10x3: Tables 1-4).

    Writes eval_<split>_<clips>x<crops>[_<checkpoint>].json (top-1, top-5, mean class accuracy, per-class
    accuracy, the checkpoint's epoch) and confusion_<split>_<clips>x<crops>.csv (rows: true class,
    columns: predicted) into the run folder, and returns the JSON's content.
    """
    from stm_lib.data import build_dataset, make_loader

    run_dir = Path(run_dir)
    model, cfg, classes, state = load_run(run_dir, checkpoint, device)
    dev = next(model.parameters()).device
    data = dataclasses.replace(cfg.data, test_clips=clips, test_crops=crops)
    if data_root:
        data = dataclasses.replace(data, data_root=data_root)
    if num_workers is not None:
        data = dataclasses.replace(data, num_workers=num_workers)
    ds = build_dataset(data, split=split, frames=cfg.model.frames, train=False)
    if ds.num_classes != cfg.model.num_classes:
        raise ValueError(f"the {split} set has {ds.num_classes} classes but the model was trained on "
                         f"{cfg.model.num_classes}")
    classes = classes or list(getattr(ds, "classes", [])) or [str(i) for i in range(ds.num_classes)]
    views = clips * crops
    bs = batch_size or max(1, cfg.train.batch_size // views)
    loader = make_loader(ds, bs, train=False, num_workers=data.num_workers,
                         sampler=ShardedSampler(len(ds), shuffle=False, pad=False))
    t0 = time.time()
    m = run_eval(model, loader, dev, cfg.model.num_classes, amp or cfg.train.amp,
                 progress=progress, desc=f"eval {clips}x{crops}")
    elapsed = time.time() - t0
    if m["n"] == 0:
        raise ValueError(f"no {split} clip of {cfg.data.dataset} could be read ({m['skipped']} failed; the "
                         "'skipping clip' warnings name them; `stm data check` lists every bad clip)")
    tag = f"{split}_{clips}x{crops}" + ("" if checkpoint == "best" else f"_{Path(checkpoint).stem}")
    conf = m.pop("confusion")
    per_class = m.pop("per_class")
    result = {
        **m, "clips": clips, "crops": crops, "views": views, "split": split,
        "checkpoint": checkpoint, "epoch": int(state.get("epoch", 0)), "model": cfg.model.name,
        "dataset": cfg.data.dataset, "seconds": round(elapsed, 3),
        "videos_per_s": round(m["n"] / elapsed, 3) if elapsed > 0 else None,
        "per_class": {c: (None if np.isnan(a) else a) for c, a in zip(classes, per_class)},
        "confusion_csv": f"confusion_{tag}.csv",
    }
    if save:
        atomic_write_json(run_dir / f"eval_{tag}.json", result)
        atomic_write_text(run_dir / f"confusion_{tag}.csv", _confusion_csv(conf, classes))
    return result


def _confusion_csv(conf, classes) -> str:
    def q(s):
        s = str(s)
        return '"' + s.replace('"', '""') + '"' if ("," in s or '"' in s) else s

    lines = ["true\\pred," + ",".join(q(c) for c in classes)]
    lines += [q(c) + "," + ",".join(str(int(v)) for v in row) for c, row in zip(classes, conf)]
    return "\n".join(lines) + "\n"


@torch.no_grad()
def predict(video: str | Path, run_dir: str | Path, topk: int = 5, clips: int = 1, crops: int = 1,
            device: str = "auto", checkpoint: str = "best") -> list[tuple[str, float]]:
    """Top-k (class name, probability) for one video file or frames folder."""
    from stm_lib.data import load_clip

    video = Path(video)
    if not video.exists():
        raise FileNotFoundError(f"video not found: {video}")
    model, cfg, classes, _ = load_run(run_dir, checkpoint, device)
    dev = next(model.parameters()).device
    x = load_clip(str(video), cfg.model.frames, cfg.data.input_size, scale_size=cfg.data.scale_size,
                  clips=clips, crops=crops)
    x = torch.as_tensor(x).float().to(dev)
    with amp_context(dev, cfg.train.amp):
        probs = model(x).float().softmax(-1).mean(0).cpu()
    k = min(topk, probs.numel())
    p, i = probs.topk(k)
    names = classes or [str(j) for j in range(probs.numel())]
    return [(names[j], float(pj)) for pj, j in zip(p.tolist(), i.tolist())]


def format_result(r: dict) -> str:
    return (f"{r['model']} on {r['dataset']} {r['split']} ({r['clips']} clip x {r['crops']} crop, "
            f"{r['n']} videos, epoch {r['epoch']}): top-1 {100 * r['top1']:.2f}  top-5 {100 * r['top5']:.2f}  "
            f"mean class {100 * r['mean_class_acc']:.2f}")


def dumps_line(obj) -> str:
    return json.dumps(obj, default=json_default)
