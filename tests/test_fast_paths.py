"""Every fast path of the temporal modules against its plain reference (`reference_forward`):
same outputs and the same gradients (input and every weight) on random inputs at fp32
tolerance, in NCHW and channels_last, and the FLOP count / state dict unchanged."""
import pytest
import torch
import torch.nn as nn

from stm_lib.models import build_model
from stm_lib.models.resnet import Bottleneck, BlockSpec
from stm_lib.models.temporal import CMM, CSTM, TemporalShift, _max_pool_2x2

def _close(actual, expected, what=""):
    """fp32 tolerance scaled to the tensor: a weight gradient sums thousands of products, so its
    rounding error (either path's, against float64) grows with its largest entry."""
    atol = 1e-5 * max(1.0, expected.abs().max().item())
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=atol, msg=lambda m: f"{what}: {m}")


def _run(module: nn.Module, x: torch.Tensor, fast: bool, grad_out: torch.Tensor | None = None):
    module.fast = fast
    module.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    y = module(x)
    g = torch.randn_like(y) if grad_out is None else grad_out
    y.backward(g)
    grads = {n: p.grad.clone() for n, p in module.named_parameters()}
    return y.detach(), x.grad.clone(), grads, g


def _assert_same(module: nn.Module, x: torch.Tensor):
    y_ref, gx_ref, gw_ref, g = _run(module, x, fast=False)
    y, gx, gw, _ = _run(module, x, fast=True, grad_out=g)
    _close(y, y_ref, "output")
    _close(gx, gx_ref, "grad of input")
    assert gw.keys() == gw_ref.keys()
    for k in gw:
        _close(gw[k], gw_ref[k], f"grad of {k}")


def _inputs(n=2, t=4, c=16, h=6, w=6):
    x = torch.randn(n * t, c, h, w)
    return [x, x.contiguous(memory_format=torch.channels_last)]


@pytest.mark.parametrize("channelwise", [True, False])
@pytest.mark.parametrize("kernel_size", [3, 5])
def test_cstm_fast_equals_reference(channelwise, kernel_size):
    torch.manual_seed(0)
    m = CSTM(16, 4, channelwise=channelwise, kernel_size=kernel_size)
    nn.init.normal_(m.conv.weight)          # any kernel, not just the shift init
    for x in _inputs():
        _assert_same(m, x)


def test_cstm_fast_short_clip():
    # T=2 < kernel 5: taps that reach past both ends contribute nothing (zero padding)
    torch.manual_seed(0)
    m = CSTM(8, 2, kernel_size=5)
    nn.init.normal_(m.conv.weight)
    _assert_same(m, torch.randn(6, 8, 3, 3))


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [6, 5])         # 5: odd map, ceil-mode pooling falls back
def test_cmm_fast_equals_reference(stride, size):
    torch.manual_seed(0)
    m = CMM(32, 4, reduction=4, stride=stride)
    nn.init.normal_(m.bn.weight)
    nn.init.normal_(m.bn.bias)
    for x in _inputs(c=32, h=size, w=size):
        _assert_same(m.train(), x)                # batch statistics
        _assert_same(m.eval(), x)                 # running statistics


@pytest.mark.parametrize("spatial", [0, 16])
def test_shift_fast_equals_reference(spatial):
    torch.manual_seed(0)
    m = TemporalShift(4, 8, spatial)
    for x in _inputs(c=64):
        _assert_same(m, x)


def test_fast_paths_keep_channels_last():
    x = _inputs(c=32)[1]
    for m in (CSTM(32, 4), CSTM(32, 4, channelwise=False), CMM(32, 4, 4), CMM(32, 4, 4, stride=2),
              TemporalShift(4)):
        assert m(x).is_contiguous(memory_format=torch.channels_last), type(m).__name__


def test_max_pool_2x2_values_by_hand():
    x = torch.tensor([[1., 5., 2., 0.], [3., 4., 9., 8.], [7., 6., 0., 1.], [2., 2., 3., -1.]]).view(1, 1, 4, 4)
    torch.testing.assert_close(_max_pool_2x2(x), torch.tensor([[5., 9.], [7., 3.]]).view(1, 1, 2, 2))


@pytest.mark.parametrize("spec", [BlockSpec(cstm="channelwise", cmm=True), BlockSpec(cstm="ordinary", cmm=True),
                                  BlockSpec(cstm="channelwise", cmm=True, fusion="concat"),
                                  BlockSpec(shift="stsm")])
@pytest.mark.parametrize("stride", [1, 2])
def test_bottleneck_fast_equals_reference(spec, stride):
    """Whole STM blocks (and the stride-2 first block of a stage) with every module switched."""
    torch.manual_seed(0)
    block = Bottleneck(32, 16, stride, frames=4, spec=spec)
    for mod in block.modules():               # non-trivial CSTM kernels and BN affine
        if isinstance(mod, CSTM):
            nn.init.normal_(mod.conv.weight, std=0.5)
    modules = [m for m in block.modules() if hasattr(m, "reference_forward")]
    x = torch.randn(8, 32, 8, 8)

    def run(fast):
        for m in modules:
            m.fast = fast
        block.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_()
        y = block(xi)
        y.backward(torch.ones_like(y) + y.detach())
        return y.detach(), xi.grad, {n: p.grad for n, p in block.named_parameters()}

    y0, gx0, gw0 = run(False)
    y1, gx1, gw1 = run(True)
    _close(y1, y0, "output")
    _close(gx1, gx0, "grad of input")
    for k in gw0:
        _close(gw1[k], gw0[k], f"grad of {k}")


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
