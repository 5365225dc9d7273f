"""Every fast path of the temporal modules against its plain reference (`reference_forward`):
same outputs and the same gradients (input and every weight) on random inputs, in NCHW and
channels_last, in fp32 and in bf16 (autocast, as training runs it), and the FLOP count / state
dict unchanged.

Tolerances (`_close`), relative to the largest entry of the expected tensor m = max(1, max|ref|):
- fp32: rtol 1e-5, atol 1e-5 * m. Both paths round differently (a weight gradient sums thousands
  of products), by a few fp32 units at the scale of the tensor.
- bf16: rtol 2e-2, atol 2e-2 * m: a few units of bf16's 8-bit mantissa (2^-8 = 3.9e-3), since
  each path rounds its bf16 intermediates at different points (a conv accumulates its taps in
  fp32 and rounds once; the fast path rounds after each multiply-add)."""
import pytest
import torch
import torch.nn.functional as F
import torch.nn as nn

from stm_lib.models import build_model, list_models, to_channels_last
from stm_lib.models.relatives import STHConv, _SplitChannels
from stm_lib.models.resnet import Bottleneck, BlockSpec
from stm_lib.models.temporal import (CMM, CSTM, TemporalShift, _conv1x1_padded, _max_pool_2x2,
                                     neighbour_difference, set_fast)

TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


def _close(actual, expected, what="", tol=None):
    """`tol` (default: that of the expected tensor's dtype), scaled to the tensor (module docstring)."""
    tol = tol or TOL[expected.dtype]
    atol = tol * max(1.0, expected.abs().max().item())
    torch.testing.assert_close(actual, expected, rtol=tol, atol=atol, msg=lambda m: f"{what}: {m}")


def _run(module: nn.Module, x: torch.Tensor, fast: bool, grad_out: torch.Tensor | None = None,
         bf16: bool = False):
    """Forward and backward of `module` (switched to its fast or reference forward); with `bf16`
    under CPU autocast on a bf16 input, as `stm train --amp bf16` runs it (fp32 weights)."""
    module.fast = fast
    module.zero_grad(set_to_none=True)
    x = x.detach().clone().to(torch.bfloat16 if bf16 else x.dtype).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        y = module(x)
    g = torch.randn_like(y) if grad_out is None else grad_out
    y.backward(g)
    grads = {n: p.grad.clone() for n, p in module.named_parameters()}
    return y.detach(), x.grad.clone(), grads, g


def _assert_same(module: nn.Module, x: torch.Tensor, bf16: bool = False):
    y_ref, gx_ref, gw_ref, g = _run(module, x, fast=False, bf16=bf16)
    y, gx, gw, _ = _run(module, x, fast=True, grad_out=g, bf16=bf16)
    assert y.dtype == y_ref.dtype and gx.dtype == gx_ref.dtype
    cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    assert y.is_contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format), \
        "the fast path changed the memory format"
    _close(y, y_ref, "output")
    _close(gx, gx_ref, "grad of input")
    assert gw.keys() == gw_ref.keys()
    for k in gw:
        assert gw[k].dtype == gw_ref[k].dtype == torch.float32     # fp32 master gradients
        _close(gw[k], gw_ref[k], f"grad of {k}", TOL[torch.bfloat16 if bf16 else torch.float32])


PRECISIONS = pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])


def _inputs(n=2, t=4, c=16, h=6, w=6):
    x = torch.randn(n * t, c, h, w)
    return [x, x.contiguous(memory_format=torch.channels_last)]


@PRECISIONS
@pytest.mark.parametrize("channelwise", [True, False])
@pytest.mark.parametrize("kernel_size", [3, 5])
def test_cstm_fast_equals_reference(channelwise, kernel_size, bf16):
    torch.manual_seed(0)
    m = CSTM(16, 4, channelwise=channelwise, kernel_size=kernel_size)
    nn.init.normal_(m.conv.weight)          # any kernel, not just the shift init
    for x in _inputs():
        _assert_same(m, x, bf16)


def test_cstm_fast_short_clip():
    # T=2 < kernel 5: taps that reach past both ends contribute nothing (zero padding)
    torch.manual_seed(0)
    m = CSTM(8, 2, kernel_size=5)
    nn.init.normal_(m.conv.weight)
    _assert_same(m, torch.randn(6, 8, 3, 3))


