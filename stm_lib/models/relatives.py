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

from stm_lib.models.temporal import _split_time


class STHConv(nn.Module):
    """STH-Conv: one conv layer whose input channels are split into groups; a share
    `temporal_share` of them gets temporal (3x1x1) kernels and the rest spatial (1x3x3) kernels,
    interleaved along the channel axis, all summed into every output channel. Parameters:
    out*in*(9*(1-r) + 3*r), i.e. 6r/9 fewer than the 3x3 conv it replaces.
    """

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
        out = self.spatial(x.index_select(1, self.s_idx))
        xt = _split_time(x.index_select(1, self.t_idx), self.frames).transpose(1, 2)   # N,C,T,H,W
        yt = self.temporal(xt).transpose(1, 2)
        return out + yt.reshape(out.shape)


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
