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
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from stm_lib import provenance as P
from stm_lib.config import COMPILE_MODES, Config, plain
from stm_lib.engine import checkpoint as ckpt
from stm_lib.io import atomic_write_json, atomic_write_text
from stm_lib.engine import distributed as D
from stm_lib.engine.evaluate import amp_context, run_eval, topk_correct
from stm_lib.engine.optim import (build_optimizer, build_scheduler, effective_lr, load_scheduler_state,
                                  resolve_fc_lr_mult, scheduler_state, unwrap)
from stm_lib.models.registry import resolved_variant

METRIC_FIELDS = ["epoch", "train_loss", "train_top1", "train_top5", "val_loss", "val_top1", "val_top5",
                 "val_mean_class_acc", "lr", "clips_per_s", "epoch_time_s", "wall_time_s", "skipped",
                 "best_val_top1"]


RESUME_KEYS = ("model", "optimizer", "scheduler", "rng", "config", "epoch", "history", "best_top1")


class DataFailureError(ValueError):
    """Too many clips of an epoch failed to load: the run stops rather than "succeed" on nothing."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the run stops and keeps its last good checkpoint."""


def train(cfg: Config, command: str | None = None) -> Path:
    """Train `cfg` and return the run folder (cfg.train.out). See the module docstring."""
    tc = cfg.train
    info = D.setup(tc.device)
    dev, log = info.device, (print if info.is_main else (lambda *a, **k: None))
    out = Path(tc.out)
    command = command or P.command_line()
    t_process = time.time()
    session = {"id": f"{P.now()}-{os.getpid()}", "start": P.now(), "command": command,
               "world_size": info.world_size, "status": "running", "git": P.git_state()}
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
        for name, v in (("--input-size", cfg.data.input_size), ("--frames", cfg.model.frames),
                        ("--batch-size", tc.batch_size), ("--epochs", tc.epochs)):
            if v <= 0:
                raise ValueError(f"{name} must be positive, got {v}")
        if tc.compile_mode not in COMPILE_MODES:
            raise ValueError(f"--compile-mode must be one of {', '.join(COMPILE_MODES)}, got {tc.compile_mode!r}")
        if not 0 <= tc.max_skipped <= 1:
            raise ValueError(f"--max-skipped is a share of clips between 0 and 1, got {tc.max_skipped:g}")

        # ---- 1. an existing run: resume it or refuse to overwrite it --------------------
        state = None
        if (out / ckpt.LAST).exists():
            if not tc.resume:
                raise ValueError(f"{out} already holds a run ({ckpt.LAST}); pass --resume to continue it "
                                 "or choose another --out")
            state = ckpt.load(out / ckpt.LAST, need=RESUME_KEYS)
            _check_same_run(cfg, state, log, out / ckpt.LAST)
            session["resumed_from_epoch"] = int(state["epoch"])
            if state.get("partial"):
                session["resumed_from_step"] = int(state["partial"]["step"])
        last_saved = None if state is None else _where(state)  # what checkpoint_last.pt holds

        # ---- 2. data; the class count is settled before any model exists ----------------
        from stm_lib.data import build_dataset, make_loader
        from stm_lib.models import build_model, to_channels_last

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
            to_channels_last(model)  # 4-D and 5-D weights (Module.to refuses CSTM's 5-D Conv3d)
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
        start_epoch, history, best_top1, partial, lr_changes = 0, [], -1.0, None, []
        if state is not None:
            path = out / ckpt.LAST
            ckpt.restore(raw, state["model"], path)
            ckpt.restore(optimizer, state["optimizer"], path, "optimiser state")
            ckpt.restore(_SchedulerLoader(scheduler), state["scheduler"], path, "schedule state")
            if state.get("scaler"):
                ckpt.restore(scaler, state["scaler"], path, "gradient scaler state")
            try:
                ckpt.set_rng_state(state["rng"])  # then reseeded at the boundary we restart from
            except (KeyError, TypeError, ValueError, RuntimeError) as e:
                raise ckpt.CheckpointError(f"{path}: its RNG state is not a stm RNG state ({e})"[:400]) from None
            start_epoch, history = int(state["epoch"]), list(state["history"])
            best_top1, partial = float(state["best_top1"]), state.get("partial")
            lr_changes = list(state.get("lr_changes") or [])
            log(f"resuming {out} at epoch {start_epoch + 1}" + (f" step {partial['step']}" if partial else ""))
            old_lr = _saved_lr(state, path)
            if not math.isclose(old_lr, lr, rel_tol=1e-9, abs_tol=0.0):
                # a new --lr on resume is applied, not just printed: the restored optimiser and
                # schedule are rescaled, and the change is kept in the checkpoint and run.json
                _rescale_lr(optimizer, scheduler, lr / old_lr)
                change = {"epoch": start_epoch + 1, "step": int(partial["step"]) if partial else 0,
                          "from": old_lr, "to": lr, "at": P.now()}
                lr_changes.append(change)
                session["lr_change"] = change
                log(f"lr changed on resume: {old_lr:g} -> {lr:g} from epoch {change['epoch']} step "
                    f"{change['step'] + 1} on (recorded in run.json and the checkpoint)")
        started = True
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            for p in ckpt.clean_stale_tmp(out):  # left by a write that a SIGKILL interrupted
                log(f"removed {p.name} (an interrupted write)")
            atomic_write_text(out / "config.yaml", cfg.to_yaml())
            with open(out / "command.txt", "a") as f:
                f.write(f"# {P.now()}  world_size={info.world_size}\n{command}\n")
        if state is None and info.is_main:
            _write_metrics(out, [])
        if info.is_main:
            _write_provenance(out, cfg, _tick(session, t_process), info)  # this start is on record now

        model = raw
        if info.distributed:
            model = torch.nn.parallel.DistributedDataParallel(
                raw, device_ids=[dev.index] if dev.type == "cuda" else None)
        if tc.compile:
            model = torch.compile(model, mode=None if tc.compile_mode == "default" else tc.compile_mode)
        tb = _tensorboard(out) if (tc.tensorboard and info.is_main) else None
        step_log = os.environ.get(STEP_LOG_ENV) if info.is_main else None
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
                t_wait = time.perf_counter()
                clips, labels, n_skipped = next(batches)
                t_ready = time.perf_counter()
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
                        raise NonFiniteLossError(_stopped(f"loss ({loss.item()})", epoch, step, out, last_saved, lr))
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    gnorm = None
                    if tc.clip_grad > 0:
                        scaler.unscale_(optimizer)
                        gnorm = torch.nn.utils.clip_grad_norm_(params, tc.clip_grad)
                    elif not scaler.is_enabled():
                        gnorm = torch.nn.utils.clip_grad_norm_(params, float("inf"))  # the norm only
                    # fp16: an inf gradient is the GradScaler's business (it skips the step)
                    if gnorm is not None and not scaler.is_enabled() and not torch.isfinite(gnorm):
                        raise NonFiniteLossError(_stopped(f"gradient norm ({gnorm.item()})", epoch, step,
                                                          out, last_saved, lr))
                    scaler.step(optimizer)
                    scaler.update()
                    n = len(y)
                    c1, c5 = topk_correct(logits.detach().float(), y)
                    acc[:4] += torch.tensor([loss.item() * n, c1, c5, n], dtype=torch.float64)
                    bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2g}", refresh=False)
                    if step_log:
                        _log_step(step_log, epoch, step, steps_per_epoch, loss.item(), n, t_ready - t_wait,
                                  time.perf_counter() - t_ready, optimizer.param_groups[0]["lr"], dev)
                with warnings.catch_warnings():  # fp16: GradScaler may skip a step; expected
                    warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
                    scheduler.step()  # per iteration, so warm-up and cosine are smooth
                bar.update(1)
                nxt = step + 1
                if tc.checkpoint_every_steps > 0 and nxt % tc.checkpoint_every_steps == 0 and nxt < steps_per_epoch:
                    # mid-epoch checkpoint: global sums so far, then a fresh random segment
                    sums = D.all_reduce_sum(acc.clone().to(dev)).cpu()
                    _check_skipped("training", epoch, int(sums[4]), int(sums[3]), tc.max_skipped)
                    _check_finite(raw, optimizer, dev, info, epoch, nxt - 1, out, last_saved, lr)
                    if info.is_main:
                        mid = {"step": nxt, "sums": sums.tolist(), "train_time_s": t_train + time.time() - t0}
                        ckpt.atomic_save(_state(raw, optimizer, scheduler, scaler, cfg, classes, epoch, history,
                                                best_top1, mid, lr_changes), out / ckpt.LAST)
                        _write_provenance(out, cfg, _tick(session, t_process), info)
                    last_saved = f"epoch {epoch + 1} step {nxt}, mid-epoch"
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
            _check_skipped("training", epoch, int(skipped), int(n_seen), tc.max_skipped)
            t_val = time.time()
            val = run_eval(raw, val_loader, dev, num_classes, tc.amp, progress=info.is_main and tc.progress,
                           desc="val")
            t_val = time.time() - t_val
            _check_skipped("validation", epoch, int(val["skipped"]), int(val["n"]), tc.max_skipped)
            if not math.isfinite(val["loss"]):  # n == 0 was caught above; NaN weights give NaN scores
                raise NonFiniteLossError(_stopped(f"validation loss ({val['loss']})", epoch, steps_per_epoch - 1,
                                                  out, last_saved, lr))
            _check_finite(raw, optimizer, dev, info, epoch, steps_per_epoch - 1, out, last_saved, lr)
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
                st = _state(raw, optimizer, scheduler, scaler, cfg, classes, epoch + 1, history, best_top1, None,
                            lr_changes)
                if is_best:
                    ckpt.atomic_save(st, out / ckpt.BEST)
                ckpt.atomic_save(st, out / ckpt.LAST)
                _write_metrics(out, history)
                _write_provenance(out, cfg, _tick(session, t_process), info)
                if tb is not None:
                    for k, v in row.items():
                        if k != "epoch" and isinstance(v, (int, float)) and math.isfinite(v):
                            tb.add_scalar(k, v, epoch + 1)
                    tb.flush()
                log(f"epoch {epoch + 1}/{tc.epochs}  loss {row['train_loss']:.4f}  train top-1 {row['train_top1']:.3f}  "
                    f"val top-1 {row['val_top1']:.3f} top-5 {row['val_top5']:.3f}  lr {row['lr']:.3g}  "
                    f"{row['clips_per_s']:.1f} clips/s  {t_train:.1f}s  skipped {row['skipped']}"
                    + ("  *best" if is_best else ""), flush=True)
            last_saved = f"end of epoch {epoch + 1}"
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
        session["end"] = P.now()
        session["seconds"] = round(time.time() - t_process, 3)
        if started and info.is_main and out.is_dir():
            try:
                _write_provenance(out, cfg, session, info)
            except OSError:   # a full disk fails this write too: report the error that stopped the run
                if session.get("status") == "finished":
                    raise
        torch.use_deterministic_algorithms(was_deterministic)  # leave the process as we found it
        torch.backends.cudnn.benchmark = was_benchmark
        D.cleanup()


