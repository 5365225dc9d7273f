"""Procedurally generated proxy datasets, so the pipeline and the book run without a 100 GB
download. Written in the Something-Something v1 layout, so they go through the real reader.

temporal (modelled on Something-Something; version 4, issue 27): every frame is a 2x2 grid of
tiles, each filled with a drifting pattern of the clip's motion kind (stripes of one orientation,
spokes, rings, squares, a spiral) with its own phase, period, speed and colours. The class is the
kind and the direction; class 2k+1 is class 2k played backwards. What moves is visible in one
frame, which way it moves is not (every motion is a shift on a circle from a uniform phase, so
each frame has the same distribution in both twins): a frame-averaging model (TSN) can reach the
twin pair, 50% at best; a model that compares neighbouring frames (TSM, STM) can go further, up to
the share of clips that move at all (`TEMPORAL["still"]`). This is the gap of the paper's Table
5. Calibrated with TSN and the frame-difference reference only (runs/calibration/README.md).
Version 3 (until issue 27) encoded the class in four directions at once, with TSN at chance by
construction: the reference needed ~350 full-lr steps from scratch and a quarter of the runs of
the paper's models never learnt it (bimodal seeds), so no claim could be decided.

scene (modelled on Kinetics / UCF-101): the class is the background (colour and pattern kind)
and is visible in every frame; a randomly moving disc and a drifting pattern are nuisance.

Clip i has label i % classes; `validation_mask` picks a balanced fifth for validation. A proxy is
cached under a key of every parameter that changes its files (`params_of`), and each split is
decoded once into a memory-mapped uint8 array (`DecodedProxy`) that training reads instead of
the JPEGs: the same pixels, no per-epoch decoding (runs/pipeline_bench/README.md).
"""
from __future__ import annotations

import colorsys
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from stm_lib.data.datasets import VideoDataset

KINDS = ("temporal", "scene")
VERSION = 4  # bump when the generator's output changes: it is part of the cache key
# 3: validation split balanced at every size (same clips as 2 when videos is a multiple of 5 x classes)
# 4: graded, not gated (issue 27): the class is one motion kind and its direction (the kind a
#    static cue, the direction not); no motion in a share `still` (a ceiling below 100%)
SCENE_VERSION = 6  # the scene proxy's own: 5 = calibrated difficulty (SCENE, issue 10 item 6)
# 6: the pattern in a drifting window of half the side (SCENE["window"]; issue 27: at version 5, TSN
#    fine-tuned from the shared start reached 96-99%; at 6, 69.1 / 70.1, runs/calibration/README.md)
JPEG_QUALITY = 90  # part of the cache key (params_of): another quality writes other files
FRAMES_DIR = "20bn-something-something-v1"
PREFIX = "something-something-v1"

# --- temporal proxy ------------------------------------------------------------------------

# Motion kinds (version 4): the class is a kind and a direction, class 2k+1 being class 2k played
# backwards. What moves (the kind: stripes of one orientation, spokes, rings...) is visible in a
# single frame, which way it moves is not: a frame-averaging model can narrow a clip down to its
# twin pair and no further (at best 50%), as Something-Something's "pushing X left / right" pairs
# let TSN name the object but not the action.
KINDS_T = ("horizontal", "vertical", "rotation", "rings", "diagonal", "antidiagonal", "squares", "spiral")
WORDS = {  # (played forwards, backwards): the class names
    "horizontal": ("stripes right", "stripes left"), "vertical": ("stripes down", "stripes up"),
    "rotation": ("spokes clockwise", "spokes anticlockwise"), "rings": ("rings growing", "rings shrinking"),
    "diagonal": ("stripes down-right", "stripes up-left"), "antidiagonal": ("stripes down-left", "stripes up-right"),
    "squares": ("squares growing", "squares shrinking"), "spiral": ("spiral out", "spiral in"),
}


