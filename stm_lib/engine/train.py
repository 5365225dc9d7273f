"""The training loop: `train(cfg) -> run folder`, readable top to bottom.

Recipe (paper section 4.2; the TSM details in notes/implementation-facts.md): SGD momentum 0.9,
weight decay 5e-4 (not on BN or biases), lr 0.01 (at batch 64 for 8 frames and at 32 for 16: not
scaled with the batch; `lr_scale` is an option for other recipes), x0.1 at epochs 30/40/45 of 50,
every BN layer training, gradient norm clipped at 20, dropout 0.5, fc lr x5 (bias x10) when an
ImageNet backbone is loaded, x1 from scratch (`optim.resolve_fc_lr_mult`). The same function runs one CPU, one GPU, or many under torchrun (DDP).

Resuming: every epoch ends with an atomic checkpoint. The shuffling order depends only on
(seed, epoch), each clip's augmentation only on (seed, epoch, clip index), and the global random
streams (dropout) are reseeded from (seed, epoch, step, rank) at each epoch (and mid-epoch
checkpoint) boundary, so a run killed at any moment and resumed from its last checkpoint repeats
what the uninterrupted run would have done: bit for bit on CPU with --deterministic.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import platform
import shlex
import subprocess
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

from stm_lib.config import Config
from stm_lib.engine import checkpoint as ckpt
from stm_lib.engine import distributed as D
from stm_lib.engine.evaluate import amp_context, run_eval, topk_correct
from stm_lib.engine.optim import (build_optimizer, build_scheduler, effective_lr, load_scheduler_state,
                                  resolve_fc_lr_mult, scheduler_state, unwrap)
from stm_lib.models.registry import resolved_variant

METRIC_FIELDS = ["epoch", "train_loss", "train_top1", "train_top5", "val_loss", "val_top1", "val_top5",
                 "val_mean_class_acc", "lr", "clips_per_s", "epoch_time_s", "wall_time_s", "skipped",
                 "best_val_top1"]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the run stops and keeps its last good checkpoint."""


