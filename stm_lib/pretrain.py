"""The shared start: a ResNet-50 backbone pre-trained once on generated images, the stand-in for
ImageNet at the proxy scale (issue 27, item 1).

Why: the paper fine-tunes every arm from one ImageNet backbone; from random weights, on a few
thousand proxy clips, optimisation luck decided more of a run's top-1 than the modules did (a
quarter of the temporal runs stuck near chance). ImageNet cannot be downloaded here, so the
start is learnt from formula-driven images in the spirit of FractalDB (Kataoka et al., ACCV
2020): each class is an iterated function system (2-4 random contractive affine maps); an image
of a class is its attractor, rendered by the chaos game under a random similarity transform
and random colours over a noisy background. No proxy clip and no motion is ever seen: what it
can teach is edges, orientations and shapes, as ImageNet does.

`stm pretrain --out DIR` writes `DIR/backbone.pth` (a state dict without fc, the format
`ModelConfig.pretrained` reads) and `DIR/pretrain.json` (its SHA-256, the recipe, the accuracy
on fresh images, the provenance). Deterministic given the recipe and the seed on one CPU type.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from stm_lib.data.transforms import IMAGENET_MEAN, IMAGENET_STD

BACKBONE = "backbone.pth"
RECORD = "pretrain.json"


@dataclass(frozen=True)
class Recipe:
    classes: int = 32         # IFS shape classes
    gratings: int = 32        # oriented-grating classes: 8 orientations x (gratings / 8) spatial frequencies
    size: int = 32            # image side (the proxy profile's input size)
    width_mult: float = 0.25  # the proxy profile's width
    steps: int = 1500         # optimiser steps
    batch_size: int = 128
    lr: float = 2e-3          # AdamW, cosine to 0 after a linear warm-up of a tenth (at most 100 steps):
    weight_decay: float = 0.05  # from scratch, SGD left this deep, thin net near chance for hundreds of steps
    points: int = 1500        # chaos-game points per image
    per_class: int = 300      # images per class, rendered once (a fixed dataset, like FractalDB's)
    seed: int = 0


# ---- images ---------------------------------------------------------------------------------

def ifs_classes(classes: int, seed: int) -> list[torch.Tensor]:
    """Per class a `(M, 2, 3)` tensor of M in 2..4 affine maps [A | b], each A with singular
    values in [0.25, 0.8] (contractive, not degenerate), drawn from `seed`."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(classes):
        m = int(torch.randint(2, 5, (1,), generator=g))
        maps = []
        for _ in range(m):
            u, v = (_rotation(torch.rand(1, generator=g) * 2 * math.pi) for _ in range(2))
            s = torch.diag(0.25 + 0.55 * torch.rand(2, generator=g))
            if torch.rand(1, generator=g) < 0.5:
                s[1, 1] = -s[1, 1]   # a reflection
            a = u @ s @ v
            b = (torch.rand(2, generator=g) - 0.5) * 1.0
            maps.append(torch.cat([a, b[:, None]], dim=1))
        out.append(torch.stack(maps))
    return out


