"""Temporal modules from the related seed papers that plug into the same bottleneck.

- STSM (spatio-temporal shift): `temporal.TemporalShift(spatial_fold_div=...)`, no code here.
- STH (spatio-temporal hybrid convolution): `STHConv`, replacing the block's 3x3 conv.
- Spatiotemporal ResNets (Feichtenhofer et al., NIPS 2016): `TemporalConv`, a block's 1x1 conv1
  turned into a 1x1x3 temporal conv initialised as a temporal average; the two-stream network
  with motion -> appearance residual connections is `resnet.SpatiotemporalResNet`.
The fractions are *open* in the seeds (abstracts only); they are constructor parameters and the
book documents the choices.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from stm_lib.models.temporal import _compiling, _layout, _split_time, _use_fast


class STHConv(nn.Module):
    """STH-Conv: one conv layer whose input channels are split into groups; a share
    `temporal_share` of them gets temporal (3x1x1) kernels and the rest spatial (1x3x3) kernels,
    interleaved along the channel axis, all summed into every output channel. Parameters:
    out*in*(9*(1-r) + 3*r), i.e. 6r/9 fewer than the 3x3 conv it replaces.

    Two forwards with the same outputs, as the modules of `temporal.py`: `reference_forward` and
    `fast_forward` (the default; `fast = False` or tracing takes the reference).
    """
    fast = True

    def __init__(self, in_ch: int, out_ch: int, stride: int, frames: int, temporal_share: float = 0.25):
        super().__init__()
        self.frames, self.stride = frames, stride
        n_t = max(1, round(in_ch * temporal_share))
        # Interleave: every k-th input channel is temporal (k = 1/r), so both kinds see all groups.
        step = max(1, round(1 / temporal_share))
        t_idx = torch.arange(0, in_ch, step)[:n_t]
        mask = torch.zeros(in_ch, dtype=torch.bool)
        mask[t_idx] = True
        self.register_buffer("t_idx", t_idx, persistent=False)
        self.register_buffer("s_idx", torch.arange(in_ch)[~mask], persistent=False)
        self.spatial = nn.Conv2d(len(self.s_idx), out_ch, 3, stride=stride, padding=1, bias=False)
        self.temporal = nn.Conv3d(len(t_idx), out_ch, (3, 1, 1), stride=(1, stride, stride),
                                  padding=(1, 0, 0), bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fast_forward(x) if _use_fast(self) else self.reference_forward(x)

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.spatial(x.index_select(1, self.s_idx))
        xt = _split_time(x.index_select(1, self.t_idx), self.frames).transpose(1, 2)   # N,C,T,H,W
        yt = self.temporal(xt).transpose(1, 2)
        return out + yt.reshape(out.shape)

    def fast_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The same convs. Two passes fewer: the channel split's backward writes each gradient
        element once (two `index_select` backwards zero-fill a full-size gradient each, scatter
        into it and add the two), and the temporal output is added through its (N, T, C, H, W)
        view instead of being copied to the spatial output's layout first. The split keeps the
        input's memory format (index_select returns NCHW)."""
        if _compiling():          # no in-place writes under torch.compile (temporal.py, "for torch.compile")
            fmt = _layout(x)
            xs, xt = (x.index_select(1, i).contiguous(memory_format=fmt) for i in (self.s_idx, self.t_idx))
        else:
            xs, xt = _SplitChannels.apply(x, self.s_idx, self.t_idx)
        out = self.spatial(xs)
        yt = self.temporal(_split_time(xt, self.frames).transpose(1, 2)).transpose(1, 2)   # N,T,C,H,W
        return (_split_time(out, self.frames) + yt).flatten(0, 1)


def _pick(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """`x.index_select(1, idx)` in x's memory format."""
    out = torch.empty(x.shape[0], len(idx), *x.shape[2:], dtype=x.dtype, device=x.device, memory_format=_layout(x))
    return torch.index_select(x, 1, idx, out=out)


class _SplitChannels(torch.autograd.Function):
    """x -> (x[:, a], x[:, b]) for index sets a, b that partition x's channels; backward writes
    both gradients into one fresh tensor (each element once)."""

    @staticmethod
    def forward(x, a, b):
        return _pick(x, a), _pick(x, b)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, a, b = inputs
        ctx.save_for_backward(a, b)
        ctx.shape, ctx.fmt = x.shape, _layout(x)

    @staticmethod
    def backward(ctx, ga, gb):
        a, b = ctx.saved_tensors
        like = ga if ga is not None else gb
        g = torch.empty(ctx.shape, dtype=like.dtype, device=like.device, memory_format=ctx.fmt)
        g.index_copy_(1, a, ga if ga is not None else like.new_zeros(()).expand(g.shape[0], len(a), *g.shape[2:]))
        g.index_copy_(1, b, gb if gb is not None else like.new_zeros(()).expand(g.shape[0], len(b), *g.shape[2:]))
        return g, None, None


class TemporalConv(nn.Conv3d):
    """ST-ResNet's temporal filter: the residual unit's 1x1 "dimensionality mapping" conv becomes
    a 1x1x3 conv over time (zero padded), on the backbone's `(N*T, C, H, W)` layout. The weight
    keeps the 1x1 conv's name with shape (out, in, 3, 1, 1), so ImageNet's 1x1 weight W is
    inflated to [W/3, W/3, W/3] (`inflate_`): at init the unit sees the temporal average of its
    three neighbouring frames (the seed's init; [0, W, 0], the identity, is a later variant).
    """

    def __init__(self, in_ch: int, out_ch: int, frames: int):
        super().__init__(in_ch, out_ch, (3, 1, 1), padding=(1, 0, 0), bias=False)
        self.frames = frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(_split_time(x, self.frames).transpose(1, 2))   # N,C,T,H,W
        return y.transpose(1, 2).reshape(x.shape[0], -1, *y.shape[3:])

    @torch.no_grad()
    def inflate_(self, w2d: torch.Tensor) -> None:
        """Set the kernel to the temporal average of a 1x1 weight `w2d` (out, in, 1, 1)."""
        k = self.weight.shape[2]
        self.weight.copy_(w2d.unsqueeze(2).expand_as(self.weight) / k)
