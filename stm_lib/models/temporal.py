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

Why the fast paths are faster (issue 29), forward *and* backward: an in-place write into a slice
of a tensor that already has autograd history (`out[:, 1:] = ...`, `out[:, dst].addcmul_(...)`)
is recorded as a `CopySlices` node, whose backward copies the *whole* gradient once per write:
TSM's five slice writes cost five full-size copies in its backward, CSTM's two taps two. The
fast paths are therefore small `torch.autograd.Function`s (`_Shift`, `_ChannelwiseTemporal`,
`_TapSum`, `_NeighbourDifference`) whose forward writes each output element once into a fresh
tensor and whose backward is the same kind of op (a shift the other way, the conv with the kernel
flipped in time), also writing each gradient element once. They are plain PyTorch ops on the
`(N, T, C, H, W)` view, so they keep channels_last and bf16 as they come.

Under `torch.compile` the fast paths take functional forms of the same ops instead (`cat` and
`pad` of time-shifted slices, no in-place writes; see "for torch.compile" below for why): Dynamo
captures every registry variant in one graph and inductor fuses each op, forward and backward,
into a few elementwise kernels (tests/test_compile.py). That is PyTorch's fast path for these
memory-bound ops, so no custom Triton kernel is written.
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


PAD_CHANNELS = 8
"""CUDA: 1x1 convs whose channel counts are not multiples of this are zero-padded to one
(`_conv1x1_padded`); 0 turns the padding off."""


def _conv1x1(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A bias-free 1x1 conv. On a CPU NCHW tensor it runs as one batched matmul over the channel
    axis: oneDNN's 1x1 conv is up to 30x slower there for CMM's few-channel convs (C/16 = 4 in
    conv2_x). On CUDA, channel counts that are not multiples of 8 are zero-padded to one
    (`_conv1x1_padded`). Elsewhere (CPU channels_last) the conv is already a plain GEMM."""
    if x.device.type == "cuda" and PAD_CHANNELS and (weight.shape[0] % PAD_CHANNELS or weight.shape[1] % PAD_CHANNELS):
        return _conv1x1_padded(x, weight, PAD_CHANNELS)
    if x.device.type != "cpu" or not x.is_contiguous():
        return F.conv2d(x, weight)
    n, c, h, w = x.shape
    w2 = weight.flatten(1)
    return torch.bmm(w2.expand(n, *w2.shape), x.view(n, c, h * w)).view(n, -1, h, w)   # bmm: matmul would copy x


def _conv1x1_padded(x: torch.Tensor, weight: torch.Tensor, multiple: int = 8) -> torch.Tensor:
    """`F.conv2d(x, weight)` (1x1, no bias) with both channel counts zero-padded up to a multiple
    of `multiple` and the padded outputs sliced off: the same values (the padding adds zero
    products). Why: bf16/fp16 tensor-core GEMMs need channel counts that are multiples of 8
    (16-byte rows); CMM's C/16 = 4 channels in conv2_x (reduce C -> 4, restore 4 -> C) otherwise
    fall back to slower kernels. The padded tensors are C/16-channel maps, small next to the
    block's own."""
    cout, cin = weight.shape[:2]
    pin, pout = -cin % multiple, -cout % multiple
    fmt = _layout(x)
    if pin:
        zeros = torch.empty(x.shape[0], pin, *x.shape[2:], dtype=x.dtype, device=x.device, memory_format=fmt).zero_()
        x = torch.cat([x, zeros], dim=1)
    y = F.conv2d(x, F.pad(weight, (0, 0, 0, 0, 0, pin, 0, pout)))
    return y[:, :cout].contiguous(memory_format=fmt) if pout else y   # dense again for BN / the next conv


def _max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """`MaxPool2d(2, ceil_mode=True)` on even sizes, as the maximum of the four strided views of
    each 2x2 window (`_MaxPool2x2`): the same values and the same gradients as max_pool2d (where a
    window holds tied maxima, the first in row-major order gets the gradient). Forward and
    backward together: 2.2-2.6x faster than the former elementwise `torch.maximum` form and
    1.0-1.6x faster than PyTorch's CPU max_pool2d (fp32 NCHW, 1 and 2 threads, CMM's shapes
    32x128x56x56 to 32x512x14x14): the former form's backward zero-filled the full input twice
    (slice backward) and split ties with a division; this one writes each input gradient once.
    Only fp32 CPU NCHW tensors, where the speed was measured, take it; odd sizes, other dtypes,
    channels_last and CUDA use max_pool2d (fast there); under torch.compile the elementwise
    maxima, which inductor fuses."""
    if (x.shape[-2] % 2 or x.shape[-1] % 2 or x.device.type != "cpu" or x.dtype != torch.float32
            or not x.is_contiguous()):
        return F.max_pool2d(x, 2, ceil_mode=True)
    if _compiling() or torch.jit.is_tracing():
        r = torch.maximum(x[..., 0::2, :], x[..., 1::2, :])
        return torch.maximum(r[..., 0::2], r[..., 1::2])
    return _MaxPool2x2.apply(x)


_WINDOW = ((0, 0), (0, 1), (1, 0), (1, 1))   # a 2x2 window's positions, max_pool2d's tie order


class _MaxPool2x2(torch.autograd.Function):
    @staticmethod
    def forward(x):
        v = [x[..., i::2, j::2] for i, j in _WINDOW]
        return torch.maximum(torch.maximum(v[0], v[1]), torch.maximum(v[2], v[3]))

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], output)

    @staticmethod
    def backward(ctx, g):
        x, out = ctx.saved_tensors
        gx = torch.empty_like(x)
        free = None                                   # windows whose maximum no earlier position took
        for n, (i, j) in enumerate(_WINDOW):
            hit = x[..., i::2, j::2] == out
            if free is None:
                free = ~hit
            else:
                hit &= free
                if n < len(_WINDOW) - 1:
                    free &= ~hit
            gx[..., i::2, j::2] = g * hit             # every input position written once
        return gx