def _rotation(theta: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(theta), torch.sin(theta)
    return torch.stack([torch.cat([c, -s]), torch.cat([s, c])])


def render(labels: torch.Tensor, maps: list[torch.Tensor], size: int, points: int, g: torch.Generator) -> torch.Tensor:
    """uint8 `(B, 3, size, size)` images of the classes `labels`."""
    b = len(labels)
    m = max(len(x) for x in maps)
    mats = torch.zeros(b, m, 2, 3)
    count = torch.zeros(b, dtype=torch.long)
    for i, c in enumerate(labels.tolist()):
        mats[i, :len(maps[c])] = maps[c]
        count[i] = len(maps[c])
    # chaos game: every point of every image applies a random map of its class, 12 burn-in steps
    p = torch.rand(b, points, 2, generator=g) - 0.5
    for _ in range(20):
        k = (torch.rand(b, points, generator=g) * count[:, None]).long()
        mk = mats[torch.arange(b)[:, None], k]                              # (B, P, 2, 3)
        p = (mk[..., :2] @ p[..., None]).squeeze(-1) + mk[..., 2]
    # random similarity transform into the frame: centre, fit, rotate, scale, shift
    p = p - p.mean(1, keepdim=True)
    p = p / p.abs().flatten(1).quantile(0.98, dim=1)[:, None, None].clamp_min(1e-3)
    theta = torch.rand(b, generator=g) * 2 * math.pi
    rot = torch.stack([torch.stack([theta.cos(), -theta.sin()], -1), torch.stack([theta.sin(), theta.cos()], -1)], -2)
    scale = 0.25 + 0.2 * torch.rand(b, 1, 1, generator=g)
    shift = (torch.rand(b, 1, 2, generator=g) - 0.5) * 0.3
    p = (p @ rot.transpose(1, 2)) * scale + shift + 0.5                     # in [0, 1] mostly
    # splat at 2x and average down: anti-aliased density, clipped to a mask
    hi = 2 * size
    ij = (p * hi).long()
    ok = ((ij >= 0) & (ij < hi)).all(-1)
    flat = torch.where(ok, ij[..., 1] * hi + ij[..., 0], torch.zeros_like(ij[..., 0]))
    dens = torch.zeros(b, hi * hi).scatter_add_(1, flat, ok.float()).view(b, 1, hi, hi)
    mask = (F.avg_pool2d(dens, 2) * 4).clamp(max=1.0)                      # (B, 1, size, size)
    fg, bg = torch.rand(b, 3, 1, 1, generator=g), torch.rand(b, 3, 1, 1, generator=g)
    img = bg * (1 - mask) + fg * mask + 0.04 * torch.randn(b, 3, size, size, generator=g)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


def render_gratings(labels: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    """uint8 `(B, 3, size, size)` oriented gratings: class c = orientation c % 8 (22.5-degree
    steps, +-5 degrees) and spatial frequency c // 8 (periods from size / 2 down to 3 px), random
    phase, colours, contrast, waveform (sine or square) and noise; in half of them the grating
    fills a random disc or square only (edges at every orientation)."""
    b = len(labels)
    ori = (labels % 8).float() * math.pi / 8 + (torch.rand(b, generator=g) - 0.5) * math.radians(10)
    nf = max(1, int(labels.max()) // 8 + 1)
    periods = torch.logspace(math.log10(size / 2), math.log10(3.0), max(nf, 2))[:nf] if nf > 1 else torch.tensor([size / 4])
    period = periods[labels // 8] * (0.9 + 0.2 * torch.rand(b, generator=g))
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    u = xx[None] * ori.cos()[:, None, None] + yy[None] * ori.sin()[:, None, None]
    w = torch.sin(2 * math.pi * (u / period[:, None, None] + torch.rand(b, 1, 1, generator=g)))
    square = torch.rand(b, 1, 1, generator=g) < 0.5
    w = torch.where(square, torch.tanh(4 * w), w) * 0.5 + 0.5                       # (B, H, W) in [0, 1]
    cx, cy, r = (torch.rand(b, 1, 1, generator=g) * size for _ in range(3))
    disc = ((xx[None] - cx) ** 2 + (yy[None] - cy) ** 2 < (r / 2 + size / 6) ** 2).float()
    box = (((xx[None] - cx).abs() < r / 2 + size / 8) & ((yy[None] - cy).abs() < r / 2 + size / 8)).float()
    region = torch.where(torch.rand(b, 1, 1, generator=g) < 0.5, disc, box)
    whole = torch.rand(b, 1, 1, generator=g) < 0.5
    m = torch.where(whole, torch.ones_like(region), region)
    c1, c2, bg = (torch.rand(b, 3, 1, 1, generator=g) for _ in range(3))
    img = c1 * w[:, None] + c2 * (1 - w[:, None])
    img = img * m[:, None] + bg * (1 - m[:, None]) + 0.04 * torch.randn(b, 3, size, size, generator=g)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


def bank(recipe: Recipe, seed_offset: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed image set: `per_class` uint8 images of every class and their labels (IFS shapes
    are classes 0 .. classes - 1, gratings the next `gratings`)."""
    maps = ifs_classes(recipe.classes, recipe.seed)
    g = torch.Generator().manual_seed(recipe.seed + seed_offset)
    y = torch.arange(recipe.classes + recipe.gratings).repeat(recipe.per_class)
    parts = []
    for i in range(0, len(y), 500):
        yy = y[i:i + 500]
        x = torch.empty(len(yy), 3, recipe.size, recipe.size, dtype=torch.uint8)
        shape = yy < recipe.classes
        if shape.any():
            x[shape] = render(yy[shape], maps, recipe.size, recipe.points, g)
        if (~shape).any():
            x[~shape] = render_gratings(yy[~shape] - recipe.classes, recipe.size, g)
        parts.append(x)
    return torch.cat(parts), y


def normalise(x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
    """uint8 images -> ImageNet-normalised float; with `g`, a random horizontal flip each."""
    x = x.float() / 255
    if g is not None:
        flip = torch.rand(len(x), generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


# ---- training -------------------------------------------------------------------------------

def _model(recipe: Recipe):
    from stm_lib.config import ModelConfig
    from stm_lib.models import build_model

    return build_model(ModelConfig(name="tsn", frames=1, num_classes=recipe.classes + recipe.gratings,
                                   width_mult=recipe.width_mult,
                                   dropout=0.0))


def pretrain(out: str | Path, recipe: Recipe = Recipe(), progress: bool = True) -> dict:
    """Train the start and write `out/backbone.pth` and `out/pretrain.json`; returns the record."""
    from stm_lib import provenance
    from stm_lib.engine.checkpoint import atomic_save
    from stm_lib.io import atomic_write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(recipe.seed)
    t0 = time.time()
    images, labels = bank(recipe)
    if progress:
        print(f"pretrain: {len(images)} images of {recipe.classes} IFS and {recipe.gratings} grating classes rendered "
              f"in {time.time() - t0:.0f} s",
              flush=True)
    g = torch.Generator().manual_seed(recipe.seed + 2)
    model = _model(recipe)
    decay = [p for n, p in model.named_parameters() if p.dim() > 1]
    rest = [p for n, p in model.named_parameters() if p.dim() <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=recipe.lr)
    warm = min(100, recipe.steps // 10)

    def lr_at(step):
        if step < warm:
            return recipe.lr * (step + 1) / warm
        return recipe.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, recipe.steps - warm)))

    start, git, seen, hits, log = provenance.now(), provenance.git_state(), 0, 0, []
    model.train()
    for step in range(recipe.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        idx = torch.randint(len(images), (recipe.batch_size,), generator=g)
        x, y = normalise(images[idx], g), labels[idx]
        logits = model(x[:, None])
        loss = F.cross_entropy(logits, y)
        if not torch.isfinite(loss):
            raise ValueError(f"pretrain: non-finite loss at step {step}; nothing was written")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += len(y)
        hits += int((logits.argmax(1) == y).sum())
        if progress and (step + 1) % 100 == 0:
            el = time.time() - t0
            log.append({"step": step + 1, "loss": round(loss.item(), 4), "train_acc": round(hits / seen, 4)})
            print(f"pretrain step {step + 1}/{recipe.steps}  loss {loss.item():.3f}  train top-1 {hits / seen:.3f}  "
                  f"{el:.0f} s, {el / (step + 1) * (recipe.steps - step - 1):.0f} s left", flush=True)
            seen = hits = 0
    acc = evaluate(model, recipe)
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}
    atomic_save(state, out / BACKBONE)
    rec = {"file": BACKBONE, "sha256": sha256(out / BACKBONE), "recipe": asdict(recipe),
           "heldout_top1": acc, "log": log, "what": "ResNet-50 (width x%g) pre-trained on %d formula-driven (IFS) "
           "image classes: the proxy tables' shared start" % (recipe.width_mult, recipe.classes),
           "provenance": provenance.record(parameters=asdict(recipe), seed=recipe.seed, start=start,
                                           seconds=time.time() - t0, git=git)}
    atomic_write_json(out / RECORD, rec)
    return rec


@torch.no_grad()
def evaluate(model, recipe: Recipe, per_class: int = 20) -> float:
    """Top-1 on fresh images of every class (another generator seed than the training set's)."""
    x, y = bank(Recipe(**{**asdict(recipe), "per_class": per_class}), seed_offset=10_000)
    model.eval()
    hits = sum(int((model(normalise(x[i:i + 250])[:, None]).argmax(1) == y[i:i + 250]).sum())
               for i in range(0, len(x), 250))
    model.train()
    return round(hits / len(x), 4)


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: str | Path) -> str:
    """The path of a start whose SHA-256 matches the `pretrain.json` beside it; one clear error
    otherwise (a start that changed on disk would silently change every table)."""
    path = Path(path)
    rec_path = path.parent / RECORD
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the shared start is missing; build it with `stm pretrain --out {path.parent}`")
    if rec_path.is_file():
        want = json.loads(rec_path.read_text()).get("sha256")
        if want and sha256(path) != want:
            raise ValueError(f"{path}: SHA-256 differs from {rec_path}; rebuild it with `stm pretrain`")
    return str(path)


# ---- CLI ------------------------------------------------------------------------------------

def register(sub) -> None:
    p = sub.add_parser("pretrain", help="build the proxy tables' shared start (ResNet-50 on generated images)",
                       description=__doc__.split("\n\n")[0])
    d = Recipe()
    p.add_argument("--out", required=True, help="folder for backbone.pth and pretrain.json")
    for f in ("classes", "gratings", "size", "width_mult", "steps", "batch_size", "lr", "per_class", "seed"):
        p.add_argument(f"--{f.replace('_', '-')}", type=type(getattr(d, f)), default=getattr(d, f))
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    r = Recipe(**{f: getattr(args, f) for f in ("classes", "gratings", "size", "width_mult", "steps", "batch_size",
                                                "lr", "per_class", "seed")})
    if r.steps < 1 or r.batch_size < 1 or r.classes < 0 or r.gratings < 0 or r.classes + r.gratings < 2 or r.size < 16:
        raise ValueError("--steps and --batch-size must be >= 1, --classes and --gratings >= 0 with two classes "
                         "at least, --size >= 16")
    rec = pretrain(args.out, r)
    print(f"wrote {Path(args.out) / BACKBONE} (sha256 {rec['sha256'][:16]}...), held-out top-1 {rec['heldout_top1']:.3f}")
    return 0