# ---- helpers (small, one job each) -------------------------------------------------------

STEP_LOG_ENV = "STM_STEP_LOG"
"""Set to a file path, rank 0 appends one JSON line per training step to it: epoch, step, global
step, loss, clips, loader_wait_s (time blocked waiting for the batch), step_s (from the batch's
arrival to the loss on the host: transfer, forward, backward, optimiser step), lr, and on CUDA
max_memory_allocated. For speed runs (tools/gpu_speed_job.py); the loss is already read on the
host every step, so this adds no synchronisation."""


def _log_step(path: str, epoch: int, step: int, steps_per_epoch: int, loss: float, clips: int, wait: float,
              step_s: float, lr: float, dev: torch.device) -> None:
    import json

    row = {"epoch": epoch + 1, "step": step + 1, "global_step": epoch * steps_per_epoch + step + 1, "loss": loss,
           "clips": clips, "loader_wait_s": round(wait, 6), "step_s": round(step_s, 6), "lr": lr}
    if dev.type == "cuda":
        row["max_memory_allocated"] = torch.cuda.max_memory_allocated(dev)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


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


def _check_same_run(cfg: Config, state: dict, log, path: Path) -> None:
    """A resumed run must be the same experiment: model and data settings must match."""
    saved = ckpt.config_of(state, path)
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
    # the optimiser state restores these, so a new value would be printed but not used: refuse
    fixed = [f"train.{k}: checkpoint {getattr(saved.train, k)!r}, now {getattr(cfg.train, k)!r}"
             for k in ("batch_size", "momentum", "weight_decay", "fc_lr_mult")
             if _norm(getattr(cfg.train, k)) != _norm(getattr(saved.train, k))]
    if fixed:
        raise ValueError("cannot resume with a changed optimiser setting (the checkpoint's optimiser state "
                         "would keep the old one): " + "; ".join(fixed) + "; start a new --out instead")
    for k, v in saved.train.__dict__.items():  # applied as given (lr: see _rescale_lr)
        if k in ("resume", "epochs", "device", "out", "lr", "lr_scale"):
            continue
        if _norm(getattr(cfg.train, k)) != _norm(v):
            log(f"warning: resuming with train.{k}={getattr(cfg.train, k)!r} (checkpoint: {v!r})")