def train(cfg: Config, command: str | None = None) -> Path:
    """Train `cfg` and return the run folder (cfg.train.out). See the module docstring."""
    tc = cfg.train
    info = D.setup(tc.device)
    dev, log = info.device, (print if info.is_main else (lambda *a, **k: None))
    out = Path(tc.out)
    command = command or shlex.join([Path(sys.argv[0]).name] + sys.argv[1:])
    t_process = time.time()
    session = {"start": _now(), "command": command, "world_size": info.world_size, "status": "running"}
    started = False  # run.json is written only once this session owns the run folder
    was_deterministic, was_benchmark = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    try:
        # ---- 0. determinism ------------------------------------------------------------
        if tc.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        else:
            torch.backends.cudnn.benchmark = dev.type == "cuda"
        if tc.batch_size % info.world_size:
            raise ValueError(f"--batch-size {tc.batch_size} is the global batch and must divide by the "
                             f"{info.world_size} processes")
        per_rank_batch = tc.batch_size // info.world_size

        # ---- 1. an existing run: resume it or refuse to overwrite it --------------------
        state = None
        if (out / ckpt.LAST).exists():
            if not tc.resume:
                raise ValueError(f"{out} already holds a run ({ckpt.LAST}); pass --resume to continue it "
                                 "or choose another --out")
            state = ckpt.load(out / ckpt.LAST)
            _check_same_run(cfg, state, log)
            session["resumed_from_epoch"] = int(state["epoch"])
            if state.get("partial"):
                session["resumed_from_step"] = int(state["partial"]["step"])

        # ---- 2. data; the class count is settled before any model exists ----------------
        from stm_lib.data import build_dataset, make_loader
        from stm_lib.models import build_model

        frames = cfg.model.frames
        val_data = dataclasses.replace(cfg.data, test_clips=1, test_crops=1)  # per-epoch check: 1x1
        if not info.is_main:
            D.barrier()  # rank 0 first: it may generate or index the data (proxy cache)
        train_set = build_dataset(cfg.data, split="train", frames=frames, train=True)
        val_set = build_dataset(val_data, split="val", frames=frames, train=False)
        if info.is_main:
            D.barrier()
        num_classes = _resolve_classes(cfg.model.num_classes, train_set, val_set)
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=num_classes))
        classes = [str(c) for c in getattr(train_set, "classes", [])] or [str(i) for i in range(num_classes)]

        # ---- 3. model (every BN layer trains: paper 4.2, unlike TSN's partial BN) --------
        mcfg = cfg.model if state is None else dataclasses.replace(cfg.model, pretrained=None)
        ckpt.seed_everything(_segment_seed(tc.seed, 0, 0, 0))  # the same init on every rank
        model = build_model(mcfg)
        out_features = getattr(unwrap(model), "num_classes", None) or unwrap(model).fc.out_features
        if out_features != num_classes:
            raise ValueError(f"model '{cfg.model.name}' outputs {out_features} classes, dataset has {num_classes}")
        want, have = getattr(unwrap(model), "in_channels", 3), train_set.item_shape[-3]
        if want != have:
            raise ValueError(f"model '{cfg.model.name}' takes {want} channels per frame, the data gives {have}"
                             + (": it needs optical flow (stm data flow ..., then --flow-root)" if want > have else
                                ": --flow-root is only for the two-stream st-resnet"))
        model.to(dev)
        if tc.channels_last:
            model.to(memory_format=torch.channels_last)
        if tc.sync_bn and info.distributed and dev.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        raw = model  # what is saved and evaluated

        # ---- 4. loader, optimiser, schedule, AMP ----------------------------------------
        train_set = SampleSeeded(train_set, tc.seed)  # augmentation draws depend on (seed, epoch, clip)
        sampler = D.ShardedSampler(len(train_set), info.world_size, info.rank, shuffle=True, seed=tc.seed)
        loader = make_loader(train_set, per_rank_batch, train=True, num_workers=cfg.data.num_workers,
                             sampler=sampler, seed=tc.seed)  # rebuilt each epoch below
        val_loader = make_loader(val_set, per_rank_batch, train=False, num_workers=cfg.data.num_workers,
                                 sampler=D.ShardedSampler(len(val_set), info.world_size, info.rank,
                                                          shuffle=False, pad=False))
        steps_per_epoch = len(loader)
        if tc.max_steps_per_epoch > 0:
            steps_per_epoch = min(steps_per_epoch, tc.max_steps_per_epoch)
        if steps_per_epoch == 0:
            raise ValueError(f"no training step: {len(train_set)} training clips for a global batch of {tc.batch_size}")
        lr = effective_lr(tc.lr, tc.batch_size, tc.lr_scale)
        optimizer = build_optimizer(raw, lr, tc.momentum, tc.weight_decay,
                                    resolve_fc_lr_mult(tc.fc_lr_mult, cfg.model.pretrained))
        scheduler = build_scheduler(optimizer, steps_per_epoch, tc.epochs, tc.lr_schedule, tc.lr_steps,
                                    tc.warmup_epochs)
        scaler = torch.amp.GradScaler(dev.type, enabled=tc.amp == "fp16")
        amp_context(dev, tc.amp)  # validates the name

        # ---- 5. restore, or start a fresh run folder -------------------------------------
        start_epoch, history, best_top1, partial = 0, [], -1.0, None
        if state is not None:
            raw.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            load_scheduler_state(scheduler, state["scheduler"])
            if state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            ckpt.set_rng_state(state["rng"])  # then reseeded at the boundary we restart from
            start_epoch, history = int(state["epoch"]), list(state["history"])
            best_top1, partial = float(state["best_top1"]), state.get("partial")
            log(f"resuming {out} at epoch {start_epoch + 1}" + (f" step {partial['step']}" if partial else ""))
        started = True
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            ckpt.atomic_write_text(out / "config.yaml", _yaml(cfg.to_dict()))
            with open(out / "command.txt", "a") as f:
                f.write(f"# {_now()}  world_size={info.world_size}\n{command}\n")
        if state is None and info.is_main:
            _write_metrics(out, [])

        model = raw
        if info.distributed:
            model = torch.nn.parallel.DistributedDataParallel(
                raw, device_ids=[dev.index] if dev.type == "cuda" else None)
        if tc.compile:
            model = torch.compile(model)
        tb = _tensorboard(out) if (tc.tensorboard and info.is_main) else None
        wall_before = float(history[-1]["wall_time_s"]) if history else 0.0
        log(f"training {cfg.model.name} on {cfg.data.dataset}: {len(train_set)} clips, {num_classes} classes, "
            f"global batch {tc.batch_size} ({info.world_size} x {per_rank_batch}), lr {lr:g}, "
            f"{steps_per_epoch} steps/epoch, {tc.epochs} epochs, device {dev}")

        # ---- 6. the epochs -----------------------------------------------------------------
        params = [p for p in raw.parameters() if p.requires_grad]
        for epoch in range(start_epoch, tc.epochs):
            start_step = int(partial["step"]) if partial else 0
            acc = torch.tensor(partial["sums"], dtype=torch.float64) if partial else torch.zeros(5, dtype=torch.float64)
            t_train = float(partial["train_time_s"]) if partial else 0.0
            partial = None
            sampler.set_epoch(epoch, skip=start_step * per_rank_batch)
            model.train()
            lr_now = optimizer.param_groups[0]["lr"] / optimizer.param_groups[0].get("lr_mult", 1.0)
            # a loader per epoch, seeded from (seed, epoch, step, rank): worker and augmentation
            # streams then do not depend on how many epochs this process has run
            seg = _segment_seed(tc.seed, epoch, start_step, info.rank)
            train_set.epoch = epoch
            loader = make_loader(train_set, per_rank_batch, train=True, num_workers=cfg.data.num_workers,
                                 sampler=sampler, seed=seg)
            batches = iter(loader)
            _reseed(seg)  # after iter(): creating the iterator draws from the RNG
            bar = _bar(steps_per_epoch, start_step, f"epoch {epoch + 1}/{tc.epochs}", info.is_main and tc.progress)
            t0 = time.time()
            for step in range(start_step, steps_per_epoch):
                clips, labels, n_skipped = next(batches)
                acc[4] += int(n_skipped)
                empty = clips is None or len(labels) == 0
                if info.distributed:  # every rank must take the same branch
                    empty = bool(D.all_reduce_sum(torch.tensor([float(empty)], device=dev)).item())
                if not empty:
                    x, y = clips.to(dev, non_blocking=True), labels.to(dev, non_blocking=True).long()
                    with amp_context(dev, tc.amp):
                        logits = model(x)
                    loss = F.cross_entropy(logits.float(), y)
                    # ---- 7. guard: a NaN/inf loss stops the run; checkpoint_last is untouched
                    bad = (~torch.isfinite(loss.detach())).float().reshape(1)
                    if info.distributed:
                        D.all_reduce_sum(bad)
                    if bad.item() > 0:
                        raise NonFiniteLossError(
                            f"non-finite loss ({loss.item()}) at epoch {epoch + 1} step {step + 1}: run stopped. "
                            f"The last good checkpoint is {out / ckpt.LAST} "
                            f"(epoch {history[-1]['epoch'] if history else 0}); lower --lr, use --amp none or "
                            f"check the data, then --resume.")
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    if tc.clip_grad > 0:
                        scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(params, tc.clip_grad)
                    scaler.step(optimizer)
                    scaler.update()
                    n = len(y)
                    c1, c5 = topk_correct(logits.detach().float(), y)
                    acc[:4] += torch.tensor([loss.item() * n, c1, c5, n], dtype=torch.float64)
                    bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2g}", refresh=False)
                with warnings.catch_warnings():  # fp16: GradScaler may skip a step; expected
                    warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
                    scheduler.step()  # per iteration, so warm-up and cosine are smooth
                bar.update(1)
                nxt = step + 1
                if tc.checkpoint_every_steps > 0 and nxt % tc.checkpoint_every_steps == 0 and nxt < steps_per_epoch:
                    # mid-epoch checkpoint: global sums so far, then a fresh random segment
                    sums = D.all_reduce_sum(acc.clone().to(dev)).cpu()
                    if info.is_main:
                        mid = {"step": nxt, "sums": sums.tolist(), "train_time_s": t_train + time.time() - t0}
                        ckpt.atomic_save(_state(raw, optimizer, scheduler, scaler, cfg, classes, epoch, history,
                                                best_top1, mid), out / ckpt.LAST)
                    if info.rank != 0:
                        acc.zero_()  # rank 0 now carries the global sums
                    else:
                        acc.copy_(sums)
                    _reseed(_segment_seed(tc.seed, epoch, nxt, info.rank))
            bar.close()
            t_train += time.time() - t0

            # ---- 8. end of epoch: metrics over all ranks, validation (1 clip, centre crop)
            sums = D.all_reduce_sum(acc.to(dev)).cpu()
            loss_sum, c1, c5, n_seen, skipped = sums.tolist()
            t_val = time.time()
            val = run_eval(raw, val_loader, dev, num_classes, tc.amp, progress=info.is_main and tc.progress,
                           desc="val")
            t_val = time.time() - t_val
            row = {
                "epoch": epoch + 1,
                "train_loss": loss_sum / max(n_seen, 1), "train_top1": c1 / max(n_seen, 1),
                "train_top5": c5 / max(n_seen, 1),
                "val_loss": val["loss"], "val_top1": val["top1"], "val_top5": val["top5"],
                "val_mean_class_acc": val["mean_class_acc"],
                "lr": lr_now,  # base lr (multiplier 1 group) at the epoch's first step
                "clips_per_s": n_seen / max(t_train, 1e-9),
                "epoch_time_s": t_train + t_val, "wall_time_s": wall_before + (time.time() - t_process),
                "skipped": int(skipped + val["skipped"]),
            }
            is_best = row["val_top1"] > best_top1
            best_top1 = max(best_top1, row["val_top1"])
            row["best_val_top1"] = best_top1
            history.append(row)
            # ---- 9. checkpoints: best first, then last, so a kill in between loses nothing
            if info.is_main:
                st = _state(raw, optimizer, scheduler, scaler, cfg, classes, epoch + 1, history, best_top1, None)
                if is_best:
                    ckpt.atomic_save(st, out / ckpt.BEST)
                ckpt.atomic_save(st, out / ckpt.LAST)
                _write_metrics(out, history)
                if tb is not None:
                    for k, v in row.items():
                        if k != "epoch" and isinstance(v, (int, float)) and math.isfinite(v):
                            tb.add_scalar(k, v, epoch + 1)
                    tb.flush()
                log(f"epoch {epoch + 1}/{tc.epochs}  loss {row['train_loss']:.4f}  train top-1 {row['train_top1']:.3f}  "
                    f"val top-1 {row['val_top1']:.3f} top-5 {row['val_top5']:.3f}  lr {row['lr']:.3g}  "
                    f"{row['clips_per_s']:.1f} clips/s  {t_train:.1f}s" + ("  *best" if is_best else ""), flush=True)
            D.barrier()
        session["status"] = "finished"
        if tb is not None:
            tb.close()
        return out
    except NonFiniteLossError:
        session["status"] = "stopped: non-finite loss"
        raise
    except BaseException as e:
        session["status"] = f"failed: {type(e).__name__}: {e}"[:500]
        raise
    finally:
        session["end"] = _now()
        session["seconds"] = round(time.time() - t_process, 3)
        if started and info.is_main and out.is_dir():
            _write_provenance(out, cfg, session, info)
        torch.use_deterministic_algorithms(was_deterministic)  # leave the process as we found it
        torch.backends.cudnn.benchmark = was_benchmark
        D.cleanup()


