"""Spatial transforms of the paper's recipe (section 4.2, TSM code base; notes/implementation-facts.md).

Train: shorter side to `scale_size` (256 for 224 input), multi-scale corner crop with scales
1/.875/.75/.66 (aspect distorted by at most one scale step) at one of 13 fixed positions,
resize to `input_size`, optional horizontal flip (off for Something-Something and Jester,
whose classes include left/right). Test: centre crop, or three `scale_size` crops along the
longer side resized to `input_size`. Then ImageNet mean/std normalisation.

Boxes are computed in the coordinates of the rescaled frame and mapped back to the decoded
frame, so each frame is resized once (crop, then resize), not twice.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SCALES = (1.0, 0.875, 0.75, 0.66)

Box = tuple[int, int, int, int]  # (x0, y0, width, height) in decoded-frame pixels


def default_scale_size(input_size: int, scale_size: int = 0) -> int:
    """Shorter side before cropping; 0 means the paper's ratio 256/224."""
    return int(scale_size) if scale_size else int(round(input_size * 256 / 224))


def fixed_offsets(img_w: int, img_h: int, crop_w: int, crop_h: int) -> list[tuple[int, int]]:
    """The 13 fixed crop positions of TSM's `GroupMultiScaleCrop` (more_fix_crop): 4 corners,
    centre, 4 edge midpoints, 4 quarter points."""
    ws, hs = (img_w - crop_w) // 4, (img_h - crop_h) // 4
    return [
        (0, 0), (4 * ws, 0), (0, 4 * hs), (4 * ws, 4 * hs), (2 * ws, 2 * hs),  # corners, centre
        (0, 2 * hs), (4 * ws, 2 * hs), (2 * ws, 4 * hs), (2 * ws, 0),  # edge midpoints
        (ws, hs), (3 * ws, hs), (ws, 3 * hs), (3 * ws, 3 * hs),  # quarter points
    ]


def multiscale_crop_size(img_w: int, img_h: int, input_size: int, rng: np.random.Generator,
                         scales=SCALES, max_distort: int = 1) -> tuple[int, int]:
    """Crop (w, h) of the rescaled frame: a pair of scales at most `max_distort` steps apart;
    sizes within 3 px of the input size snap to it (TSM)."""
    base = min(img_w, img_h)
    sizes = [int(base * s) for s in scales]
    snap = [input_size if abs(s - input_size) < 3 else s for s in sizes]
    pairs = [(w, h) for i, h in enumerate(snap) for j, w in enumerate(snap) if abs(i - j) <= max_distort]
    return pairs[int(rng.integers(len(pairs)))]


def _scaled(h: int, w: int, scale_size: int) -> tuple[float, int, int]:
    r = scale_size / min(h, w)
    return r, int(round(w * r)), int(round(h * r))


def _to_decoded(box_scaled, r: float, h: int, w: int) -> Box:
    x, y, cw, ch = (v / r for v in box_scaled)
    cw, ch = max(1, min(w, int(round(cw)))), max(1, min(h, int(round(ch))))
    x, y = min(max(0, int(round(x))), w - cw), min(max(0, int(round(y))), h - ch)
    return x, y, cw, ch


def train_box(h: int, w: int, input_size: int, scale_size: int, rng: np.random.Generator) -> Box:
    """A multi-scale corner crop box for a decoded frame of size (h, w)."""
    r, sw, sh = _scaled(h, w, scale_size)
    cw, ch = multiscale_crop_size(sw, sh, input_size, rng)
    offs = fixed_offsets(sw, sh, cw, ch)
    x, y = offs[int(rng.integers(len(offs)))]
    return _to_decoded((x, y, cw, ch), r, h, w)


