"""Figure 1 of the paper: an STM block's feature maps on a real video, next to TV-L1 optical flow.

Rows: the sampled frames; the input of the conv2_1 block (`layer1.0`); the CSTM output (the
channel-wise temporal conv followed by the block's 3x3 conv, BN, ReLU: Fig. 2a); the CMM output
(Eq. 2, restored to C channels); TV-L1 flow between the same sampled frames. Each map is the mean
over channels of the absolute activation, one colour scale per row.

The paper used ImageNet-initialised STM trained on Something-Something. Offline, the weights are
(in this order): a torchvision ResNet-50 state dict if `pretrained` names one; else the STM
trained by a proxy run found in runs/; else the initialised network. The page says which.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

CLIP = Path(__file__).resolve().parents[2] / "book" / "assets" / "bikes_clip.mp4"


def find_proxy_stm(runs: str | Path = "runs") -> Path | None:
    """The run folder (with weights) of an STM trained at proxy scale by `make reproduce`: the
    first seed of Table 5's STM row in the run cache that converged by the book's rule (else the
    first with weights), else an older layout's train/ folder."""
    from stm_lib.book.result import Result, SchemaError

    found = []
    for table in ("table5", "table6", "table7", "table1"):
        res = Path(runs) / table / "proxy" / "results.json"
        try:
            result = Result.load(res)
        except (FileNotFoundError, SchemaError):
            continue
        for row in result.rows:
            if row.model == "stm" and row.id in ("stm", "stm-8"):
                found += [r for r in row.runs
                          if r.cache and (Path(runs) / "_cache" / r.cache / "checkpoint_last.pt").exists()]
    if found:
        best = next((r for r in found if r.converged), found[0])
        return Path(runs) / "_cache" / best.cache
    for table in ("table5", "table6", "table7", "table1"):
        for rid in ("stm", "stm-8"):
            d = Path(runs) / table / "proxy" / "train" / rid
            if (d / "checkpoint_last.pt").exists():
                return d
    return None


def load_weights(frames: int, pretrained: str | None = None, runs: str | Path = "runs", device: str = "cpu"):
    """(STM model in eval mode, a sentence saying which weights it carries, a short kind:
    "ImageNet", "proxy-trained" or "initialised")."""
    from stm_lib.config import ModelConfig
    from stm_lib.models import build_model
    from stm_lib.engine.distributed import resolve_device

    device = resolve_device(device)
    if pretrained:
        model = build_model(ModelConfig(name="stm", frames=frames, num_classes=1000, pretrained=pretrained))
        return model.eval().to(device), (f"ImageNet ResNet-50 weights from `{pretrained}` "
                                         f"({model.load_report.summary()}); temporal modules at their init"), "ImageNet"
    run = find_proxy_stm(runs)
    if run is not None:
        from stm_lib.engine.evaluate import load_run

        model, cfg, _, state = load_run(run, "last", device)
        if cfg.model.frames != frames:   # the temporal modules are frame-count agnostic; rebuild for T
            m2 = build_model(ModelConfig(name="stm", frames=frames, num_classes=cfg.model.num_classes,
                                         width_mult=cfg.model.width_mult))
            m2.load_state_dict(model.state_dict())
            model = m2.eval().to(device)
        acc = ""
        ev = run / "eval_val_1x1.json"
        if ev.is_file():
            import json

            e = json.loads(ev.read_text())
            acc = (f", validation top-1 {100 * e['top1']:.1f}% on its {cfg.data.proxy_classes}-class proxy, chance "
                   f"{100 / cfg.data.proxy_classes:.0f}%")
        from stm_lib.book import stats
        from stm_lib.book.runner import read_metrics
        from stm_lib.models import describe_widths

        val = [100 * h["val_top1"] for h in read_metrics(run) if h.get("val_top1") is not None]
        acc += (", converged by the book's rule" if stats.converged(val) else
                ", **not** converged by the book's rule (no converged STM run was found)")
        cmm = describe_widths(cfg.model)[0]["cmm_channels"]
        return model, (f"the STM trained at **proxy** scale by `{run}` (width x{cfg.model.width_mult}, CMM with "
                       f"{cmm} channels in the block shown, "
                       f"{cfg.data.input_size} px synthetic clips, epoch {state.get('epoch')}{acc}): it never saw a "
                       "natural image, so its maps show what its filters respond to, not ImageNet features"), \
            "proxy-trained"
    model = build_model(ModelConfig(name="stm", frames=frames, num_classes=174))
    return model.eval().to(device), ("the **initialised** STM (no training: neither ImageNet weights nor a proxy "
                                     "run were available); CSTM starts as a 1/4+1/4 temporal shift and CMM "
                                     "with random filters, so the maps show the architecture, not learning"), \
        "initialised"


