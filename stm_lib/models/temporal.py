"""The paper's temporal modules, each working on the backbone's `(N*T, C, H, W)` layout.

- `TemporalShift`: TSM (Lin et al.), 1/8 of channels from t+1 and 1/8 from t-1; `spatial` adds
  the STSM reading (a further share shifted one pixel along H and W, zero cost).
- `CSTM`: Channel-wise SpatioTemporal Module, paper section 3.1, Eq. (1).
- `CMM`: Channel-wise Motion Module, paper section 3.2, Eq. (2).
The STM block that combines CSTM and CMM (section 3.3) lives in `resnet.Bottleneck`.

Each module has two forwards with the same outputs (tests/test_fast_paths.py checks forward and
backward): `reference_forward`, the plain transcription of the equation, and `fast_forward`,
which does only the arithmetic the equation needs on the `(N, T, C, H, W)` *view* (no
transposes, no `cat`, no zero-filled copies) and keeps the input's memory format (channels_last
stays channels_last). `forward` takes the fast one unless `module.fast = False` or the model is
being traced: fvcore's FLOP count traces the reference ops (a Conv3d it can count), so
`stm profile` reports the same FLOPs as before; the fast path does the same multiply-adds.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _split_time(x: torch.Tensor, frames: int) -> torch.Tensor:
    nt, c, h, w = x.shape
    if nt % frames:
        raise ValueError(f"batch*time dimension {nt} is not a multiple of frames={frames}")
    return x.view(nt // frames, frames, c, h, w)


def _use_fast(m: nn.Module) -> bool:
    return m.fast and not torch.jit.is_tracing()


def set_fast(model: nn.Module, fast: bool = True) -> nn.Module:
    """Switch every temporal module of `model` to its fast (True) or reference (False) forward."""
    for m in model.modules():
        if hasattr(m, "reference_forward"):
            m.fast = fast
    return model


def _taps(k: int, t: int):
    """For each off-centre tap i of a temporal kernel of size k over t frames: (i, dst, src) time
    slices such that out[dst] gets tap i of in[src], i.e. frame t reads frame t + i - k//2; the
    slices' ends are the zero padding. Taps reaching past every frame are skipped."""
    for i in range(k):
        d = i - k // 2
        if d and abs(d) < t:
            yield (i, slice(-d, None), slice(None, d)) if d < 0 else (i, slice(None, -d), slice(d, None))