class _SchedulerLoader:
    """Gives `ckpt.restore` a `load_state_dict` for our plain-data scheduler state."""

    def __init__(self, sched):
        self.sched = sched

    def load_state_dict(self, sd):
        load_scheduler_state(self.sched, sd)


def _check_skipped(what: str, epoch: int, skipped: int, ok: int, max_share: float) -> None:
    """An epoch with no readable clip, or with more than `max_share` of them failing, stops the
    run before anything is saved: the skip-and-count loader must not hide a broken dataset."""
    total = skipped + ok
    hint = "the 'skipping clip' warnings above name them; `stm data check` lists every bad clip"
    if ok == 0:
        raise DataFailureError(f"epoch {epoch + 1}: no {what} clip could be read ({skipped} of {total} failed); "
                               f"this epoch was not saved; {hint}")
    if skipped > max_share * total:
        raise DataFailureError(f"epoch {epoch + 1}: {skipped} of {total} {what} clips ({100 * skipped / total:.0f}%) "
                               f"failed to load, more than --max-skipped {max_share:g}; this epoch was not saved; "
                               f"{hint}")


def _where(state: dict) -> str:
    p = state.get("partial")
    return f"epoch {int(state['epoch']) + 1} step {p['step']}, mid-epoch" if p else f"end of epoch {state['epoch']}"