@PRECISIONS
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [6, 5])         # 5: odd map, ceil-mode pooling falls back
def test_cmm_fast_equals_reference(stride, size, bf16):
    torch.manual_seed(0)
    m = CMM(32, 4, reduction=4, stride=stride)
    nn.init.normal_(m.bn.weight)
    nn.init.normal_(m.bn.bias)
    for x in _inputs(c=32, h=size, w=size):
        _assert_same(m.train(), x, bf16)          # batch statistics
        _assert_same(m.eval(), x, bf16)           # running statistics


@PRECISIONS
@pytest.mark.parametrize("spatial", [0, 16])
def test_shift_fast_equals_reference(spatial, bf16):
    torch.manual_seed(0)
    m = TemporalShift(4, 8, spatial)
    for x in _inputs(c=64):
        _assert_same(m, x, bf16)


@PRECISIONS
@pytest.mark.parametrize("stride", [1, 2])
def test_sth_fast_equals_reference(stride, bf16):
    torch.manual_seed(0)
    m = STHConv(16, 12, stride, frames=4)
    for x in _inputs(c=16):
        _assert_same(m, x, bf16)


class _Diff(nn.Module):
    """`neighbour_difference` as a module with a reference: the `cat` it replaces."""
    fast = True

    def __init__(self, step):
        super().__init__()
        self.step = step
        self.scale = nn.Parameter(torch.tensor(1.5))     # a weight, so weight gradients are checked too

    def forward(self, x):
        k = x * self.scale
        if self.fast:
            return neighbour_difference(k, x, 4, self.step)
        k5, x5 = k.view(-1, 4, *k.shape[1:]), x.view(-1, 4, *x.shape[1:])
        z = torch.zeros_like(x5[:, :1])
        d = [k5[:, 1:] - x5[:, :-1], z] if self.step > 0 else [z, k5[:, :-1] - x5[:, 1:]]
        return torch.cat(d, dim=1).flatten(0, 1)


@PRECISIONS
@pytest.mark.parametrize("step", [1, -1])
def test_neighbour_difference_equals_cat(step, bf16):
    torch.manual_seed(0)
    for x in _inputs():
        _assert_same(_Diff(step), x, bf16)


class _Padded(nn.Module):
    """CMM's tensor-core padding (`_conv1x1_padded`, used on CUDA) against the plain 1x1 conv."""
    fast = True

    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x):
        return _conv1x1_padded(x, self.conv.weight, 8) if self.fast else self.conv(x)


@PRECISIONS
@pytest.mark.parametrize("cin,cout", [(16, 4), (4, 16), (5, 3), (8, 16)])
def test_padded_conv1x1_equals_conv(cin, cout, bf16):
    torch.manual_seed(0)
    for x in _inputs(c=cin):
        _assert_same(_Padded(cin, cout), x, bf16)


def test_split_channels_gradient_of_one_part():
    """`_SplitChannels` when only one part reaches the loss: the other's gradient is zero."""
    x = torch.randn(2, 6, 3, 3, requires_grad=True)
    a, b = torch.tensor([0, 2, 4]), torch.tensor([1, 3, 5])
    xa, _ = _SplitChannels.apply(x, a, b)
    xa.sum().backward()
    assert torch.equal(x.grad[:, a], torch.ones(2, 3, 3, 3)) and not x.grad[:, b].any()


def test_fast_paths_keep_channels_last():
    x = _inputs(c=32)[1]
    for m in (CSTM(32, 4), CSTM(32, 4, channelwise=False), CMM(32, 4, 4), CMM(32, 4, 4, stride=2),
              TemporalShift(4), TemporalShift(4, 8, 16), STHConv(32, 32, 1, 4), STHConv(32, 32, 2, 4)):
        assert m(x).is_contiguous(memory_format=torch.channels_last), type(m).__name__


def test_max_pool_2x2_values_by_hand():
    x = torch.tensor([[1., 5., 2., 0.], [3., 4., 9., 8.], [7., 6., 0., 1.], [2., 2., 3., -1.]]).view(1, 1, 4, 4)
    torch.testing.assert_close(_max_pool_2x2(x), torch.tensor([[5., 9.], [7., 3.]]).view(1, 1, 2, 2))