def _conv1x1(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A bias-free 1x1 conv. On a CPU NCHW tensor it runs as one batched matmul over the channel
    axis: oneDNN's 1x1 conv is up to 30x slower there for CMM's few-channel convs (C/16 = 4 in
    conv2_x). Elsewhere (channels_last, CUDA) the conv is already a plain GEMM."""
    if x.device.type != "cpu" or not x.is_contiguous():
        return F.conv2d(x, weight)
    n, c, h, w = x.shape
    w2 = weight.flatten(1)
    return torch.bmm(w2.expand(n, *w2.shape), x.view(n, c, h * w)).view(n, -1, h, w)   # bmm: matmul would copy x


def _max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """`MaxPool2d(2, ceil_mode=True)` as two elementwise maxima of strided views (rows, then
    columns): ~10x faster than PyTorch's CPU max_pool2d on NCHW, and a fusable elementwise op for
    `torch.compile`. Same values; where a 2x2 window holds tied maxima the gradient is shared
    between them (max_pool2d gives it all to the first). Odd sizes use max_pool2d."""
    if x.shape[-2] % 2 or x.shape[-1] % 2:
        return F.max_pool2d(x, 2, ceil_mode=True)
    r = torch.maximum(x[..., 0::2, :], x[..., 1::2, :])
    return torch.maximum(r[..., 0::2], r[..., 1::2])


class TemporalShift(nn.Module):
    """TSM: out[:, t, :f] = x[:, t+1, :f]; out[:, t, f:2f] = x[:, t-1, f:2f]; zero-padded in time.

    `fold_div=8` is TSM's default (1/8 + 1/8). With `spatial_fold_div > 0` (STSM, an *open*
    reading of its abstract) four further shares of C/spatial_fold_div channels are shifted by
    one pixel up, down, left and right, zero-padded at the borders. No parameters, no FLOPs.
    """
    fast = True

    def __init__(self, frames: int, fold_div: int = 8, spatial_fold_div: int = 0):
        super().__init__()
        self.frames, self.fold_div, self.spatial_fold_div = frames, fold_div, spatial_fold_div

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fast_forward(x) if _use_fast(self) else self.reference_forward(x)

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        nt, c, h, w = x.shape
        x5 = _split_time(x, self.frames)
        f = c // self.fold_div
        out = torch.zeros_like(x5)
        out[:, :-1, :f] = x5[:, 1:, :f]                  # from the future
        out[:, 1:, f:2 * f] = x5[:, :-1, f:2 * f]        # from the past
        s = c // self.spatial_fold_div if self.spatial_fold_div else 0
        a = 2 * f
        if s:
            out[:, :, a:a + s, :-1] = x5[:, :, a:a + s, 1:]                    # up
            out[:, :, a + s:a + 2 * s, 1:] = x5[:, :, a + s:a + 2 * s, :-1]    # down
            out[:, :, a + 2 * s:a + 3 * s, :, :-1] = x5[:, :, a + 2 * s:a + 3 * s, :, 1:]  # left
            out[:, :, a + 3 * s:a + 4 * s, :, 1:] = x5[:, :, a + 3 * s:a + 4 * s, :, :-1]  # right
            a += 4 * s
        out[:, :, a:] = x5[:, :, a:]
        return out.view(nt, c, h, w)

    def fast_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Every output element written once: moved values, and zeros only where padding falls
        (the reference zero-fills the whole tensor first)."""
        x5 = _split_time(x, self.frames)
        out = torch.empty_like(x)                        # keeps channels_last
        o5 = _split_time(out, self.frames)
        c = x.shape[1]
        f = c // self.fold_div
        o5[:, :-1, :f] = x5[:, 1:, :f]                   # from the future
        o5[:, -1, :f] = 0
        o5[:, 1:, f:2 * f] = x5[:, :-1, f:2 * f]         # from the past
        o5[:, 0, f:2 * f] = 0
        s = c // self.spatial_fold_div if self.spatial_fold_div else 0
        a = 2 * f
        if s:
            up, down, left, right = (slice(a + i * s, a + (i + 1) * s) for i in range(4))
            o5[:, :, up, :-1] = x5[:, :, up, 1:]
            o5[:, :, up, -1] = 0
            o5[:, :, down, 1:] = x5[:, :, down, :-1]
            o5[:, :, down, 0] = 0
            o5[:, :, left, :, :-1] = x5[:, :, left, :, 1:]
            o5[:, :, left, :, -1] = 0
            o5[:, :, right, :, 1:] = x5[:, :, right, :, :-1]
            o5[:, :, right, :, 0] = 0
            a += 4 * s
        o5[:, :, a:] = x5[:, :, a:]
        return out