def center_box(h: int, w: int, input_size: int, scale_size: int) -> Box:
    """Centre `input_size` crop of the frame rescaled to shorter side `scale_size`."""
    r, sw, sh = _scaled(h, w, scale_size)
    c = min(input_size, sw, sh)
    return _to_decoded(((sw - c) // 2, (sh - c) // 2, c, c), r, h, w)


def three_crop_boxes(h: int, w: int, scale_size: int) -> list[Box]:
    """Three square `scale_size` crops along the longer side: start, centre, end (the paper's
    accuracy-table protocol: three 256x256 crops, resized to 224)."""
    r, sw, sh = _scaled(h, w, scale_size)
    c = min(sw, sh)
    if sw >= sh:
        boxes = [(x, 0, c, c) for x in (0, (sw - c) // 2, sw - c)]
    else:
        boxes = [(0, y, c, c) for y in (0, (sh - c) // 2, sh - c)]
    return [_to_decoded(b, r, h, w) for b in boxes]


def test_boxes(h: int, w: int, input_size: int, scale_size: int, crops: int) -> list[Box]:
    if crops == 1:
        return [center_box(h, w, input_size, scale_size)]
    if crops == 3:
        return three_crop_boxes(h, w, scale_size)
    raise ValueError(f"test_crops must be 1 (centre) or 3 (three crops), got {crops}")


# normalisation folded into one multiply-add per channel: (x / 255 - mean) / std
_SCALE = (1.0 / (255.0 * np.array(IMAGENET_STD))).astype(np.float32)
_SHIFT = (np.array(IMAGENET_MEAN) / np.array(IMAGENET_STD)).astype(np.float32)


def crop_resize_u8(frames: np.ndarray, box: Box, size: int, flip: bool = False) -> np.ndarray:
    """uint8 `(T, H, W, C)` -> uint8 `(T, size, size, C)`: crop `box`, resize, optional mirror.

    The resize runs on uint8 in channels-last layout (torch's vectorised antialiased bilinear
    path): ~7x faster than float torch ops on a 2-core machine."""
    x, y, cw, ch = box
    t = torch.from_numpy(np.ascontiguousarray(frames[:, y:y + ch, x:x + cw])).permute(0, 3, 1, 2)
    if (ch, cw) != (size, size):
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    a = t.permute(0, 2, 3, 1).numpy()  # (T, S, S, C) view
    return a[:, :, ::-1] if flip else a


def crop_resize(frames: np.ndarray, box: Box, size: int, flip: bool = False) -> torch.Tensor:
    """uint8 RGB `(T, H, W, 3)` -> ImageNet-normalised float32 `(T, 3, size, size)` (normalised in
    numpy: no intra-op threads competing with the DataLoader workers)."""
    a = crop_resize_u8(frames, box, size, flip)
    out = np.empty((a.shape[0], 3, size, size), np.float32)
    for c in range(3):
        np.multiply(a[..., c], _SCALE[c], out=out[:, c], casting="unsafe")
        out[:, c] -= _SHIFT[c]
    return torch.from_numpy(out)


def scale_box(box: Box, from_hw: tuple[int, int], to_hw: tuple[int, int]) -> Box:
    """The same region in an image of another size (flow fields stored smaller than the frames)."""
    (h0, w0), (h1, w1) = from_hw, to_hw
    x, y, cw, ch = box
    fx, fy = w1 / w0, h1 / h0
    x1, y1 = min(w1 - 1, round(x * fx)), min(h1 - 1, round(y * fy))
    return x1, y1, max(1, min(w1 - x1, round(cw * fx))), max(1, min(h1 - y1, round(ch * fy)))


def flow_crop_resize(stacks: np.ndarray, box: Box, size: int, flip: bool = False) -> torch.Tensor:
    """uint8 flow stacks `(T, h, w, 2L)` (u, v interleaved, 128 = no motion) -> float32
    `(T, 2L, size, size)` in [-1, 1]. A mirrored clip moves the other way: u -> 255 - u.
    (Vectors are not rescaled with the crop, as in TSN's flow stream.)"""
    a = crop_resize_u8(stacks, box, size, flip).astype(np.float32)
    if flip:
        a[..., 0::2] = 255.0 - a[..., 0::2]
    return torch.from_numpy(np.ascontiguousarray(((a - 128.0) / 128.0).transpose(0, 3, 1, 2)))