# ---- the fast paths' autograd Functions (see the module docstring for why) ----------------------

def _shift(x: torch.Tensor, frames: int, fold: int, spatial: int, reverse: bool = False) -> torch.Tensor:
    """TSM/STSM's shift (`TemporalShift`) written once per element into a fresh tensor with x's
    layout. `reverse` moves every share the other way: the shift's adjoint, i.e. its backward."""
    x5 = _split_time(x, frames)
    out = torch.empty_like(x)
    o5 = _split_time(out, frames)
    fut, past = slice(0, fold), slice(fold, 2 * fold)       # read t+1, read t-1
    if reverse:
        fut, past = past, fut
    o5[:, :-1, fut] = x5[:, 1:, fut]
    o5[:, -1, fut] = 0
    o5[:, 1:, past] = x5[:, :-1, past]
    o5[:, 0, past] = 0
    a = 2 * fold
    if spatial:
        up, down, left, right = (slice(a + i * spatial, a + (i + 1) * spatial) for i in range(4))
        if reverse:
            up, down, left, right = down, up, right, left
        o5[:, :, up, :-1] = x5[:, :, up, 1:]
        o5[:, :, up, -1] = 0
        o5[:, :, down, 1:] = x5[:, :, down, :-1]
        o5[:, :, down, 0] = 0
        o5[:, :, left, :, :-1] = x5[:, :, left, :, 1:]
        o5[:, :, left, :, -1] = 0
        o5[:, :, right, :, 1:] = x5[:, :, right, :, :-1]
        o5[:, :, right, :, 0] = 0
        a += 4 * spatial
    o5[:, :, a:] = x5[:, :, a:]
    return out


class _Shift(torch.autograd.Function):
    """The shift with its adjoint as backward: one pass over memory each way."""

    @staticmethod
    def forward(x, frames: int, fold: int, spatial: int):
        return _shift(x, frames, fold, spatial)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.args = inputs[1:]

    @staticmethod
    def backward(ctx, g):
        return _shift(g, *ctx.args, reverse=True), None, None, None


