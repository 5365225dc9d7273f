"""Optimiser parameter groups and the learning-rate schedule of the paper's recipe.

Paper section 4.2: SGD, momentum 0.9, weight decay 5e-4, lr 0.01 both for 8 frames at batch 64
(8 GPUs x 8 clips) and for 16 frames at batch 32 (8 x 4): the paper does not scale the lr with
the batch. x0.1 at epochs 30, 40, 45, stop at 50. From the TSM code base STM builds on: fc
weight lr x5, fc bias lr x10 when an ImageNet backbone is loaded (`resolve_fc_lr_mult`), no
weight decay on BatchNorm parameters and biases. Linear lr scaling, cosine decay and warm-up are
options for other recipes, not the paper's.
"""
from __future__ import annotations

import math

import torch
from torch import nn

PAPER_EPOCHS = 50
PAPER_LR_STEPS = (30, 40, 45)
PAPER_BATCH = 64
PAPER_LR = 0.01


def effective_lr(lr: float, batch_size: int, lr_scale: bool) -> float:
    """The lr actually used. `lr_scale` (a choice for other recipes, not the paper's, which keeps
    0.01 at batch 64 and 32): `lr` is read at batch 64 and scaled linearly with the global batch
    (0.01 at 64 -> 0.0025 at 16); otherwise `lr` is used as is."""
    return lr * batch_size / PAPER_BATCH if lr_scale else lr


def paper_lr_steps(epochs: int) -> tuple[int, ...]:
    """The paper's steps (30, 40, 45 of 50) stretched to another epoch count, e.g. 8 -> (5, 6, 7)."""
    if epochs == PAPER_EPOCHS:
        return PAPER_LR_STEPS
    return tuple(max(1, round(s * epochs / PAPER_EPOCHS)) for s in PAPER_LR_STEPS)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP and torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def resolve_fc_lr_mult(fc_lr_mult: float | None, pretrained: str | None) -> float:
    """The fc lr multiplier used. None (the default): x5 when a backbone is loaded (`pretrained`
    set; TSM's rule for fine-tuning an ImageNet backbone), x1 from scratch, where a x5 (x10 on
    the bias) head only destabilises the start of training."""
    if fc_lr_mult is None:
        return 5.0 if pretrained else 1.0
    if fc_lr_mult <= 0:
        raise ValueError(f"fc_lr_mult must be > 0, got {fc_lr_mult}")
    return float(fc_lr_mult)


def heads(model: nn.Module) -> list[nn.Module]:
    """The classifier layers: the model's own `heads()` (a two-stream model has one per
    stream), else a top-level `fc`."""
    model = unwrap(model)
    if hasattr(model, "heads"):
        return list(model.heads())
    fc = getattr(model, "fc", None)
    return [fc] if isinstance(fc, nn.Module) else []


def param_groups(model: nn.Module, lr: float, weight_decay: float, fc_lr_mult: float = 1.0) -> list[dict]:
    """Five groups (TSM recipe): weights (decay), biases and BN (no decay), fc weight (lr x
    fc_lr_mult, decay), fc bias (lr x 2*fc_lr_mult, no decay); "fc" is every classifier head
    (`heads`). `lr_mult` is kept in each group so that the schedule multiplies the right base."""
    model = unwrap(model)
    fc_ids = {id(p) for h in heads(model) for p in h.parameters()}
    norm_types = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)
    norm_ids = {id(p) for m in model.modules() if isinstance(m, norm_types) for p in m.parameters(recurse=False)}
    groups = {k: [] for k in ("weight", "no_decay", "fc_weight", "fc_bias")}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in fc_ids:
            groups["fc_bias" if p.ndim == 1 else "fc_weight"].append(p)
        elif id(p) in norm_ids or p.ndim <= 1:  # BN affine and every bias
            groups["no_decay"].append(p)
        else:
            groups["weight"].append(p)
    spec = {  # name: (lr multiplier, weight decay)
        "weight": (1.0, weight_decay),
        "no_decay": (1.0, 0.0),
        "fc_weight": (fc_lr_mult, weight_decay),
        "fc_bias": (2 * fc_lr_mult, 0.0),
    }
    return [
        {"params": ps, "name": k, "lr_mult": spec[k][0], "lr": lr * spec[k][0], "weight_decay": spec[k][1]}
        for k, ps in groups.items() if ps
    ]


def build_optimizer(model: nn.Module, lr: float, momentum: float, weight_decay: float,
                    fc_lr_mult: float) -> torch.optim.SGD:
    return torch.optim.SGD(param_groups(model, lr, weight_decay, fc_lr_mult), lr=lr, momentum=momentum)


def lr_factor(progress: float, epochs: int, schedule: str = "step", steps=PAPER_LR_STEPS,
              warmup_epochs: float = 0.0) -> float:
    """Multiplier of the base lr at `progress` epochs (fractional) into training.

    step: 0.1 ** (number of steps <= epoch) (the paper; epochs counted from 0, so the 31st epoch
    is the first at 0.1x); cosine: half cosine from 1 to 0 over the epochs after warm-up. Warm-up
    ramps linearly from 1/(warm-up iterations) to 1 over `warmup_epochs`.
    """
    if warmup_epochs > 0 and progress < warmup_epochs:
        return max(progress / warmup_epochs, 1e-3)
    if schedule == "step":
        epoch = math.floor(progress + 1e-9)
        return 0.1 ** sum(epoch >= s for s in steps)
    if schedule == "cosine":
        span = max(epochs - warmup_epochs, 1e-9)
        t = min(max((progress - warmup_epochs) / span, 0.0), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * t))
    raise ValueError(f"unknown lr schedule '{schedule}' (step | cosine)")


class _Factor:
    """Picklable-free lambda for LambdaLR: iteration -> lr factor (state lives in last_epoch)."""

    def __init__(self, steps_per_epoch: int, epochs: int, schedule: str, steps, warmup_epochs: float):
        self.spe, self.epochs, self.schedule = steps_per_epoch, epochs, schedule
        self.steps, self.warmup = tuple(steps), warmup_epochs

    def __call__(self, it: int) -> float:
        return lr_factor(it / self.spe, self.epochs, self.schedule, self.steps, self.warmup)


def build_scheduler(optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int,
                    schedule: str = "step", steps=PAPER_LR_STEPS, warmup_epochs: float = 0.0):
    """A per-iteration LambdaLR (step it after every optimiser step). Its state_dict holds only
    the iteration count, so a resumed run continues the schedule exactly."""
    lr_factor(0, epochs, schedule, steps, warmup_epochs)  # validate the schedule name early
    f = _Factor(max(1, steps_per_epoch), epochs, schedule, steps, warmup_epochs)
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, [f] * len(optimizer.param_groups))
    return sched


def scheduler_state(sched) -> dict:
    """LambdaLR.state_dict() minus the lambdas (plain data only, loads with weights_only=True)."""
    sd = sched.state_dict()
    sd.pop("lr_lambdas", None)
    return sd


def load_scheduler_state(sched, sd: dict) -> None:
    sd = dict(sd)
    sd["lr_lambdas"] = [None] * len(sched.lr_lambdas)
    sched.load_state_dict(sd)