# ---- helpers (small, one job each) -------------------------------------------------------

def _segment_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    """The seed of the stretch of training that starts at (epoch, step) on this rank."""
    return (((seed * 1_000_003 + epoch) * 100_003 + step) * 1009 + rank) % 2**63


def _reseed(seed: int) -> None:
    """Global RNGs: dropout and anything else drawing from torch / numpy / random."""
    ckpt.seed_everything(seed)


class SampleSeeded(torch.utils.data.Dataset):
    """Reseeds the dataset's augmentation RNG from (seed, epoch, clip index) before each clip.

    Why: a clip's frames, crop and flip then do not depend on which rank or loader worker
    loads it, nor on where a run was resumed; a DDP run sees exactly the clips of the
    single-process run, and a resumed epoch repeats the interrupted one, workers or not.
    Set `.epoch` before building each epoch's loader (workers get a copy at start-up).
    """

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        if hasattr(self.dataset, "reseed"):
            self.dataset.reseed(((self.seed * 1_000_003 + self.epoch) * 10_000_019 + int(i)) % 2**63)
        return self.dataset[i]

    def __getattr__(self, name):  # num_classes, classes, samples, item_shape, ...
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


def _resolve_classes(requested: int, train_set, val_set) -> int:
    """num_classes 0 = take the dataset's; a different non-zero value is an error now, before the
    first step, rather than a cryptic CUDA assert or a silently wrong fc later."""
    n = int(train_set.num_classes)
    if int(val_set.num_classes) != n:
        raise ValueError(f"train split has {n} classes but val split has {val_set.num_classes}")
    if requested and requested != n:
        raise ValueError(f"class-count mismatch: the model is configured for {requested} classes "
                         f"(--num-classes / model.num_classes) but the dataset has {n}; pass --num-classes {n} "
                         "or 0 (take it from the dataset)")
    return n