def test_max_pool_2x2_equals_max_pool2d_forward_and_backward_ties_included():
    """The fast 2x2 pool against PyTorch's max_pool2d, exactly: values, and gradients where
    windows hold tied maxima (small integers: most windows tie), each to the first position."""
    x = torch.tensor([[1., 5., 2., 2.], [5., 4., 2., 2.]]).view(1, 1, 2, 4).requires_grad_()
    y = _max_pool_2x2(x)
    y.backward(torch.tensor([[[[10., 20.]]]]))
    assert torch.equal(x.grad, torch.tensor([[0., 10., 20., 0.], [0., 0., 0., 0.]]).view(1, 1, 2, 4))   # by hand
    torch.manual_seed(0)
    for shape in ((2, 3, 8, 6), (4, 16, 14, 14)):
        x = torch.randint(-2, 3, shape).float()
        g = torch.randn(shape[0], shape[1], shape[2] // 2, shape[3] // 2)
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = _max_pool_2x2(a), F.max_pool2d(b, 2, ceil_mode=True)
        ya.backward(g)
        yb.backward(g)
        assert torch.equal(ya, yb) and torch.equal(a.grad, b.grad)


BLOCK_SPECS = [BlockSpec(cstm="channelwise", cmm=True), BlockSpec(cstm="ordinary", cmm=True),
               BlockSpec(cstm="channelwise", cmm=True, fusion="concat"), BlockSpec(shift="tsm"),
               BlockSpec(shift="stsm"), BlockSpec(conv2="sth"),
               BlockSpec(temporal_module="me", conv2="mta"), BlockSpec(temporal_module="ltdm")]


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


@PRECISIONS
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("spec", BLOCK_SPECS, ids=lambda s: "-".join(
    str(v) for v in (s.shift, s.cstm, s.cmm and "cmm", s.conv2, s.temporal_module) if v and v != "plain"))
@pytest.mark.parametrize("stride", [1, 2])
def test_bottleneck_fast_equals_reference(spec, stride, channels_last, bf16):
    """Whole blocks (and the stride-2 first block of a stage) with every module switched:
    STM (sum and concat fusion, ordinary CSTM), TSM, STSM, STH, and TEA's and TDN's blocks, whose
    modules share CSTM's conv and CMM's difference. fp32: the elementwise fp32 tolerance. bf16:
    through a whole block a bf16 rounding difference can flip a ReLU whose input is near 0, so
    single elements may differ by their full value; the criterion is then accuracy: against the
    fp32 reference, the fast path's relative error (Frobenius norm) must be at most 3 times the
    reference path's own bf16 error, or under 3e-2 (8 units of bf16's 2^-8), for the output and
    every gradient. (Gradients that nearly cancel in exact arithmetic, such as a BN bias feeding
    a later BN, have relative bf16 errors of 0.1-0.5 on either path.)"""
    torch.manual_seed(0)
    block = Bottleneck(32, 16, stride, frames=4, spec=spec, width_mult=0.25)
    for mod in block.modules():               # non-trivial CSTM kernels and BN affine
        if isinstance(mod, CSTM):
            nn.init.normal_(mod.conv.weight, std=0.5)
    x = torch.randn(8, 32, 8, 8).bfloat16().float()          # exactly representable in bf16
    if channels_last:
        to_channels_last(block)
        x = x.contiguous(memory_format=torch.channels_last)
    g = torch.randn(8, 64, 8 // stride, 8 // stride).bfloat16().float()

    def run(fast, low):
        set_fast(block, fast)
        block.zero_grad(set_to_none=True)
        xi = x.clone().to(torch.bfloat16 if low else torch.float32).requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=low):
            y = block(xi)
        y.backward(g.to(y.dtype))
        return {"output": y.detach(), "grad of input": xi.grad,
                **{f"grad of {n}": p.grad.clone() for n, p in block.named_parameters()}}

    ref = run(False, False)
    if not bf16:
        fast = run(True, False)
        for k in ref:
            _close(fast[k], ref[k], k)
        return
    ref_low, fast_low = run(False, True), run(True, True)
    for k in ref:
        e_ref, e_fast = _rel_err(ref_low[k], ref[k]), _rel_err(fast_low[k], ref[k])
        assert e_fast <= max(3 * e_ref, 3e-2), f"{k}: bf16 error {e_fast:.2e}, reference path's {e_ref:.2e}"


def test_fast_path_is_taken_and_reference_under_tracing():
    """The fast path must really run in eager mode (else the speed claim is empty), and fvcore's
    trace must see the countable reference Conv3d."""
    m = CSTM(8, 4)
    x = torch.randn(8, 8, 3, 3)
    calls = []
    m.conv.register_forward_hook(lambda *a: calls.append("conv3d"))
    m(x)
    assert calls == []
    torch.jit.trace(m, x, check_trace=False)
    assert calls == ["conv3d"]


def test_stm_flops_and_params_unchanged():
    from stm_lib.profile import count_flops, count_params

    m = build_model(name="stm", frames=8, num_classes=174)
    assert count_params(m) == 24_035_666
    assert count_flops(m, 8, 224) == 33_254_868_608


def test_whole_model_fast_equals_reference():
    torch.manual_seed(0)
    m = build_model(name="stm", frames=4, num_classes=5, width_mult=0.25).eval()
    x = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        y_fast = m(x)
        for mod in m.modules():
            if hasattr(mod, "reference_forward"):
                mod.fast = False
        y_ref = m(x)
    _close(y_fast, y_ref, "logits")
    assert set(m.state_dict()) == set(build_model(name="stm", frames=4, num_classes=5, width_mult=0.25).state_dict())


@pytest.mark.parametrize("name", list_models())
def test_every_variant_fast_equals_reference_training_step(name):
    """Every registry variant, training mode (batch statistics), forward and backward: the fast
    paths (the default) against every module's reference forward, at fp32 tolerance."""
    torch.manual_seed(0)
    m = build_model(name=name, frames=4, num_classes=5, width_mult=0.25, dropout=0.0).train()
    x = torch.randn(2, 4, getattr(m, "in_channels", 3), 32, 32)

    def run(fast):
        set_fast(m, fast)
        m.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        y = m(x)
        y.square().sum().backward()
        return {"logits": y.detach(), **{n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}}

    ref, fast = run(False), run(True)
    assert ref.keys() == fast.keys()
    for k in ref:
        _close(fast[k], ref[k], k)


@pytest.fixture
def compile_forms(monkeypatch):
    """The fast paths as torch.compile runs them (`_compiling()` true): functional forms, no
    autograd Functions, no in-place writes."""
    from stm_lib.models import relatives, successors, temporal

    for mod in (temporal, relatives, successors):
        monkeypatch.setattr(mod, "_compiling", lambda: True)


@PRECISIONS
def test_compile_forms_equal_reference(compile_forms, bf16):
    """What the fast paths compute under torch.compile, against the references, forward and
    backward, NCHW and channels_last, at the tolerances above (inductor itself is checked in
    tests/test_compile.py)."""
    torch.manual_seed(0)
    cases = [(TemporalShift(4), 64), (TemporalShift(4, 8, 16), 64), (CMM(32, 4, 4), 32), (CMM(32, 4, 4, stride=2), 32),
             (STHConv(16, 12, 2, 4), 16), (_Diff(1), 16), (_Diff(-1), 16)]
    for channelwise in (True, False):
        for k in (3, 5):
            m = CSTM(16, 4, channelwise=channelwise, kernel_size=k)
            nn.init.normal_(m.conv.weight)
            cases.append((m, 16))
    for m, c in cases:
        for x in _inputs(c=c):
            _assert_same(m, x, bf16)
    m = CSTM(8, 2, kernel_size=5)                      # T=2 < kernel 5
    nn.init.normal_(m.conv.weight)
    _assert_same(m, torch.randn(6, 8, 3, 3), bf16)


def test_tin_fractional_shift_compile_form(monkeypatch):
    """TIN's interpolated shift: the slice-free sum torch.compile runs equals the eager one,
    values and gradients (offsets included)."""
    from stm_lib.models import successors

    torch.manual_seed(0)
    x = torch.randn(2, 5, 4, 3, 3)
    offset = (torch.rand(2, 4) * 4 - 2)

    def run(compiling):
        monkeypatch.setattr(successors, "_compiling", lambda: compiling)
        xi, oi = x.clone().requires_grad_(), offset.clone().requires_grad_()
        y = successors.fractional_shift(xi, oi)
        y.backward(torch.cos(torch.arange(y.numel(), dtype=y.dtype)).view_as(y))
        return y.detach(), xi.grad, oi.grad

    for a, b in zip(run(True), run(False)):
        _close(a, b)