class CSTM(nn.Module):
    """Eq. (1): G[c, t] = sum_{i=-1..1} K[c, i] * F[c, t+i], a temporal conv (kernel 3, zero
    padding) on the `NHW x C x T` view. Channel-wise (groups=C) is the paper's choice; `ordinary`
    (groups=1) is the Table 8 ablation. The block's own 3x3 conv follows (section 3.1).

    Init (section 4.2): first C/4 channels [1,0,0], middle C/2 [0,1,0], last C/4 [0,0,1], i.e. at
    init CSTM is a shift of 1/4 of the channels from t-1 and 1/4 from t+1. The ordinary conv gets
    the same kernels on its diagonal (zero elsewhere) so that both variants start identical.

    The weight lives in a (k,1,1) Conv3d (the reference forward, state-dict key `conv.weight`);
    the fast forward reads the same tensor.
    """
    fast = True

    def __init__(self, channels: int, frames: int, channelwise: bool = True, kernel_size: int = 3):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"CSTM kernel_size must be odd (zero padding k//2 keeps T), got {kernel_size}")
        self.frames, self.channelwise = frames, channelwise
        groups = channels if channelwise else 1
        self.conv = nn.Conv3d(channels, channels, (kernel_size, 1, 1), padding=(kernel_size // 2, 0, 0),
                              groups=groups, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        c = self.conv.out_channels
        k = self.conv.kernel_size[0]
        self.conv.weight.zero_()
        q = c // 4
        taps = torch.full((c,), k // 2, dtype=torch.long)
        taps[:q] = 0              # [1, 0, 0]: G[t] = F[t-1]
        taps[c - q:] = k - 1      # [0, 0, 1]: G[t] = F[t+1]
        in_idx = torch.zeros(c, dtype=torch.long) if self.channelwise else torch.arange(c)
        self.conv.weight[torch.arange(c), in_idx, taps, 0, 0] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fast_forward(x) if _use_fast(self) else self.reference_forward(x)

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """A (k,1,1) Conv3d over (N, C, T, H, W): exactly a Conv1d over T on the NHW x C x T view."""
        nt, c, h, w = x.shape
        x5 = _split_time(x, self.frames).transpose(1, 2)          # N, C, T, H, W
        y = self.conv(x5).transpose(1, 2)                          # N, T, C, H, W
        return y.reshape(nt, c, h, w)

    def fast_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Channel-wise: Eq. (1) as a shift-and-scale, G[t] = K[:, mid] * F[t] + sum_i K[:, i] * F[t+i]
        over time-shifted slices of the (N, T, C, H, W) view; the zero padding is the slices' ends.
        Ordinary: one 1x1 conv to k*C channels (tap i's C x C matrix each), then the same shifted sum."""
        k = self.conv.kernel_size[0]
        mid = k // 2
        x5 = _split_time(x, self.frames)
        t = x5.shape[1]
        if self.channelwise:
            wt = self.conv.weight.to(x.dtype).view(-1, k, 1, 1)     # C, k, 1, 1: broadcasts over (C, H, W);
            # the cast keeps bf16 activations bf16 under autocast (the Conv3d would be cast too)
            out = x5 * wt[:, mid]                                  # elementwise: keeps the input's strides
            for i, dst, src in _taps(k, t):
                out[:, dst].addcmul_(x5[:, src], wt[:, i])
            return out.reshape(x.shape)
        c = x.shape[1]
        w2 = self.conv.weight.permute(2, 0, 1, 3, 4).reshape(k * c, c, 1, 1)   # taps stacked on out
        y5 = nn.functional.conv2d(x, w2).view(*x5.shape[:2], k, c, *x.shape[2:])   # N, T, k, C, H, W
        out = torch.empty_like(x)
        o5 = _split_time(out, self.frames)
        o5.copy_(y5[:, :, mid])
        for i, dst, src in _taps(k, t):
            o5[:, dst] += y5[:, src, i]
        return out


class CMM(nn.Module):
    """Eq. (2): H_t = dwconv3x3(F_{t+1}) - F_t on C/r channels, for t = 0..T-2, and a zero frame
    for the last step (section 3.2). Reduce: 1x1 conv C -> C/r + BN (no ReLU); restore: 1x1 conv
    C/r -> C (no BN). In a stride-2 block the restored map is max-pooled 2x2 to match the
    3x3 path (the restore conv runs *before* the pool; that order gives the paper's 33.3G).
    Parameters keep PyTorch's default init ("randomly initialized", section 4.2).
    """
    fast = True

    def __init__(self, channels: int, frames: int, reduction: int = 16, stride: int = 1):
        super().__init__()
        if frames < 2:
            raise ValueError("CMM needs at least 2 frames")
        self.frames = frames
        mid = max(1, channels // reduction)
        self.reduce = nn.Conv2d(channels, mid, 1, bias=False)
        self.bn = nn.BatchNorm2d(mid)
        self.motion = nn.Conv2d(mid, mid, 3, padding=1, groups=mid, bias=False)   # K^c of Eq. (2)
        self.restore = nn.Conv2d(mid, channels, 1, bias=False)
        self.pool = nn.MaxPool2d(2, ceil_mode=True) if stride == 2 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fast_forward(x) if _use_fast(self) else self.reference_forward(x)

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        f = _split_time(self.bn(self.reduce(x)), self.frames)    # N, T, c, H, W
        n, t, c, h, w = f.shape
        nxt = self.motion(f[:, 1:].reshape(n * (t - 1), c, h, w)).view(n, t - 1, c, h, w)
        motion = torch.cat([nxt - f[:, :-1], f.new_zeros(n, 1, c, h, w)], dim=1)   # zero last step
        return self.pool(self.restore(motion.view(n * t, c, h, w)))

    def fast_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The depthwise conv runs on all T frames of the (N*T, c, H, W) tensor in place of a
        copied slice of T-1 (1/T more of a C/r-channel depthwise conv, small next to the copy it
        saves); the difference is written into a preallocated output whose last step is zeroed.
        The 1x1 convs and the 2x2 pool avoid CPU kernels that are slow for these shapes."""
        f = self.bn(_conv1x1(x, self.reduce.weight))            # N*T, c, H, W
        k = _split_time(self.motion(f), self.frames)              # K^c * F_t for every t
        f5 = _split_time(f, self.frames)
        motion = torch.empty_like(f)                              # keeps channels_last
        m5 = _split_time(motion, self.frames)
        m5[:, :-1] = k[:, 1:] - f5[:, :-1]                        # Eq. (2), t = 0..T-2
        m5[:, -1] = 0                                             # zero motion for the last step
        out = _conv1x1(motion, self.restore.weight)
        return _max_pool_2x2(out) if isinstance(self.pool, nn.MaxPool2d) else out