def _check_same_run(cfg: Config, state: dict, log) -> None:
    """A resumed run must be the same experiment: model and data settings must match."""
    saved = Config.from_dict(state["config"])
    now = cfg.to_dict()
    diffs = []
    for section, ignore in (("model", {"num_classes", "pretrained"}), ("data", {"num_workers", "data_root", "proxy_cache", "decoder", "flow_root"})):
        for k, v in getattr(saved, section).__dict__.items():
            if k in ignore:
                continue
            if _norm(now[section][k]) != _norm(v):
                diffs.append(f"{section}.{k}: checkpoint {v!r}, now {now[section][k]!r}")
    if cfg.model.num_classes and cfg.model.num_classes != saved.model.num_classes:
        diffs.append(f"model.num_classes: checkpoint {saved.model.num_classes}, now {cfg.model.num_classes}")
    if diffs:
        raise ValueError("cannot resume: the configuration differs from the checkpoint's: " + "; ".join(diffs))
    for k, v in saved.train.__dict__.items():
        if k not in ("resume", "epochs", "device", "out") and _norm(getattr(cfg.train, k)) != _norm(v):
            log(f"warning: resuming with train.{k}={getattr(cfg.train, k)!r} (checkpoint: {v!r})")


def _norm(v):
    return list(v) if isinstance(v, tuple) else v