def _stopped(what: str, epoch: int, step: int, out: Path, last_saved: str | None, lr: float) -> str:
    """The one message of the NaN/inf guard: where, what was kept, what to do."""
    kept = (f"The last good checkpoint is {out / ckpt.LAST} ({last_saved}; every tensor finite)" if last_saved
            else "No checkpoint was written")
    return (f"non-finite {what} at epoch {epoch + 1} step {step + 1}: run stopped before writing anything. "
            f"{kept}; lower --lr (now {lr:g}), use --amp none or check the data, then --resume "
            f"(a new --lr is applied on resume).")


def _poisoned(raw, optimizer) -> list[str]:
    """Names of the model / optimiser tensors holding NaN or inf (what a checkpoint would save)."""
    bad = [f"model.{k}" for k, v in raw.state_dict().items()
           if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    for i, st in optimizer.state_dict()["state"].items():
        bad += [f"optimizer.state.{i}.{k}" for k, v in st.items()
                if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    return bad


def _check_finite(raw, optimizer, dev, info, epoch, step, out, last_saved, lr) -> None:
    """Refuse to save a checkpoint with a non-finite tensor (all ranks agree, so none hangs)."""
    bad = _poisoned(raw, optimizer)
    n = torch.tensor([float(len(bad))], device=dev)
    if info.distributed:
        D.all_reduce_sum(n)
    if n.item() > 0:
        first = f": {', '.join(bad[:3])}" if bad else " (on another rank)"
        raise NonFiniteLossError(_stopped(f"weights ({int(n.item())} tensors{first})", epoch, step, out,
                                          last_saved, lr))


def _saved_lr(state: dict, path: Path) -> float:
    """The effective lr the checkpointed run used (its config, with any earlier change on resume)."""
    changes = state.get("lr_changes") or []
    if changes:
        return float(changes[-1]["to"])
    t = ckpt.config_of(state, path).train
    return effective_lr(t.lr, t.batch_size, t.lr_scale)


def _rescale_lr(optimizer, scheduler, ratio: float) -> None:
    """Multiply the restored base and current lr of every group (their multipliers stay)."""
    for g in optimizer.param_groups:
        g["lr"] *= ratio
        if "initial_lr" in g:
            g["initial_lr"] *= ratio
    scheduler.base_lrs = [b * ratio for b in scheduler.base_lrs]
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]


def _tick(session: dict, t_process: float) -> dict:
    """The session entry with its time so far: run.json is rewritten at every checkpoint, so a
    session killed later (SIGKILL skips `finally`) is still listed with the time it ran."""
    session["seconds"] = round(time.time() - t_process, 3)
    session["last_update"] = P.now()
    return session


def _norm(v):
    return list(v) if isinstance(v, tuple) else v


def _state(raw, optimizer, scheduler, scaler, cfg, classes, epoch, history, best_top1, partial, lr_changes) -> dict:
    """Everything a resume needs, as tensors and plain data (weights_only loadable)."""
    return {
        "format": 1, "epoch": epoch, "model": raw.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler_state(scheduler), "scaler": scaler.state_dict() if scaler.is_enabled() else {},
        "rng": ckpt.rng_state(), "config": plain(cfg.to_dict()), "classes": list(classes),
        "num_classes": cfg.model.num_classes, "history": [dict(r) for r in history],
        "best_top1": best_top1, "partial": partial, "lr_changes": [dict(c) for c in lr_changes],
    }


def _write_metrics(out: Path, history: list[dict]) -> None:
    """metrics.csv and metrics.jsonl, rewritten whole from the checkpointed history (so a resumed
    run never shows a duplicated or missing epoch)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, extrasaction="ignore")
    w.writeheader()
    for r in history:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(out / "metrics.csv", buf.getvalue())
    from stm_lib.engine.evaluate import dumps_line

    atomic_write_text(out / "metrics.jsonl", "".join(dumps_line(r) + "\n" for r in history))


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
    sessions = [s for s in prev.get("sessions", []) if s.get("id") != session["id"]]
    for s in sessions:  # a session still "running" that is not this one was killed (no finally)
        if s.get("status") == "running":
            s["status"] = ("killed (no clean exit; seconds counted to its last run.json update, "
                           "written at every checkpoint)")
    sessions.append(dict(session))
    tc = cfg.train
    run = {
        "git": session.get("git") or P.git_state(),
        "seed": tc.seed,
        "command": sessions[0]["command"],
        "effective_lr": effective_lr(tc.lr, tc.batch_size, tc.lr_scale),
        "fc_lr_mult": resolve_fc_lr_mult(tc.fc_lr_mult, cfg.model.pretrained),
        "variant": resolved_variant(cfg.model),
        "global_batch": tc.batch_size,
        "world_size": info.world_size,
        "hardware": P.hardware(str(info.device)),
        "versions": P.versions(),
        "status": session["status"],
        "wall_time_s": round(sum(s.get("seconds", 0.0) for s in sessions), 3),
        "sessions": sessions,
    }
    atomic_write_json(path, run)


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


