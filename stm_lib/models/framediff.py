"""A frame-difference reference model for calibrating the temporal proxies (issue 10, item 6).

Why: a temporal proxy is calibrated when motion direction is learnable from neighbouring frames
and not from single frames, judged by two models that are not the paper's: TSN (frames alone,
logits averaged) must stay near chance, and this model must learn it. It is TSN with the RGB
difference input of the TSN paper (Wang et al. 2016, "network inputs"): segment t sees its frame and
the difference to the next sampled frame, `[x_t, x_{t+1} - x_t]` (6 channels), through the same
per-frame ResNet, logits averaged over the T-1 pairs. It has no temporal module, so tuning a
proxy against it never looks at which of CSTM / CMM / STM wins.

Run it as any registry model, at the proxy setting next to TSN:
    stm train --dataset proxy-temporal --model tsn-diff --frames 8 --input-size 64 --width-mult 0.25 \
        --epochs 8 --batch-size 16 --lr 0.02 --out runs/calibration/tsn-diff   (and --model tsn)
"""
from __future__ import annotations

import torch

from stm_lib.models.resnet import PLAIN, STAGES, VideoResNet, check_input


class FrameDifferenceTSN(VideoResNet):
    """`(N, T, 3, H, W)` -> `(N, classes)`; a 6-channel plain ResNet over T-1 (frame, difference)
    pairs. `in_channels` stays 3: what the data must give."""

    def __init__(self, frames: int, num_classes: int, width_mult: float = 1.0, dropout: float = 0.5):
        if frames < 2:
            raise ValueError(f"the frame-difference model needs frames >= 2, got {frames}")
        specs = [[PLAIN] * n for n, _, _ in STAGES]
        super().__init__(specs, frames - 1, num_classes, width_mult, dropout, in_channels=6)
        self.frames, self.in_channels = frames, 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, 3, None)
        if x.shape[1] < 2:
            raise ValueError(f"the frame-difference model needs T >= 2 frames, got T={x.shape[1]}")
        x = torch.cat([x[:, :-1], x[:, 1:] - x[:, :-1]], dim=2)  # (N, T-1, 6, H, W)
        n, t = x.shape[:2]
        logits = self.fc(self.dropout(self.features(x.flatten(0, 1))))
        return logits.view(n, t, -1).mean(dim=1)  # TSN consensus over the pairs