def _state(raw, optimizer, scheduler, scaler, cfg, classes, epoch, history, best_top1, partial) -> dict:
    """Everything a resume needs, as tensors and plain data (weights_only loadable)."""
    return {
        "format": 1, "epoch": epoch, "model": raw.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler_state(scheduler), "scaler": scaler.state_dict() if scaler.is_enabled() else {},
        "rng": ckpt.rng_state(), "config": _plain(cfg.to_dict()), "classes": list(classes),
        "num_classes": cfg.model.num_classes, "history": [dict(r) for r in history],
        "best_top1": best_top1, "partial": partial,
    }


def _plain(d):
    if isinstance(d, dict):
        return {k: _plain(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_plain(v) for v in d]
    return d


def _yaml(d: dict) -> str:
    import yaml

    return yaml.safe_dump(_plain(d), sort_keys=False)


def _write_metrics(out: Path, history: list[dict]) -> None:
    """metrics.csv and metrics.jsonl, rewritten whole from the checkpointed history (so a resumed
    run never shows a duplicated or missing epoch)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, extrasaction="ignore")
    w.writeheader()
    for r in history:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    ckpt.atomic_write_text(out / "metrics.csv", buf.getvalue())
    from stm_lib.engine.evaluate import dumps_line

    ckpt.atomic_write_text(out / "metrics.jsonl", "".join(dumps_line(r) + "\n" for r in history))


def _write_provenance(out: Path, cfg: Config, session: dict, info: D.DistInfo) -> None:
    """run.json: what ran, where, from which commit; one entry per session (fresh or resumed)."""
    import json

    path = out / "run.json"
    prev = {}
    if path.exists():
        try:
            prev = json.loads(path.read_text())
        except ValueError:
            prev = {}
    sessions = prev.get("sessions", []) + [session]
    tc = cfg.train
    run = {
        "git": _git(),
        "seed": tc.seed,
        "command": sessions[0]["command"],
        "effective_lr": effective_lr(tc.lr, tc.batch_size, tc.lr_scale),
        "fc_lr_mult": resolve_fc_lr_mult(tc.fc_lr_mult, cfg.model.pretrained),
        "variant": resolved_variant(cfg.model),
        "global_batch": tc.batch_size,
        "world_size": info.world_size,
        "hardware": _hardware(info),
        "versions": _versions(),
        "status": session["status"],
        "wall_time_s": round(sum(s.get("seconds", 0.0) for s in sessions), 3),
        "sessions": sessions,
    }
    ckpt.atomic_write_json(path, run)


def _git() -> dict:
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def _hardware(info: D.DistInfo) -> dict:
    hw = {"host": platform.node(), "platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
          "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": str(info.device)}
    if torch.cuda.is_available():
        hw["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return hw


def _versions() -> dict:
    v = {"python": platform.python_version(), "torch": torch.__version__}
    try:
        import torchvision

        v["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    import stm_lib

    v["stm_lib"] = stm_lib.__version__
    return v


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except (ImportError, ModuleNotFoundError):
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _bar(total: int, initial: int, desc: str, enabled: bool):
    from tqdm import tqdm

    # disable=None: tqdm turns itself off when stderr is not a terminal (logs, CI)
    return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True,
                disable=None if enabled else True)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