@torch.no_grad()
def block_features(model, clip: torch.Tensor) -> dict[str, np.ndarray]:
    """`clip` (1, T, 3, S, S) -> maps (T, H, W) of the conv2_1 input, CSTM output, CMM output."""
    captured = {}
    blk = model.layer1[0]
    def keep_input(module, inp, out):   # returns None: a forward hook's return value would replace `out`
        captured["x"] = inp[0].clone()   # clone: the block's in-place ReLU must not change what we keep

    h = blk.register_forward_hook(keep_input)
    model(clip.to(next(model.parameters()).device))
    h.remove()
    x = captured["x"]
    out = blk.relu(blk.bn1(blk.conv1(x)))
    cstm = blk.relu(blk.bn2(blk.conv2(blk.cstm(out))))
    cmm = blk.cmm(out)
    return {name: t.abs().mean(1).cpu().numpy() for name, t in (("input", x), ("cstm", cstm), ("cmm", cmm))}


def display_frames(clip: torch.Tensor) -> np.ndarray:
    """Undo the ImageNet normalisation: (1, T, 3, S, S) -> uint8 (T, S, S, 3)."""
    from stm_lib.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = (clip[0] * std + mean).clamp(0, 1)
    return (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def tvl1_flows(frames: np.ndarray, max_side: int = 160) -> tuple[list[np.ndarray], float]:
    """TV-L1 flow (OpenCV contrib) between consecutive sampled frames: T-1 fields (h, w, 2), computed
    at most `max_side` px wide (flow vectors in those pixels; TV-L1 costs ~1-10 s per 224 px pair
    on a CPU, so keep it small), and the seconds per pair."""
    from stm_lib.data.flow import tvl1

    t0 = time.time()
    flows = list(tvl1(frames, max_side))
    return flows, (time.time() - t0) / max(1, len(flows))


def flow_image(flow: np.ndarray, max_mag: float) -> np.ndarray:
    """The usual colour coding: hue = direction, brightness = magnitude."""
    import cv2

    mag, ang = cv2.cartToPolar(flow[..., 0], flow[..., 1])
    hsv = np.zeros(flow.shape[:2] + (3,), np.uint8)
    hsv[..., 0] = (ang * 90 / np.pi).astype(np.uint8)
    hsv[..., 1] = 255
    hsv[..., 2] = np.clip(mag / max(max_mag, 1e-6) * 255, 0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


MOVING_PX = 2.0   # a pair "moves" when a tenth of its pixels move at least this far (px at the flow's size)


def moving_pairs(flows: list[np.ndarray]) -> list[bool]:
    """Which frame pairs carry motion: the 90th percentile of the flow magnitude >= MOVING_PX. A
    still pair has no flow to resemble, so its correlation would only measure noise."""
    return [float(np.percentile(np.linalg.norm(f, axis=-1), 90)) >= MOVING_PX for f in flows]


def flow_similarity(maps: dict[str, np.ndarray], flows: list[np.ndarray]) -> dict[str, float]:
    """Pearson correlation, per moving frame pair (`moving_pairs`) then averaged, between each
    feature map (resized to the flow's size) and the flow magnitude: does CMM look more like flow
    than CSTM does?"""
    import cv2

    moving = moving_pairs(flows)
    out = {}
    for name, m in maps.items():
        cs = []
        for t, f in enumerate(flows):
            if not moving[t]:
                continue
            mag = np.linalg.norm(f, axis=-1)
            a = cv2.resize(m[t].astype(np.float32), mag.shape[::-1], interpolation=cv2.INTER_LINEAR)
            if a.std() > 0 and mag.std() > 0:
                cs.append(float(np.corrcoef(a.ravel(), mag.ravel())[0, 1]))
        out[name] = float(np.mean(cs)) if cs else float("nan")
    return out


def plot(frames: np.ndarray, maps: dict[str, np.ndarray], flows: list[np.ndarray], title: str):
    import matplotlib.pyplot as plt

    t = len(frames)
    rows = [("input frames", None), ("conv2_1 input", "input"), ("CSTM output", "cstm"), ("CMM output", "cmm"),
            ("TV-L1 flow", "flow")]
    fig, axes = plt.subplots(len(rows), t, figsize=(1.6 * t, 1.7 * len(rows)))
    max_mag = max(float(np.percentile(np.linalg.norm(f, axis=-1), 99)) for f in flows) if flows else 1.0
    for i, (label, key) in enumerate(rows):
        if key in maps:
            lo, hi = np.percentile(maps[key], 1), np.percentile(maps[key], 99)
        for j in range(t):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if key is None:
                ax.imshow(frames[j])
            elif key == "flow":
                if j < len(flows):
                    ax.imshow(flow_image(flows[j], max_mag))
                else:
                    ax.imshow(np.zeros_like(frames[j]))
            else:
                ax.imshow(maps[key][j], cmap="inferno", vmin=lo, vmax=hi)
            if j == 0:
                ax.set_ylabel(label, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def save_figure(fig, out_dir: str | Path) -> None:
    import matplotlib.pyplot as plt

    d = Path(out_dir) / "figures"
    d.mkdir(parents=True, exist_ok=True)
    fig.savefig(d / "figure1.png", dpi=80, bbox_inches="tight")   # ~0.6 MB: it is committed
    plt.show()
    plt.close(fig)


NAMES = {"input": "conv2_1 input", "cstm": "CSTM output", "cmm": "CMM output"}


def commentary(sim: dict[str, float], kind: str):
    """What the correlations say, worded from the numbers."""
    from IPython.display import Markdown

    order = sorted(sim, key=lambda k: -sim[k])
    text = ", ".join(f"{NAMES[k]} r = {sim[k]:.3f}" for k in order) + "."
    if sim["cmm"] > max(sim["cstm"], sim["input"]):
        verdict = ("CMM's maps are the closest of the three to the TV-L1 flow magnitude, in line with the "
                   "paper's description.")
    else:
        verdict = (f"CMM's maps are **not** the closest to the flow magnitude here ({NAMES[order[0]]} is), "
                   "unlike the paper's description.")
    why = {"proxy-trained": " The weights come from a proxy run on synthetic 64 px clips, not from "
                            "Something-Something with ImageNet initialisation, so the filters were never asked to "
                            "find motion in natural video; treat this as a check of the machinery.",
           "initialised": " The network is untrained: any likeness to flow comes from the architecture "
                          "(CMM subtracts neighbouring frames by construction), not from learning.",
           "ImageNet": " The backbone carries ImageNet weights but CSTM and CMM are at their initialisation "
                       "(no video training)."}[kind]
    return Markdown(f"Correlation with the flow magnitude: {text} {verdict}{why}")


def result(sim: dict[str, float], profile: str, kind: str, weights: str, frames: int, size: int,
           seconds_per_pair: float, flows: list[np.ndarray] | None = None):
    """The page's Result: one row per feature map, its correlation with the flow magnitude."""
    import math

    from stm_lib.book.result import Result, Row
    from stm_lib.book.tables import TABLES

    t = TABLES["figure1"]
    rows = [Row(k, NAMES[k], "stm", frames, profile, f"{kind} weights", run_frames=frames,
                seeds={"corr_with_flow": [v]} if math.isfinite(v) else {}) for k, v in sim.items()]
    settings = {"profile": profile, "frames": frames, "input_size": size, "weights": weights, "weights_kind": kind,
                "clip": "book/assets/bikes_clip.mp4", "tvl1_seconds_per_pair": round(seconds_per_pair, 3)}
    if flows is not None:   # which pairs moved, so a reader can see what the correlations average over
        settings["moving_rule"] = f"90th percentile of the flow magnitude >= {MOVING_PX:g} px (flow at <= 160 px)"
        settings["pair_flow_p90_px"] = [round(float(np.percentile(np.linalg.norm(f, axis=-1), 90)), 2) for f in flows]
        settings["moving_pairs"] = sum(moving_pairs(flows))
    return Result("figure1", profile, t.title, t.caption or "Feature visualization of STM block (Figure 1).", rows,
                  settings=settings, seeds=[], figures=["figures/figure1.png"])
