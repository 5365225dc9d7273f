"""STM's successors, each on the backbone's `(N*T, C, H, W)` layout with T fixed at construction.

- TEA (Li et al., CVPR 2020): `MotionExcitation` (ME, after conv1) and `MTA` (multiple temporal
  aggregation, in place of the 3x3 conv).
- TDN (Wang et al., CVPR 2021): `ShortTermTDM` (S-TDM, a difference stream beside the stem and
  layer1) and `LongTermTDM` (L-TDM, after conv1 in stages 3-5).
- TANet (Liu et al., ICCV 2021): `TAM` (temporal adaptive module, after conv1).
- TIN (Shao et al., AAAI 2020): `TemporalInterlace` (learned fractional shifts, before conv1).

Where they plug in: `resnet.BlockSpec` (`temporal_module`, `conv2="mta"`, `shift="tin"`) and
`resnet.VideoResNet(stem="tdn")`; the registry names are `tea`, `tdn`, `tam`, `tin`. Where the
papers leave a detail open it is settled from the authors' public code and said so in the class
docstring. Paper sections are named by title: their numbers and equation numbers were not checked
against the PDFs here (the formulas quoted for TEA's ME are the paper's). Every module is a plain
transcription; the ops they share with STM use its fast paths (`TemporalDWConv` inherits CSTM's,
the frame differences are `temporal.neighbour_difference`), which fall back to the plain ops
under tracing, so fvcore counts what the paper's formulas compute.

`SUCCESSOR_PAPER` holds each model's published cost, how it was counted, and why our count of
the registry variant differs where it does (tests/test_successors.py pins both).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from stm_lib.models.temporal import CSTM, _compiling, _split_time, neighbour_difference


class TemporalDWConv(CSTM):
    """A channel-wise temporal conv (kernel 3, zero padding): CSTM's Eq. (1) operator with the
    init TEA and TDN give it. `fold_div=0`: identity, kernel [0, 1, 0] on every channel
    (TEA's "fixed" mode). `fold_div=d`: the first C/d channels [0, 0, 1] (frame t reads t+1),
    the next C/d [1, 0, 0] (reads t-1), the rest identity: a TSM shift that can learn (the
    authors' `ShiftModule`, mode "shift"; TEA uses d=2, TDN d=8)."""
    fold_div = 0

    def __init__(self, channels: int, frames: int, fold_div: int = 0):
        super().__init__(channels, frames)
        self.fold_div = fold_div
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        c = self.conv.out_channels
        w = self.conv.weight.view(c, 3)
        w.zero_()
        f = c // self.fold_div if self.fold_div else 0
        w[:f, 2] = 1.0                # from t+1
        w[f:2 * f, 0] = 1.0           # from t-1
        w[2 * f:, 1] = 1.0            # unchanged


def _next_minus_this(f: torch.Tensor, k: torch.Tensor, frames: int) -> torch.Tensor:
    """`k[t+1] - f[t]` for t < T-1 and zero for the last frame, on `(N*T, C, H, W)` tensors
    (CMM's difference op: written once, no `cat` of a zero frame; a `cat` under tracing)."""
    return neighbour_difference(k, f, frames, 1)


def _prev_minus_this(f: torch.Tensor, k: torch.Tensor, frames: int) -> torch.Tensor:
    """`k[t-1] - f[t]` for t > 0 and zero for the first frame."""
    return neighbour_difference(k, f, frames, -1)


class MotionExcitation(nn.Module):
    """TEA's motion excitation (ME), the paper's "Motion Excitation (ME) Module", after conv1 of
    every block:
    X^r = conv_red * X (1x1, C -> C/r, + BN); M(t) = conv_trans * X^r(t+1) - X^r(t) with
    conv_trans a depthwise 3x3 and M(T) = 0; M^s = Pool(M) (global average);
    A = 2 sigmoid(conv_exp * M^s) - 1 (1x1 back to C, + BN); X^o = X + X * A.

    From the authors' code (`ops/tea50_8f.py`, `MEModule`): the attention is `sigmoid - 0.5`,
    i.e. A/2 of the paper's formula (we follow the code); conv_trans runs on all T frames;
    BN follows both 1x1 convs; r = 16; the convs get ResNet's kaiming init (Res2Net's constructor
    visits them). This is STM's CMM difference (Eq. (2) of the STM paper) pooled into a channel
    attention.
    """

    def __init__(self, channels: int, frames: int, reduction: int = 16):
        super().__init__()
        if frames < 2:
            raise ValueError("ME needs at least 2 frames")
        self.frames = frames
        mid = max(1, channels // reduction)
        self.reduce = nn.Conv2d(channels, mid, 1, bias=False)
        self.bn = nn.BatchNorm2d(mid)
        self.trans = nn.Conv2d(mid, mid, 3, padding=1, groups=mid, bias=False)
        self.expand = nn.Conv2d(mid, channels, 1, bias=False)
        self.bn_expand = nn.BatchNorm2d(channels)
        _kaiming(self)

    def motion(self, x: torch.Tensor) -> torch.Tensor:
        """M(t) before pooling, `(N*T, C/r, H, W)`."""
        f = self.bn(self.reduce(x))
        return _next_minus_this(f, self.trans(f), self.frames)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.motion(x).mean(dim=(2, 3), keepdim=True)
        a = torch.sigmoid(self.bn_expand(self.expand(m))) - 0.5
        return x + x * a


class MTA(nn.Module):
    """TEA's multiple temporal aggregation (MTA), the paper's "Multiple Temporal Aggregation (MTA)
    Module", replacing the block's 3x3 conv: the channels split into 4 fragments, each convolved
    fragment passing a channel-wise temporal conv (kernel 3) then a spatial 3x3 conv, the
    fragments chained hierarchically (Res2Net, Gao et al.), one fragment left unconvolved. As the
    authors' code (`Bottle2neckShift`) computes it, with g = C/4:
    Y_1 = relu(bn(conv_spa * (conv_temp * X_1))), Y_i = relu(bn(conv_spa * (conv_temp * (X_i + Y_{i-1}))))
    for i = 2, 3, Y_4 = conv_temp * X_4; output concat(Y_1..Y_4).

    Settled from that code: conv_temp starts as the identity in groups 1-3, and the 4th group's as
    a shift of half its channels each way (`TemporalDWConv(fold_div=2)`); in a stage's first block
    (`first`) the groups are not chained and Y_4 is also average-pooled (3x3, the block's stride),
    as Res2Net's "stage" blocks; the spatial convs carry the block's stride.

    Layout here: the three g -> g kernels are stacked in one weight (3g, g, 3, 3) that keeps the
    block's `conv2.weight` name, and the three groups' BNs are the block's `bn2` over 3g channels,
    applied group by group (BN is per channel, so this is exactly three BNs). That lets an ImageNet
    ResNet-50 initialise MTA: its 3x3 kernel's diagonal g x g blocks and the matching BN entries
    (`resnet._inflate`); the official TEA starts from an ImageNet Res2Net-50 instead.
    """

    def __init__(self, channels: int, frames: int, stride: int = 1, first: bool = False):
        super().__init__()
        if channels % 4:
            raise ValueError(f"MTA splits its channels in 4 groups, got {channels}")
        g = self.group = channels // 4
        self.stride, self.first = stride, first
        self.weight = nn.Parameter(torch.empty(3 * g, g, 3, 3))
        self.temporal = nn.ModuleList([TemporalDWConv(g, frames) for _ in range(3)]
                                      + [TemporalDWConv(g, frames, fold_div=2)])
        self.pool = nn.AvgPool2d(3, stride, padding=1) if first else None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Each g -> g kernel as ResNet's init: kaiming normal, fan_out = g * 9. (The temporal
        convs init themselves.)"""
        nn.init.normal_(self.weight, 0.0, math.sqrt(2.0 / (self.group * 9)))

    def forward(self, x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
        g = self.group
        xs = x.split(g, dim=1)
        outs = []
        for i in range(3):
            s = xs[i] if i == 0 or self.first else xs[i] + outs[-1]
            s = F.conv2d(self.temporal[i](s), self.weight[i * g:(i + 1) * g], stride=self.stride, padding=1)
            outs.append(F.relu(_bn_channels(bn, s, i * g)))
        last = self.temporal[3](xs[3])
        outs.append(last if self.pool is None else self.pool(last))
        return torch.cat(outs, dim=1)


def _bn_channels(bn: nn.BatchNorm2d, x: torch.Tensor, start: int) -> torch.Tensor:
    """`bn` (affine, tracking running statistics) restricted to its channels start ..
    start + x.shape[1], as `nn.BatchNorm2d.forward` computes them; the running statistics of
    those channels are updated in place, `num_batches_tracked` once per forward (at start 0)."""
    sl = slice(start, start + x.shape[1])
    factor = 0.0
    if bn.training:
        if start == 0:
            bn.num_batches_tracked.add_(1)
        factor = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
    return F.batch_norm(x, bn.running_mean[sl], bn.running_var[sl], bn.weight[sl], bn.bias[sl],
                        bn.training, factor, bn.eps)


def _kaiming(module: nn.Module) -> nn.Module:
    """ResNet's init (kaiming normal, fan_out) on every Conv2d of `module`: what the authors'
    ResNet constructors give the modules they build inside a block (TEA, TDN)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return module


class LongTermTDM(nn.Module):
    """TDN's long-term temporal difference module (L-TDM, the paper's "Long-term TDM"), after conv1
    of the blocks of stages 3-5: features reduced to C/16 (1x1 + BN); the differences between
    neighbouring segments, forward D_f(t) = conv(F(t+1)) - F(t) and backward
    D_b(t) = conv(F(t-1)) - F(t) (conv: depthwise 3x3; zero where the neighbour is missing), each
    through a multi-scale module and a 1x1 + BN back to C: A = sigmoid(.) - 0.5;
    out = X + X * (A_f + A_b) / 2.

    Settled from the authors' code (`ops/base_module.py`, `mSEModule`), not checked in the paper:
    the multi-scale module averages three maps, the difference itself, a 3x3 conv + BN of it, and
    a 3x3 conv + BN of its 2x2 average pool upsampled (nearest) back; these layers are shared by
    both directions; the 1x1 back to C runs at full resolution (the attention is per position,
    not per channel only). The released code then applies a channel-wise temporal conv
    initialised as a TSM shift of C/8 + C/8 (`TemporalDWConv(fold_div=8)`); we keep it. Convs get
    ResNet's kaiming init (the authors' `FBResNet` constructor visits them).
    Two departures: the released code feeds the *forward* branch's convolved map into the
    backward branch's full-resolution conv (`y_backward_smallscale4 = ...(y_forward_smallscale4)`),
    which reads as a slip; we give each direction its own difference, at the same cost. Where a
    map is smaller than 2x2 (tiny inputs) the pool is skipped (at 224 px the smallest is 7x7).
    """

    def __init__(self, channels: int, frames: int, reduction: int = 16):
        super().__init__()
        if frames < 2:
            raise ValueError("L-TDM needs at least 2 frames")
        self.frames = frames
        mid = max(1, channels // reduction)
        self.reduce = nn.Conv2d(channels, mid, 1, bias=False)
        self.bn = nn.BatchNorm2d(mid)
        self.trans = nn.Conv2d(mid, mid, 3, padding=1, groups=mid, bias=False)
        self.scale2 = nn.Sequential(nn.Conv2d(mid, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid))
        self.scale1 = nn.Sequential(nn.Conv2d(mid, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid))
        self.expand = nn.Sequential(nn.Conv2d(mid, channels, 1, bias=False), nn.BatchNorm2d(channels))
        self.shift = TemporalDWConv(channels, frames, fold_div=8)
        _kaiming(self)

    def differences(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """D_f and D_b, `(N*T, C/16, H, W)` each."""
        f = self.bn(self.reduce(x))
        k = self.trans(f)
        return _next_minus_this(f, k, self.frames), _prev_minus_this(f, k, self.frames)

    def attention(self, d: torch.Tensor) -> torch.Tensor:
        h, w = d.shape[-2:]
        pooled = F.avg_pool2d(d, 2) if min(h, w) >= 2 else d
        s2 = F.interpolate(self.scale2(pooled), size=(h, w))
        return torch.sigmoid(self.expand((d + s2 + self.scale1(d)) / 3)) - 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d_f, d_b = self.differences(x)
        a = 0.5 * self.attention(d_f) + 0.5 * self.attention(d_b)
        return self.shift(x + x * a)


class ShortTermTDM(nn.Module):
    """TDN's short-term temporal difference module (S-TDM, the paper's "Short-term TDM"): for each frame,
    the RGB differences of the 5 frames around it (4 x 3 = 12 channels), average-pooled 2x2,
    through a 7x7 stride-2 conv + BN + ReLU and a 3x3 max-pool, are fused into the frame's own
    stream after the stem's max-pool; the difference stream then runs through its own copy of
    layer1 (`layer`, plain bottlenecks) and is fused again after layer1. Both fusions upsample the
    difference stream (nearest) to the frame stream's size and mix `alpha * x + (1 - alpha) * d`.

    From the authors' code (`ops/tdn_net.py`): alpha = 0.5 at 8 segments, 0.75 otherwise; the
    7x7 conv is initialised from the RGB mean of ImageNet's conv1, repeated over the 12 channels
    (`VideoResNet.imagenet_copies`), its BN is new; the layer1 copy starts from ImageNet's layer1.
    Departure: the authors' loader samples 5 consecutive raw frames per segment; here the model
    sees the T frames of the clip only, so the 5 frames around frame t are the clip's frames
    t-2..t+2, repeated at the clip's ends (a repeated frame gives a zero difference).
    """

    def __init__(self, frames: int, in_channels: int, stem_channels: int, layer: nn.Module):
        super().__init__()
        self.frames = frames
        self.alpha = 0.5 if frames == 8 else 0.75
        self.conv = nn.Conv2d(4 * in_channels, stem_channels, 7, stride=2, padding=3, bias=False)
        self.bn = nn.BatchNorm2d(stem_channels)
        self.layer1 = layer
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")   # ImageNet replaces it

    def differences(self, x: torch.Tensor) -> torch.Tensor:
        """`(N*T, C, H, W)` frames -> `(N*T, 4C, H, W)`: x[t-1]-x[t-2], x[t]-x[t-1], x[t+1]-x[t],
        x[t+2]-x[t+1], frame indices clamped to the clip."""
        x5 = _split_time(x, self.frames)
        t = torch.arange(self.frames, device=x.device)
        window = x5[:, (t[:, None] + torch.arange(-2, 3, device=x.device)).clamp(0, self.frames - 1)]
        return (window[:, :, 1:] - window[:, :, :-1]).flatten(2, 3).flatten(0, 1)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        d = F.relu(self.bn(self.conv(F.avg_pool2d(self.differences(x), 2))))
        return F.max_pool2d(d, 3, stride=2, padding=1)

    def fuse(self, x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return self.alpha * x + (1 - self.alpha) * F.interpolate(d, size=x.shape[-2:])

    def forward(self, x: torch.Tensor, stem: nn.Module, layer1: nn.Module) -> torch.Tensor:
        """Frames `x` -> layer1's output of the fused stream; `stem` and `layer1` are the
        network's own (the frame stream)."""
        d = self.stem(x)
        y = layer1(self.fuse(stem(x), d))
        return self.fuse(y, self.layer1(d))


class TAM(nn.Module):
    """TANet's temporal adaptive module (the paper's TAM: a local and a global branch), after conv1
    of every block. From the globally pooled features theta (per video, channel, frame):
    - local branch L: temporal conv C -> C/4 (k=3) + BN + ReLU, conv C/4 -> C, sigmoid: an
      importance map V(c, t) that multiplies the features;
    - global branch G: per channel, FC T -> 2T + BN + ReLU, FC 2T -> 3, softmax: a 3-tap kernel
      K(c) applied depthwise over time (zero padding) to the reweighted features:
      Y(c, t) = sum_k K(c, k) V(c, t+k-1) X(c, t+k-1).
    Sizes from the authors' code (`ops/temporal_module.py`): alpha = 2, beta = 4, K = 3, no
    biases, BN in both branches; PyTorch's default init (mmaction2 instead draws the FCs from
    N(0, 0.001)). G's sizes depend on T.
    """

    def __init__(self, channels: int, frames: int, alpha: int = 2, beta: int = 4, kernel_size: int = 3):
        super().__init__()
        self.frames, self.kernel_size = frames, kernel_size
        self.G = nn.Sequential(nn.Linear(frames, frames * alpha, bias=False), nn.BatchNorm1d(frames * alpha),
                               nn.ReLU(inplace=True), nn.Linear(frames * alpha, kernel_size, bias=False),
                               nn.Softmax(dim=-1))
        self.L = nn.Sequential(nn.Conv1d(channels, channels // beta, kernel_size, padding=kernel_size // 2, bias=False),
                               nn.BatchNorm1d(channels // beta), nn.ReLU(inplace=True),
                               nn.Conv1d(channels // beta, channels, 1, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nt, c, h, w = x.shape
        x5 = _split_time(x, self.frames).transpose(1, 2)                 # N, C, T, H, W
        n, t = x5.shape[0], self.frames
        theta = x5.mean(dim=(3, 4))                                      # N, C, T
        kernel = self.G(theta.reshape(n * c, t)).view(n * c, 1, self.kernel_size, 1)
        local = self.L(theta)                                            # N, C, T
        y = (x5 * local[..., None, None]).reshape(1, n * c, t, h * w)
        y = F.conv2d(y, kernel, padding=(self.kernel_size // 2, 0), groups=n * c)
        return y.view(n, c, t, h, w).transpose(1, 2).reshape(nt, c, h, w)


def fractional_shift(x: torch.Tensor, offset: torch.Tensor, max_shift: int = 2) -> torch.Tensor:
    """TIN's shift by a real offset along time, with linear interpolation between the two
    nearest integer shifts: out[t] = sum_s max(0, 1 - |o - s|) x[t - s] over integer s, zero
    outside the clip. `x`: (N, T, G, ...), `offset`: (N, G), |offset| <= max_shift. An integer
    offset s moves the features s frames later (frame t reads frame t - s), as mmcv's
    `tin_shift`; 0.5 gives the mean of x[t] and x[t-1]."""
    t = x.shape[1]
    out = torch.zeros_like(x)
    extra = (1,) * (x.dim() - 3)
    for s in range(-max_shift, max_shift + 1):
        if abs(s) >= t:
            continue
        w = torch.clamp(1 - (offset - s).abs(), min=0).view(*offset.shape, *extra)[:, None]   # N, 1, G, ...
        if _compiling():      # the same sum without slice writes (temporal.py, "for torch.compile")
            z = x.new_zeros(x.shape[0], abs(s), *x.shape[2:])
            out = out + w * (torch.cat([z, x[:, :t - s]], 1) if s >= 0 else torch.cat([x[:, -s:], z], 1))
        elif s >= 0:
            out[:, s:] = out[:, s:] + w * x[:, :t - s]
        else:
            out[:, :s] = out[:, :s] + w * x[:, -s:]
    return out


class TemporalInterlace(nn.Module):
    """TIN's temporal interlace module (the paper's offset and weight networks and differentiable
    temporal-wise frame sampling), on the residual branch before conv1, on
    C/4 of the channels (the rest pass unchanged). From those channels' spatial means
    (per video, channel, frame):
    - offset network: temporal conv C/4 -> 1 (k=3), FC T -> T + ReLU, FC T -> 2, then
      4 (sigmoid - 0.5): two offsets in (-2, 2) per video, mirrored to four channel groups
      (o1, o2, -o1, -o2);
    - weight network: temporal conv C/4 -> 2 (k=3), 2 sigmoid: a weight per frame for each of the
      two offsets (groups 1 and 3 share w1, groups 2 and 4 w2), scaling the shifted output frame.
    Each group is shifted by its offset with linear interpolation (`fractional_shift`).
    From the authors' code (mmaction2 `backbones/resnet_tin.py`, the authors' `ops/`): the last
    FC's bias starts at 0.5108 (sigmoid 0.625, offsets 0.5), the weight conv's at 0 (weights 1);
    the other layers keep PyTorch's default init; the mmcv CUDA `tin_shift` is this sum of two
    integer shifts.
    """

    def __init__(self, channels: int, frames: int, fold_div: int = 4):
        super().__init__()
        self.frames = frames
        self.folds = channels // fold_div
        if self.folds < 4 or self.folds % 4:
            raise ValueError(f"TIN shifts C/{fold_div} channels in 4 groups: {channels} channels do not split")
        self.offset_conv = nn.Conv1d(self.folds, 1, 3, padding=1)
        self.offset_fc1 = nn.Linear(frames, frames)
        self.offset_fc2 = nn.Linear(frames, 2)
        self.weight_conv = nn.Conv1d(self.folds, 2, 3, padding=1)
        with torch.no_grad():
            self.offset_fc2.bias.fill_(0.5108)
            self.weight_conv.bias.zero_()

    def offsets(self, pooled: torch.Tensor) -> torch.Tensor:
        """(N, C/4, T) pooled features -> (N, 4) offsets (o1, o2, -o1, -o2)."""
        h = F.relu(self.offset_fc1(self.offset_conv(pooled).squeeze(1)))
        o = 4 * (torch.sigmoid(self.offset_fc2(h)) - 0.5)
        return torch.cat([o, -o], dim=1)

    def weights(self, pooled: torch.Tensor) -> torch.Tensor:
        """(N, C/4, T) -> (N, T, 4) frame weights in (0, 2) of the four groups."""
        w = 2 * torch.sigmoid(self.weight_conv(pooled)).transpose(1, 2)     # N, T, 2
        return torch.cat([w, w], dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x5 = _split_time(x, self.frames)
        n, t, c, h, w = x5.shape
        part = x5[:, :, :self.folds]
        pooled = part.mean(dim=(3, 4)).transpose(1, 2)                      # N, C/4, T
        groups = part.reshape(n, t, 4, self.folds // 4, h, w)
        shifted = fractional_shift(groups, self.offsets(pooled)) * self.weights(pooled)[..., None, None, None]
        return torch.cat([shifted.reshape(n, t, self.folds, h, w), x5[:, :, self.folds:]], dim=2).view_as(x)


# ---- published cost ------------------------------------------------------------------------------
# Each model's published parameters (M) and FLOPs (G) at 8 frames, 224 px, 174 classes, as printed
# (strings: the last digit sets the rounding, and the tests allow half a unit of it, no more), how
# the FLOPs were counted, and why our count of the registry variant differs where it does.
# Conventions: "count" = multiply-adds of the conv and linear layers of the authors' module code
# (/work/shared/notes/successors.md); "mmcv" = mmaction2's `get_flops` (mmcv's module hooks:
# conv and linear multiply-adds, conv biases, BN 2 per element, ReLU 1 per output element, pooling
# 1 per input element; functional calls are invisible to it). Ours: fvcore (`stm_lib.profile`:
# conv, linear, BN 2 per element, adaptive pooling, upsampling); its conv + linear share
# (`MULTIPLY_ADD_OPS`) is what a "count" compares with. tests/test_successors.py checks each line.
SUCCESSOR_PAPER = {
    "tea": {
        "params": "24.46", "flops": "34.5", "flops_convention": "count",
        "source": "count of the authors' ops/tea50_8f.py (Res2Net-50 26w x 4s); paper: about 35G",
        "why": "The official TEA is built on Res2Net-50 26w x 4s (inner widths 104, 208, 416, 832); the "
               "registry's `tea` keeps ResNet-50's (64 .. 512, MTA groups of C/4) so that ImageNet "
               "ResNet-50 weights initialise it, and MTA's three g x g 3x3 convs hold 3/16 of the 3x3 "
               "conv they replace: 14.85M parameters and 20.89G multiply-adds (21.07G fvcore). The same "
               "modules at Res2Net's widths (block override mta_base_width=26) give 24,456,280 "
               "parameters and 34.54G multiply-adds: the published count to its last digit.",
    },
    "tdn": {
        "params": "24.42", "flops": "35.6", "flops_convention": "count",
        "source": "count of the authors' ops/tdn_net.py + ops/base_module.py; paper: about 36G",
        "why": "We count 24,382,606 parameters. The authors' fbresnet50 gives every ResNet conv a bias "
               "(26,560 in the frame stream, 1,408 in the difference stream's layer1) and TDN_Net "
               "registers an unused copy of conv1 (`conv1_temp`, 7x7x3x64 + 64 = 9,472): with those "
               "37,440 we reach 24,420,046 = 24.42M. Biases add no multiply-adds: 35.64G conv + linear "
               "(35.89G fvcore, which adds BN and the nearest upsampling).",
    },
    "tam": {
        "params": "25.13", "flops": "32.7", "flops_convention": "count",
        "source": "count of the authors' ops/temporal_module.py = mmaction2 0.x metafile (25,127,246; 32.97G mmcv)",
        "why": "Parameters agree to the unit (25,127,246). Our conv + linear count is 32.756G: it includes "
               "the adaptive temporal aggregation, a functional conv2d (3 taps x C x T x H x W per block, "
               "45.76M in all), which module-hook counters such as mmcv's do not see, and neither did the "
               "count; "
               "without it 32.71G = 32.7G. mmcv's rules on our model give 32.97G, mmaction2's figure.",
    },
    "tin": {
        "params": "23.90", "flops": "32.96", "flops_convention": "mmcv",
        "source": "mmaction2 metafile: 23,895,566 parameters, 32.96G (TSM's figure too)",
        "why": "Parameters agree to the unit (23,895,566). The 32.96G is mmcv's count; mmcv's rules on our "
               "model give 32.962G (TSN: 32.962G too; the interlace's own multiply-adds are 0.24M). "
               "fvcore's 32.879G leaves out what mmcv adds: ReLU (9.61M per frame), max-pooling (0.80M) "
               "and conv biases.",
    },
}

MULTIPLY_ADD_OPS = ("conv", "linear", "addmm", "matmul", "mm", "bmm", "einsum")