def _channelwise_temporal(x: torch.Tensor, w: torch.Tensor, frames: int) -> torch.Tensor:
    """y[t] = sum_i w[:, i] * x[t + i - k//2] per channel (zero padded in time), w: (C, k), as a
    scale plus k-1 multiply-adds over time-shifted slices of the (N, T, C, H, W) view (no
    transpose; the result keeps x's strides)."""
    k = w.shape[1]
    x5 = _split_time(x, frames)
    wt = w.view(-1, k, 1, 1)                              # broadcasts over (C, H, W)
    out = x5 * wt[:, k // 2]
    for i, dst, src in _taps(k, x5.shape[1]):
        out[:, dst].addcmul_(x5[:, src], wt[:, i])
    return out.reshape(x.shape)


def _layout(x: torch.Tensor) -> torch.memory_format:
    """channels_last when `x` is stored NHWC (and is not also plain contiguous), else contiguous."""
    cl = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if cl else torch.contiguous_format


class _ChannelwiseTemporal(torch.autograd.Function):
    """Eq. (1)'s channel-wise temporal conv. Backward: the input's gradient is the same op with the
    kernel flipped in time (the conv's adjoint); the weight's is, per tap, the sum of
    gradient x shifted input over N, T, H, W."""

    @staticmethod
    def forward(x, w, frames: int):
        return _channelwise_temporal(x, w, frames)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, w, frames = inputs
        ctx.save_for_backward(x, w)
        ctx.frames = frames

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = _channelwise_temporal(g, w.flip(1), ctx.frames)
        if ctx.needs_input_grad[1]:
            gw = _channelwise_temporal_wgrad(g, x, w.shape[1], ctx.frames).to(w.dtype)
        return gx, gw, None


def _channelwise_temporal_wgrad(g: torch.Tensor, x: torch.Tensor, k: int, frames: int) -> torch.Tensor:
    """(C, k): tap i's gradient, sum over N, T, H, W of g[t] * x[t + i - k//2], per channel.
    On a CPU, per clip one batched matmul over channels, (T x HW) by (HW x T), gives every
    time pair's product at once; tap i is the sum of diagonal i - k//2 (1.4-5x faster than a
    product and a reduction per tap, fp32, CSTM's shapes from 32x64x56x56 to 32x512x7x7; a
    GEMM, so it also gains from a second thread). Elsewhere: that product and reduction per tap."""
    g5, x5 = _split_time(g, frames), _split_time(x, frames)
    n, t, c, h, w = g5.shape
    if g.device.type == "cpu":
        m = None
        for i in range(n):   # (C, T, HW) @ (C, HW, T): strided views of the clip, no copy when NCHW
            mi = torch.bmm(g5[i].reshape(t, c, h * w).transpose(0, 1), x5[i].reshape(t, c, h * w).permute(1, 2, 0))
            m = mi if m is None else m.add_(mi)
        return torch.stack([m.diagonal(i - k // 2, 1, 2).sum(-1) if abs(i - k // 2) < t else m.new_zeros(c)
                            for i in range(k)], dim=1)
    cols = [None] * k
    cols[k // 2] = (g5 * x5).sum(dim=(0, 1, 3, 4))
    for i, dst, src in _taps(k, t):
        cols[i] = (g5[:, dst] * x5[:, src]).sum(dim=(0, 1, 3, 4))
    return torch.stack([col if col is not None else g.new_zeros(c) for col in cols], dim=1)


class _TapSum(torch.autograd.Function):
    """`y` (N*T, k*C, H, W) holding each tap's conv output, tap-major: out[t] = sum_i y[t + i - k//2, tap i]
    (zero padded in time). Backward: gradient of tap i at frame s = g[s - i + k//2], written once."""

    @staticmethod
    def forward(y, frames: int, k: int):
        y6 = _split_time(y, frames).unflatten(2, (k, -1))              # N, T, k, C, H, W
        out = y6[:, :, k // 2].clone()                                 # keeps the layout
        for i, dst, src in _taps(k, frames):
            out[:, dst] += y6[:, src, i]
        return out.flatten(0, 1)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.frames, ctx.k = inputs[1:]

    @staticmethod
    def backward(ctx, g):
        k, frames = ctx.k, ctx.frames
        g5 = _split_time(g, frames)
        n, t, c, h, w = g5.shape
        gy = torch.empty(n * t, k * c, h, w, dtype=g.dtype, device=g.device, memory_format=_layout(g))
        gy6 = _split_time(gy, frames).unflatten(2, (k, c))
        gy6[:, :, k // 2] = g5
        for i in range(k):
            if i == k // 2:
                continue
            d = i - k // 2
            gy6[:, :, i] = 0
            if abs(d) < t:               # out[dst] read y[src, i]: src = dst + d
                if d > 0:
                    gy6[:, d:, i] = g5[:, :-d]
                else:
                    gy6[:, :d, i] = g5[:, -d:]
        return gy, None, None


def neighbour_difference(k: torch.Tensor, f: torch.Tensor, frames: int, step: int = 1) -> torch.Tensor:
    """`k[t + step] - f[t]` where frame t + step exists, zero elsewhere, on `(N*T, C, H, W)`
    tensors (step 1: CMM's Eq. (2), TEA's ME, TDN's forward difference; step -1: TDN's backward
    difference). Each output and gradient element is written once (`_NeighbourDifference`); under
    tracing (fvcore) and torch.compile a plain `cat` of the same values."""
    if torch.jit.is_tracing() or _compiling():
        k5, f5 = _split_time(k, frames), _split_time(f, frames)
        z = torch.zeros_like(f5[:, :1])
        d = [k5[:, 1:] - f5[:, :-1], z] if step > 0 else [z, k5[:, :-1] - f5[:, 1:]]
        return torch.cat(d, dim=1).flatten(0, 1).contiguous(memory_format=_layout(f))
    return _NeighbourDifference.apply(k, f, frames, step)


def _neighbour_difference(k, f, frames, step):
    out = torch.empty_like(f)
    k5, f5, o5 = _split_time(k, frames), _split_time(f, frames), _split_time(out, frames)
    here, there, edge = (slice(None, -1), slice(1, None), -1) if step > 0 else (slice(1, None), slice(None, -1), 0)
    o5[:, here].copy_(k5[:, there]).sub_(f5[:, here])      # no temporary; no `out=` (a graph break)
    o5[:, edge] = 0
    return out


class _NeighbourDifference(torch.autograd.Function):
    @staticmethod
    def forward(k, f, frames: int, step: int):
        return _neighbour_difference(k, f, frames, step)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.frames, ctx.step = inputs[2:]

    @staticmethod
    def backward(ctx, g):
        frames, step = ctx.frames, ctx.step
        g5 = _split_time(g, frames)
        here, there = (slice(None, -1), slice(1, None)) if step > 0 else (slice(1, None), slice(None, -1))
        gk = torch.empty_like(g)
        k5 = _split_time(gk, frames)
        k5[:, there] = g5[:, here]                       # k[t + step] fed out[t]
        k5[:, 0 if step > 0 else -1] = 0                 # the frame no output reads
        gf = torch.empty_like(g)
        f5 = _split_time(gf, frames)
        f5[:, here].copy_(g5[:, here]).neg_()
        f5[:, -1 if step > 0 else 0] = 0
        return gk, gf, None, None


# ---- the same ops without in-place writes, for torch.compile ------------------------------------
# Under torch.compile the fast paths take these plain functional forms instead of the autograd
# Functions: inductor derives their backward and fuses each into a few elementwise kernels
# (the Functions' in-place writes buy nothing there). It is also a correctness matter: with
# PyTorch 2.14.1's CPU inductor, slice writes into a fresh tensor (the Functions' forwards, the
# references' `zeros` + slice assignment) in a graph that also updates a buffer through a view
# (TEA's MTA: batch-norm running statistics of a channel slice, `successors._bn_channels`)
# computed wrong values, while aot_eager was exact (tests/test_compile.py::test_temporal_modules_inductor_equals_eager).

def _compiling() -> bool:
    return torch.compiler.is_compiling()


def _zeros_in_time(x5: torch.Tensor, frames: int) -> torch.Tensor:
    return x5.new_zeros(x5.shape[0], frames, *x5.shape[2:])


def _shift_functional(x: torch.Tensor, frames: int, fold: int, spatial: int) -> torch.Tensor:
    """`_shift` as `cat` / `pad` of slices (no in-place writes)."""
    x5 = _split_time(x, frames)
    parts = [torch.cat([x5[:, 1:, :fold], _zeros_in_time(x5[:, :, :fold], 1)], 1),
             torch.cat([_zeros_in_time(x5[:, :, fold:2 * fold], 1), x5[:, :-1, fold:2 * fold]], 1)]
    a = 2 * fold
    if spatial:
        up, down, left, right = (x5[:, :, a + i * spatial:a + (i + 1) * spatial] for i in range(4))
        parts += [F.pad(up[..., 1:, :], (0, 0, 0, 1)), F.pad(down[..., :-1, :], (0, 0, 1, 0)),
                  F.pad(left[..., 1:], (0, 1)), F.pad(right[..., :-1], (1, 0))]
        a += 4 * spatial
    parts.append(x5[:, :, a:])
    return torch.cat(parts, dim=2).reshape(x.shape).contiguous(memory_format=_layout(x))   # compiled: no copy


def _channelwise_temporal_functional(x: torch.Tensor, w: torch.Tensor, frames: int) -> torch.Tensor:
    """`_channelwise_temporal` as a sum of k scaled slices of the time-padded input."""
    k = w.shape[1]
    mid = k // 2
    x5 = _split_time(x, frames)
    t = x5.shape[1]
    z = _zeros_in_time(x5, mid)
    xp = torch.cat([z, x5, z], 1)                         # xp[j] = x[j - mid]
    wt = w.view(-1, k, 1, 1)
    out = x5 * wt[:, mid]
    for i in range(k):
        if i != mid:
            out = out + xp[:, i:i + t] * wt[:, i]         # frame t reads x[t + i - mid]
    return out.reshape(x.shape).contiguous(memory_format=_layout(x))


def _tap_sum_functional(y: torch.Tensor, frames: int, k: int) -> torch.Tensor:
    """`_TapSum` as a sum of k slices of the time-padded taps."""
    mid = k // 2
    y6 = _split_time(y, frames).unflatten(2, (k, -1))      # N, T, k, C, H, W
    t = y6.shape[1]
    z = _zeros_in_time(y6, mid)
    yp = torch.cat([z, y6, z], 1)
    out = y6[:, :, mid]
    for i in range(k):
        if i != mid:
            out = out + yp[:, i:i + t, i]
    return out.flatten(0, 1).contiguous(memory_format=_layout(y))


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
        """Every output element written once (moved values, zeros only where padding falls; the
        reference zero-fills the whole tensor first), and the backward is the opposite shift, one
        pass too (`_Shift`)."""
        c = x.shape[1]
        args = (x, self.frames, c // self.fold_div, c // self.spatial_fold_div if self.spatial_fold_div else 0)
        return _shift_functional(*args) if _compiling() else _Shift.apply(*args)


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
        over time-shifted slices of the (N, T, C, H, W) view; the zero padding is the slices' ends
        (`_ChannelwiseTemporal`: its backward is the same op with the kernel flipped).
        Ordinary: one 1x1 conv to k*C channels (tap i's C x C matrix each), then the same shifted
        sum (`_TapSum`). Neither transposes to (N, C, T, H, W) as the Conv3d does."""
        k = self.conv.kernel_size[0]
        if self.channelwise:
            # the cast keeps bf16 activations bf16 under autocast (the Conv3d would be cast too)
            w = self.conv.weight.to(x.dtype).view(-1, k)
            fn = _channelwise_temporal_functional if _compiling() else _ChannelwiseTemporal.apply
            return fn(x, w, self.frames)
        c = x.shape[1]
        w2 = self.conv.weight.permute(2, 0, 1, 3, 4).reshape(k * c, c, 1, 1)   # taps stacked on out
        fn = _tap_sum_functional if _compiling() else _TapSum.apply
        return fn(nn.functional.conv2d(x, w2), self.frames, k)


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
        saves); the difference is written once into a fresh output whose last step is zeroed, and
        its gradients once each (`neighbour_difference`).
        The 1x1 convs and the 2x2 pool avoid CPU kernels that are slow for these shapes."""
        f = self.bn(_conv1x1(x, self.reduce.weight))            # N*T, c, H, W
        k = self.motion(f)                                        # K^c * F_t for every t
        motion = neighbour_difference(k, f, self.frames)          # Eq. (2); zero for the last step
        out = _conv1x1(motion, self.restore.weight)
        return _max_pool_2x2(out) if isinstance(self.pool, nn.MaxPool2d) else out