# Motion per tile, in tile sides per stored frame (`period`, `speed`) and degrees per frame
# (`omega`): the largest step between sampled frames (3 stored frames under TSN train sampling
# of 16 -> 8) stays below half a period, so directions never alias.
#
# Grading (version 4, issue 27; set by arithmetic before any run, then checked with TSN and the
# frame-difference reference only): the kind caps a frame-averaging model at 50%; a share
# `still` of the clips shows no motion, so even a perfect motion reader is capped near
# (1 - still) + still x 0.5 = 0.90; each clip moves at `pace` (uniform) times the speeds above,
# down to a thirtieth of that (no visible motion), under fresh noise of `noise` grey levels in
# every frame, so reading slow clips takes integrating over frames and space: how much of that a
# model manages grades it. TSN sits far below (the paper's SSv1 shape: TSN 19.7 vs STM 49.2).
# `hint` (a class-coded hue family in that share of the clips) is 0: the kind already gives TSN
# its static cue. Read with the reference: runs/calibration/README.md (issue 27).
TEMPORAL = dict(period=(0.34, 0.44), speed=(0.032, 0.045), omega=(8, 12), hint=0.0, still=0.2, hues=10,
                pace=(0.03, 1.0), noise=12.0)


def temporal_kinds(classes: int) -> list[int]:
    """The motion kind of each class: class 2k and 2k+1 (its time reversal) show kind k."""
    if classes < 2 or classes % 2 or classes > 2 * len(KINDS_T):
        raise ValueError(f"the temporal proxy needs an even number of classes from 2 to "
                         f"{2 * len(KINDS_T)} (time-reversed pairs), got {classes}")
    return [c // 2 for c in range(classes)]


def temporal_class_names(classes: int) -> list[str]:
    return [WORDS[KINDS_T[k]][c % 2] for c, k in enumerate(temporal_kinds(classes))]


def _colours(rng, n, hue: float):
    """n pairs (background, object) of one hue family (`hue` in [0, 1) +- 0.02) with a strong
    light/dark contrast; saturation and values drawn per tile."""
    def rgb(v_lo, v_hi):
        return np.array([colorsys.hsv_to_rgb((hue + rng.uniform(-0.02, 0.02)) % 1, rng.uniform(0.5, 0.9),
                                             rng.uniform(v_lo, v_hi)) for _ in range(n)]) * 255
    dark, light = rgb(0.1, 0.35), rgb(0.7, 1.0)
    swap = rng.random(n) < 0.5
    bg = np.where(swap[:, None], light, dark)
    fg = np.where(swap[:, None], dark, light)
    return bg, fg


def _soft(d):
    """Anti-aliased inside test: distance margin (px) -> coverage in [0, 1]."""
    return np.clip(d + 0.5, 0.0, 1.0)


def _square(phase):
    """A soft square wave of a phase in cycles: high-contrast edges, little aliasing."""
    return 0.5 + 0.5 * np.tanh(3.0 * np.sin(2 * np.pi * phase))


def _tile_pattern(rng, kind: int, f: np.ndarray, t: int, still: bool = False, pace: float = 1.0) -> np.ndarray:
    """A drifting pattern `(F, t, t)` in [0, 1] filling one tile, so every pixel carries the
    motion, played forwards. Each pattern is a shift of its phase at constant speed from a uniform
    start phase, so every frame has the same distribution whichever way it is played. Speeds keep
    the largest step between sampled frames (3 stored frames under TSN train sampling of 16 -> 8)
    below half a period: no aliasing."""
    yy, xx = np.mgrid[0:t, 0:t].astype(np.float32) + 0.5 - t / 2
    f = f[:, None, None] * (0.0 if still else pace)   # a still clip: every frame the first
    start = rng.uniform(0, 1)
    period = t * rng.uniform(*TEMPORAL["period"])
    speed = t * rng.uniform(*TEMPORAL["speed"])      # px per frame; x3 < period / 2
    name = KINDS_T[kind]
    if name in ("rotation", "spiral"):               # 4-cycle spokes / a 4-arm spiral, 8-12 deg a frame
        omega = np.deg2rad(rng.uniform(*TEMPORAL["omega"]))
        arms = 4 * (np.arctan2(yy, xx) - omega * f) / (2 * np.pi)
        return _square(start + arms + (np.hypot(xx, yy) / period if name == "spiral" else 0.0))
    pos = {"horizontal": xx, "vertical": yy, "diagonal": (xx + yy) / np.sqrt(2), "antidiagonal": (yy - xx) / np.sqrt(2),
           "rings": np.hypot(xx, yy), "squares": np.maximum(np.abs(xx), np.abs(yy))}[name]
    return _square(start + (pos - speed * f) / period)


def clip_style(rng: np.random.Generator, label: int) -> tuple[int, bool]:
    """(hue family, still) of one temporal clip: the class's family (label % hues) with probability
    TEMPORAL["hint"], else a uniform draw over the same families; still with probability
    TEMPORAL["still"]. The first draws of the clip's stream."""
    hues = TEMPORAL["hues"]
    family = label % hues if rng.random() < TEMPORAL["hint"] else int(rng.integers(hues))
    return family, bool(rng.random() < TEMPORAL["still"])


def render_temporal(rng: np.random.Generator, kind: int, frames: int, resolution: int, label: int = 0) -> np.ndarray:
    """One clip `(F, R, R, 3)` uint8 of motion kind `kind` played forwards: a 2x2 grid of tiles,
    each its own phase, period, speed and colours of one hue family (`clip_style`), all at the
    clip's pace; still (no motion) with probability TEMPORAL["still"]; noise in every frame."""
    t = resolution // 2
    out = np.empty((frames, 2 * t, 2 * t, 3), np.float32)
    family, still = clip_style(rng, label)
    pace = rng.uniform(*TEMPORAL["pace"])
    bg, fg = _colours(rng, 4, family / TEMPORAL["hues"])
    f = np.arange(frames, dtype=np.float32)
    for tile in range(4):
        m = _tile_pattern(rng, kind, f, t, still, pace)[..., None]
        y, x = divmod(tile, 2)
        out[:, y * t:(y + 1) * t, x * t:(x + 1) * t] = bg[tile] * (1 - m) + fg[tile] * m
    out += rng.normal(0, 4, out.shape[1:]).astype(np.float32)  # static sensor-like noise
    out += rng.normal(0, TEMPORAL["noise"], out.shape).astype(np.float32)  # and fresh noise in every frame
    clip = np.clip(out, 0, 255).astype(np.uint8)
    if clip.shape[1] != resolution:  # odd resolution: pad the last row/column
        clip = np.pad(clip, ((0, 0), (0, resolution - clip.shape[1]), (0, resolution - clip.shape[2]), (0, 0)), mode="edge")
    return clip


# --- scene proxy ---------------------------------------------------------------------------

PATTERN_KINDS = ("h-stripes", "v-stripes", "checks", "dots")
# Difficulty, calibrated with TSN alone (runs/calibration/README.md; version 5: TSN 80.5% at the
# former proxy profile, chance 10%; version 6, below, for the protocol): at version 3 (hue jitter
# +-0.2 class spacings, full-contrast pattern, no noise) every model sat at 100%, so nothing
# could be compared. Now a clip's hue may fall up to `hue_jitter` class spacings from its class's,
# so hue-neighbours overlap and only the pattern kind (which differs between them) separates
# them; the pattern has low contrast (`light`, `dark` values) under per-frame noise (`noise`,
# grey levels), so seeing it takes several frames or a good look at one.
# `window` (a fraction of the side; 0 = the whole frame, as at version 5): the pattern only fills a
# square window that drifts with wrap-around and that the nuisance disc may cover; outside it the
# clip shows its hue at the pattern's mean level (version 6; issue 27's scene recalibration).
SCENE = dict(hue_jitter=0.7, light=0.80, dark=0.55, noise=20.0, window=0.5)


def scene_class_names(classes: int) -> list[str]:
    return [f"{PATTERN_KINDS[c % 4]} hue {360 * c // classes:03d}" for c in range(classes)]


def render_scene(rng: np.random.Generator, label: int, classes: int, frames: int, resolution: int) -> np.ndarray:
    """Class = background hue and pattern kind (in every frame; in a drifting window when
    `SCENE["window"]`); a disc and the pattern's phase drift at random as nuisance motion; hue
    jitter, contrast and noise: `SCENE`."""
    R = resolution
    yy, xx = np.mgrid[0:R, 0:R].astype(np.float32) + 0.5
    f = np.arange(frames, dtype=np.float32)[:, None, None]
    hue = (label + rng.uniform(-SCENE["hue_jitter"], SCENE["hue_jitter"])) / classes
    light = np.array(colorsys.hsv_to_rgb(hue % 1, 0.75, SCENE["light"])) * 255
    dark = np.array(colorsys.hsv_to_rgb(hue % 1, 0.75, SCENE["dark"])) * 255
    period = R * rng.uniform(0.12, 0.2)
    vx, vy = rng.uniform(-1, 1, 2) * R * 0.02
    px, py = xx - vx * f - rng.uniform(0, R), yy - vy * f - rng.uniform(0, R)
    k = label % 4
    if k == 0:
        w = np.sin(2 * np.pi * py / period)
    elif k == 1:
        w = np.sin(2 * np.pi * px / period)
    elif k == 2:
        w = np.sin(np.pi * px / period) * np.sin(np.pi * py / period)
    else:
        w = np.cos(2 * np.pi * px / period) + np.cos(2 * np.pi * py / period) - 1.0
    m = (w > 0).astype(np.float32)
    if SCENE.get("window"):
        side = SCENE["window"] * R
        ox = (rng.uniform(0, R) + rng.uniform(-1, 1) * R * 0.03 * f) % R
        oy = (rng.uniform(0, R) + rng.uniform(-1, 1) * R * 0.03 * f) % R
        inside = (_soft(side / 2 - np.abs((xx - ox + R / 2) % R - R / 2))
                  * _soft(side / 2 - np.abs((yy - oy + R / 2) % R - R / 2)))
        m = inside * m + (1 - inside) * 0.5
    m = m[..., None]
    img = dark * (1 - m) + light * m
    # nuisance: a grey-level disc of random brightness moving at random with wrap-around
    cx = (rng.uniform(0, R) + rng.uniform(-1, 1) * R * 0.06 * f) % R
    cy = (rng.uniform(0, R) + rng.uniform(-1, 1) * R * 0.06 * f) % R
    dx = (xx - cx + R / 2) % R - R / 2
    dy = (yy - cy + R / 2) % R - R / 2
    disc = _soft(R * 0.14 - np.hypot(dx, dy))[..., None]
    img = img * (1 - disc) + rng.uniform(0, 255) * disc
    img = img * rng.uniform(0.85, 1.15)
    if SCENE["noise"]:
        img = img + rng.normal(0, SCENE["noise"], img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


# --- writing the SSv1 layout ----------------------------------------------------------------

# The constant holding each kind's generator version (the scene's was VERSION before SCENE_VERSION
# existed); `stm runs adopt` reads them from an older proxy.py's text
VERSION_NAMES = {"temporal": "VERSION", "scene": "SCENE_VERSION"}


def version(kind: str) -> int:
    """The generator version of a proxy kind ("temporal" or "scene")."""
    return globals()[VERSION_NAMES.get(kind, "VERSION")]


def params_of(kind, videos, classes, frames, resolution, seed, jpeg_quality=None, val_clips: int = 0) -> dict:
    """Everything that determines the files of a proxy: its cache key and `proxy.json`.
    `val_clips` 0 (the default, left out of the key) = a fifth of the clips (`validation_mask`)."""
    q = JPEG_QUALITY if jpeg_quality is None else jpeg_quality
    p = {"kind": kind, "videos": int(videos), "classes": int(classes), "frames": int(frames),
         "resolution": int(resolution), "seed": int(seed),
         "version": version(kind), "jpeg_quality": int(q)}
    if val_clips:
        p["val_clips"] = int(val_clips)
    return p


def validation_mask(videos: int, classes: int, val_clips: int = 0) -> np.ndarray:
    """`(videos,)` bool: which clips form the validation split. Clip i has label i % classes.

    A fifth of the clips, raised to one per class where every class can still keep a training
    clip (70 videos / 16 classes: 16, not 14), spread over classes as evenly as possible:
    per-class counts differ by at most 1, the extra ones on the lowest labels, which also hold
    the extra clips when `videos % classes` is not 0, so training counts differ by at most 1 too.
    Inside class c (its clips k = 0, 1, ... in order) validation takes k = floor((j + 1) * n_c /
    v_c) - 1 for j < v_c: evenly spread, and exactly the old rule "every fifth round of
    classes" (k % 5 == 4) when videos is a multiple of 5 x classes, so those proxies (the
    default 1000 / 10 among them) keep their splits. `val_clips` > 0 asks for that many
    validation clips instead of a fifth (the book's proxies: >= 1,000, a binomial SD <= 1.6
    points; issue 27)."""
    if val_clips and not classes <= val_clips <= videos - classes:
        raise ValueError(f"val_clips must leave every class a training and a validation clip: "
                         f"{classes} <= val_clips <= {videos - classes}, got {val_clips}")
    n_val = val_clips or max(videos // 5, min(classes, videos - classes))
    mask = np.zeros(videos, bool)
    for c in range(classes):
        idx = np.arange(c, videos, classes)  # clips of class c, in order
        v = n_val // classes + (c < n_val % classes)
        if v:
            k = (np.arange(1, v + 1) * len(idx)) // v - 1
            mask[idx[k]] = True
    return mask


def make_proxy(kind: str, out_dir, videos: int = 1000, classes: int = 10, frames: int = 16,
               resolution: int = 64, seed: int = 0, progress: bool = True, jpeg_quality: int | None = None,
               val_clips: int = 0) -> Path:
    """Write a proxy dataset in the SSv1 layout under `out_dir` and return it.

    Deterministic given the arguments (clip i is drawn from `default_rng([seed, i])`). Written
    into a temporary sibling folder and renamed at the end, so an interrupted run never leaves
    a folder that looks complete. An existing folder with the same parameters is reused.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown proxy kind {kind!r}; choose from {KINDS}")
    if videos < classes:
        raise ValueError(f"need at least one video per class (videos={videos}, classes={classes})")
    if frames < 2 or resolution < 16:
        raise ValueError(f"need frames >= 2 and resolution >= 16 (got {frames}, {resolution})")
    names = temporal_class_names(classes) if kind == "temporal" else scene_class_names(classes)
    if kind == "temporal":
        kinds = temporal_kinds(classes)
    params = params_of(kind, videos, classes, frames, resolution, seed, jpeg_quality, val_clips)
    val = validation_mask(videos, classes, val_clips)
    out = Path(out_dir).expanduser()
    if out.exists():
        return _reuse(out, params)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        (tmp / FRAMES_DIR).mkdir(parents=True)
        rows = {"train": [], "validation": []}
        it = range(videos)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc=f"proxy-{kind} -> {out}", unit="clip", mininterval=1.0)
        for i in it:
            label = i % classes
            rng = np.random.default_rng([seed, i])
            if kind == "temporal":
                clip = render_temporal(rng, kinds[label], frames, resolution, label)
                if label % 2:  # the twin class is the same kind of clip played backwards
                    clip = clip[::-1]
            else:
                clip = render_scene(rng, label, classes, frames, resolution)
            vid = str(i + 1)
            d = tmp / FRAMES_DIR / vid
            d.mkdir()
            for j, fr in enumerate(clip):
                Image.fromarray(np.ascontiguousarray(fr)).save(d / f"{j + 1:05d}.jpg", quality=params["jpeg_quality"])
            rows["validation" if val[i] else "train"].append(f"{vid};{names[label]}")
        (tmp / f"{PREFIX}-labels.csv").write_text("\n".join(names) + "\n")
        for split, lines in rows.items():
            (tmp / f"{PREFIX}-{split}.csv").write_text("\n".join(lines) + "\n")
        (tmp / "proxy.json").write_text(json.dumps({**params, "classes_names": names}, indent=1))
        try:
            os.rename(tmp, out)
        except OSError:  # another process finished the same proxy first
            if not (out / "proxy.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            return _reuse(out, params)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _reuse(out: Path, params: dict) -> Path:
    meta = out / "proxy.json"
    if not meta.is_file():
        raise ValueError(f"{out} exists and is not a proxy dataset; choose another output folder")
    old = json.loads(meta.read_text())
    old.setdefault("jpeg_quality", JPEG_QUALITY)  # proxies before version 3 did not record it
    if {k: old.get(k) for k in params} != params:
        raise ValueError(f"{out} holds a proxy with other parameters ({meta}); choose another output folder")
    return out


def cache_dir(cache: str | None = None) -> Path:
    return Path(cache or os.environ.get("STM_PROXY_CACHE") or "~/.cache/stm/proxy").expanduser()


def proxy_path(kind: str, cfg) -> tuple[Path, dict]:
    """Where the proxy of a DataConfig's proxy_* fields lives (generated or not) and its
    parameters: `<proxy_cache>/<kind>-<hash of params_of>` (every parameter that changes the
    files, the generator version and the JPEG quality included)."""
    p = params_of(kind, cfg.proxy_videos, cfg.proxy_classes, cfg.proxy_frames, cfg.proxy_resolution,
                  getattr(cfg, "proxy_seed", 0), getattr(cfg, "proxy_jpeg_quality", None),
                  getattr(cfg, "proxy_val_clips", 0))
    key = hashlib.sha1(json.dumps(p, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir(cfg.proxy_cache) / f"{kind}-{key}", p


def ensure_proxy(kind: str, cfg, progress: bool = True) -> Path:
    """The proxy described by a DataConfig's proxy_* fields (`proxy_path`), generated on first use."""
    out, p = proxy_path(kind, cfg)
    if (out / "proxy.json").is_file():
        return out
    return make_proxy(kind, out, p["videos"], p["classes"], p["frames"], p["resolution"], p["seed"], progress,
                      p["jpeg_quality"], p.get("val_clips", 0))


# --- decoded once: a uint8 array per split, memory-mapped -------------------------------------
# Why: at the proxy setting a clip's JPEG decoding (8 of 16 frames, every epoch) and DataLoader
# worker processes competing with the model for 2 cores cost more than the augmentation itself.
# The array holds exactly what the JPEG reader returns, so a run reads the same pixels and draws
# the same crops either way (same results), only faster. STM_PROXY_ARRAYS=0 turns it off.

ARRAY_FORMAT = 1  # bump when what the array holds changes: part of its key


def digest(root) -> str:
    """sha256 of a proxy's JPEGs (its optical flow left out), in path order: two machines with the
    same digest hold the same data, so a run trained on one stands for the other's (runs/gpu)."""
    root = Path(root)
    files = [p for p in sorted(root.rglob("*.jpg")) if "flow" not in p.relative_to(root).parts]
    if not files:
        raise ValueError(f"{root}: no proxy frames to digest (not generated?)")
    h = hashlib.sha256()
    for p in files:
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def array_key(root: Path, split: str, min_side: int) -> str:
    """Everything that determines the decoded array: the proxy's parameters (its proxy.json,
    which names every parameter that changes the JPEG files), the split, the reader's DCT
    downscale target and the JPEG decoder's version."""
    import PIL

    meta = json.loads((Path(root) / "proxy.json").read_text())
    meta.pop("classes_names", None)
    k = {"proxy": meta, "split": split, "min_side": int(min_side), "pillow": PIL.__version__, "format": ARRAY_FORMAT}
    return hashlib.sha1(json.dumps(k, sort_keys=True).encode()).hexdigest()[:12]


def decoded_array(root, split: str, samples, min_side: int) -> Path:
    """`<root>/decoded/<split>-<key>.npy`: uint8 `(clips, F, H, W, 3)`, row i = samples[i] decoded
    by the frame-folder reader at `min_side`. Written once (to a temporary file, then renamed, so
    a killed run or two runs side by side never leave half an array under the final name)."""
    from stm_lib.data.decode import FrameFolder

    path = Path(root) / "decoded" / f"{split}-{array_key(root, split, min_side)}.npy"
    if path.is_file():
        return path
    first = FrameFolder(samples[0].path, min_side)
    shape = (len(samples), first.num_frames, *first.read([0]).shape[1:])
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        a = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        for i, s in enumerate(samples):
            clip = FrameFolder(s.path, min_side)
            a[i] = clip.read(np.arange(clip.num_frames))  # every proxy clip has F frames of one size
        a.flush()
        del a
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def decode_once(ds, root, split: str):
    """The proxy split `ds` (a VideoDataset) read from its decoded array: the same clips and
    augmentation, no JPEG decoding. Returns `ds` unchanged where the array cannot be used (flow
    input, STM_PROXY_ARRAYS=0, a read-only cache)."""
    if ds.flow_root is not None or os.environ.get("STM_PROXY_ARRAYS", "1") == "0":
        return ds
    try:
        path = decoded_array(root, split, ds.samples, ds.scale_size)
    except OSError:
        return ds
    return DecodedProxy(ds, path)


class DecodedProxy(VideoDataset):
    """A VideoDataset whose frames come from a memory-mapped uint8 array instead of JPEG files.
    `in_memory` tells the loader that worker processes would only compete with the model."""

    in_memory = True

    def __init__(self, base, array_path: Path):
        self.__dict__.update(base.__dict__)
        self.array_path, self._array = Path(array_path), None
        self.row = {s.id: i for i, s in enumerate(self.samples)}

    def __getstate__(self):  # worker processes reopen the map instead of copying it
        return {**self.__dict__, "_array": None}

    def read(self, s, choose):
        if self._array is None:
            self._array = np.load(self.array_path, mmap_mode="r")
        a = self._array[self.row[s.id]]
        s.num_frames = len(a)
        uniq = choose(len(a))
        return np.asarray(a[uniq]), uniq
