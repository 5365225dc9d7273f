"""Temporal modules from the related seed papers that plug into the same bottleneck.

- STSM (spatio-temporal shift): `temporal.TemporalShift(spatial_fold_div=...)`, no code here.
- STH (spatio-temporal hybrid convolution): `STHConv`, replacing the block's 3x3 conv.
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
