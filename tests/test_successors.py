"""STM's successors (models/successors.py): each core operation against a hand computation or an
independent implementation on small tensors, every registry variant through a training step at
a tiny size, ImageNet initialisation, and the cost at 8 frames / 224 px / 174 classes pinned and
compared with the published figures (`SUCCESSOR_PAPER`: each difference explained and checked)."""
import functools
import math
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from stm_lib.cli import main
from stm_lib.config import ModelConfig
from stm_lib.models import build_model, list_models, load_imagenet
from stm_lib.models.successors import (MTA, MULTIPLY_ADD_OPS, SUCCESSOR_PAPER, TAM, LongTermTDM, MotionExcitation,
                                       ShortTermTDM, TemporalDWConv, TemporalInterlace, fractional_shift)
from stm_lib.profile import count_params, profile_model

torch.set_num_threads(1)
SUCCESSORS = ["tea", "tdn", "tam", "tin"]


def _shift_time(x5: torch.Tensor, s: int) -> torch.Tensor:
    """out[:, t] = x5[:, t - s], zero where t - s leaves the clip: torch.roll with zero fill."""
    out = torch.roll(x5, s, dims=1)
    if s > 0:
        out[:, :s] = 0
    elif s < 0:
        out[:, s:] = 0
    return out


def _tconv(x5: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Channel-wise temporal conv by hand: y[t] = w0 x[t-1] + w1 x[t] + w2 x[t+1], w: (C, 3)."""
    taps = [_shift_time(x5, 1), x5, _shift_time(x5, -1)]
    return sum(w[:, i].view(1, 1, -1, 1, 1) * taps[i] for i in range(3))


# ---- shared pieces ------------------------------------------------------------------------------

def test_temporal_dw_conv_inits_by_hand():
    """Identity (TEA's "fixed" mode) is a no-op; fold_div=d shifts C/d from t+1 and C/d from t-1."""
    t, c = 4, 16
    x = torch.randn(2 * t, c, 3, 3)
    x5 = x.view(2, t, c, 3, 3)
    torch.testing.assert_close(TemporalDWConv(c, t)(x), x)
    for d in (2, 8):
        f = c // d
        want = x5.clone()
        want[:, :, :f] = _shift_time(x5[:, :, :f], -1)          # frame t reads t+1
        want[:, :, f:2 * f] = _shift_time(x5[:, :, f:2 * f], 1)  # frame t reads t-1
        torch.testing.assert_close(TemporalDWConv(c, t, fold_div=d)(x), want.view_as(x))


# ---- TEA ----------------------------------------------------------------------------------------

def test_me_difference_is_zero_for_the_last_frame_and_excites_by_hand():
    torch.manual_seed(0)
    t, c = 4, 32                                             # C/16 = 2 motion channels
    m = MotionExcitation(c, t).eval()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-0.5, 0.5)
        m.bn_expand.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2 * t, c, 5, 5)
    with torch.no_grad():
        f = m.bn(F.conv2d(x, m.reduce.weight)).view(2, t, 2, 5, 5)
        k = F.conv2d(f.flatten(0, 1), m.trans.weight, padding=1, groups=2).view(2, t, 2, 5, 5)
        motion = m.motion(x).view(2, t, 2, 5, 5)
        for s in range(t - 1):                              # M(t) = conv_trans * X^r(t+1) - X^r(t)
            torch.testing.assert_close(motion[:, s], k[:, s + 1] - f[:, s])
        assert torch.count_nonzero(motion[:, -1]) == 0      # and zero for the last frame
        a = torch.sigmoid(m.bn_expand(F.conv2d(motion.flatten(0, 1).mean((2, 3), keepdim=True), m.expand.weight)))
        torch.testing.assert_close(m(x), x + x * (a - 0.5))  # the authors' sigmoid - 0.5


def _res2net_by_hand(x, weight, temporal_w, bns, t, stride, first):
    """MTA written out: per group a hand temporal conv, a 3x3 conv, its own BN and ReLU;
    groups 2-3 add the previous group's output unless `first`; group 4 is only shifted (and
    average-pooled when `first`)."""
    g = x.shape[1] // 4
    xs = [p.reshape(-1, t, g, *x.shape[2:]) for p in x.split(g, 1)]
    outs = []
    for i in range(3):
        s = xs[i] if i == 0 or first else xs[i] + outs[-1].view(-1, t, *outs[-1].shape[1:])
        s = _tconv(s, temporal_w[i]).flatten(0, 1)
        outs.append(F.relu(bns[i](F.conv2d(s, weight[i * g:(i + 1) * g], stride=stride, padding=1))))
    last = _tconv(xs[3], temporal_w[3]).flatten(0, 1)
    outs.append(F.avg_pool2d(last, 3, stride, padding=1) if first else last)
    return torch.cat(outs, 1)


@pytest.mark.parametrize("stride,first", [(1, False), (1, True), (2, True)])
def test_mta_equals_res2net_with_separate_batch_norms(stride, first):
    """One BatchNorm2d over the three groups' channels, applied group by group, is exactly three
    BNs: same outputs in training mode and the same running statistics after the step."""
    torch.manual_seed(0)
    t, c, g = 4, 16, 4
    m = MTA(c, t, stride, first).train()
    bn = nn.BatchNorm2d(3 * g).train()
    with torch.no_grad():
        for tc in m.temporal:
            tc.conv.weight.normal_()                          # any kernel, not just the init
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    bns = [nn.BatchNorm2d(g).train() for _ in range(3)]
    for i, b in enumerate(bns):
        b.load_state_dict({k: v[i * g:(i + 1) * g] if v.dim() else v for k, v in bn.state_dict().items()})
    x = torch.randn(2 * t, c, 6, 6)
    temporal_w = [tc.conv.weight.detach().view(g, 3) for tc in m.temporal]
    out = m(x, bn)
    ref = _res2net_by_hand(x, m.weight.detach(), temporal_w, bns, t, stride, first)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert out.shape == (2 * t, c, 6 // stride, 6 // stride)
    for stat in ("running_mean", "running_var"):
        torch.testing.assert_close(getattr(bn, stat), torch.cat([getattr(b, stat) for b in bns]))
    assert bn.num_batches_tracked.item() == 1


def test_mta_init_groups_1_to_3_see_their_own_frame():
    """Identity-initialised temporal convs are no-ops: group 1 of MTA is the plain g -> g conv."""
    torch.manual_seed(0)
    m, bn = MTA(16, 4), nn.BatchNorm2d(12).eval()
    x = torch.randn(8, 16, 5, 5)
    with torch.no_grad():
        y = F.conv2d(x[:, :4], m.weight[:4], padding=1)
        y = F.batch_norm(y, bn.running_mean[:4], bn.running_var[:4], bn.weight[:4], bn.bias[:4], eps=bn.eps)
        torch.testing.assert_close(m(x, bn)[:, :4], F.relu(y))


def test_tea_imagenet_init_takes_the_3x3_kernels_diagonal_blocks():
    """MTA's three g x g convs start from the ImageNet 3x3 conv's first three diagonal blocks and
    bn2 from their channels; every other ResNet-50 tensor loads as is."""
    import torchvision

    torch.manual_seed(0)
    sd = torchvision.models.resnet50(weights=None).state_dict()
    with torch.no_grad():
        sd["layer3.1.bn2.running_var"].uniform_(0.5, 1.5)
    model = build_model(name="tea", frames=4, num_classes=174)
    rep = load_imagenet(model, sd)
    assert not rep.unexpected and rep.skipped == ["fc.bias", "fc.weight"]
    assert len(rep.inflated) == 16 * 5                      # conv2.weight + bn2's 4 tensors, 16 blocks
    w, g = sd["layer3.1.conv2.weight"], 64
    got = model.layer3[1].conv2.weight
    for i in range(3):
        torch.testing.assert_close(got[i * g:(i + 1) * g], w[i * g:(i + 1) * g, i * g:(i + 1) * g])
    torch.testing.assert_close(model.layer3[1].bn2.running_var, sd["layer3.1.bn2.running_var"][:3 * g])
    assert all(".after_conv1." in k or ".conv2.temporal." in k or k.startswith("fc.") for k in rep.new)
    with pytest.raises(ValueError, match="width_mult=1"):    # a narrower ResNet still refuses
        load_imagenet(build_model(name="tsn", width_mult=0.75), sd)


# ---- TDN ----------------------------------------------------------------------------------------

def test_s_tdm_differences_by_hand():
    """Constant in time: zero differences. A ramp x[t] = t: the 4 differences of frames t-2..t+2
    (clamped to the clip, so a repeated end frame gives 0) are 1 where both frames exist."""
    t = 5
    m = ShortTermTDM(t, 3, 8, nn.Identity())
    still = torch.randn(2, 1, 3, 4, 4).expand(2, t, 3, 4, 4).reshape(2 * t, 3, 4, 4)
    assert torch.count_nonzero(m.differences(still)) == 0
    ramp = torch.arange(t, dtype=torch.float).view(1, t, 1, 1, 1).expand(1, t, 3, 2, 2).reshape(t, 3, 2, 2)
    d = m.differences(ramp).view(t, 4, 3, 2, 2)[:, :, 0, 0, 0]
    assert d.tolist() == [[0, 0, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]]


def test_tdn_on_a_still_clip_is_the_frame_stream_scaled():
    """At init (eval), zero differences leave the difference stream at zero (BN without bias,
    ReLU, a plain layer1 of zeros), so the fused stream is alpha * layer1(alpha * stem(x))."""
    torch.manual_seed(0)
    for frames, alpha in ((8, 0.5), (4, 0.75)):             # the authors' fusion weights
        model = build_model(name="tdn", frames=frames, num_classes=3, width_mult=0.25).eval()
        assert model.stdm.alpha == alpha
        x = torch.randn(1, 1, 3, 32, 32).expand(2, frames, 3, 32, 32).flatten(0, 1)
        with torch.no_grad():
            torch.testing.assert_close(model.stdm(x, model.stem, model.layer1),
                                       alpha * model.layer1(alpha * model.stem(x)))


def test_l_tdm_differences_and_attention_by_hand():
    """With an identity transform, D_f(t) = F(t+1) - F(t) (0 at the last frame) and
    D_b(t) = F(t-1) - F(t) (0 at the first); a still clip gives zero differences, zero attention
    (sigmoid(0) - 0.5) at init, and the module is then its learnable shift alone."""
    torch.manual_seed(0)
    t, c = 4, 32
    m = LongTermTDM(c, t).eval()
    with torch.no_grad():
        m.trans.weight.zero_()
        m.trans.weight[:, 0, 1, 1] = 1.0
    x = torch.randn(2 * t, c, 4, 4)
    with torch.no_grad():
        f = m.bn(m.reduce(x)).view(2, t, 2, 4, 4)
        d_f, d_b = (d.view(2, t, 2, 4, 4) for d in m.differences(x))
    torch.testing.assert_close(d_f[:, :-1], f[:, 1:] - f[:, :-1])
    torch.testing.assert_close(d_b[:, 1:], f[:, :-1] - f[:, 1:])
    assert torch.count_nonzero(d_f[:, -1]) == 0 and torch.count_nonzero(d_b[:, 0]) == 0
    still = torch.randn(2, 1, c, 4, 4).expand(2, t, c, 4, 4).reshape(2 * t, c, 4, 4)
    with torch.no_grad():
        assert all(torch.count_nonzero(d) == 0 for d in m.differences(still))
        torch.testing.assert_close(m(still), m.shift(still))
        # the attention from the three scales, written out (no pooling skip at 4x4)
        d = d_f.flatten(0, 1)
        s2 = F.interpolate(m.scale2(F.avg_pool2d(d, 2)), size=(4, 4), mode="nearest")
        torch.testing.assert_close(m.attention(d), torch.sigmoid(m.expand((d + s2 + m.scale1(d)) / 3)) - 0.5)


def test_tdn_imagenet_init_fills_the_difference_stream():
    import torchvision

    torch.manual_seed(0)
    sd = torchvision.models.resnet50(weights=None).state_dict()
    model = build_model(name="tdn", frames=8, num_classes=174)
    rep = load_imagenet(model, sd)
    layer1 = [k for k in sd if k.startswith("layer1.")]
    assert not rep.unexpected and len(rep.loaded) == len(sd) - 2
    assert rep.copied == sorted(["stdm.conv.weight"] + [f"stdm.{k}" for k in layer1])
    torch.testing.assert_close(model.stdm.conv.weight, sd["conv1.weight"].mean(1, keepdim=True).expand(64, 12, 7, 7))
    torch.testing.assert_close(model.stdm.layer1[2].conv2.weight, sd["layer1.2.conv2.weight"])
    assert "stdm.bn.weight" in rep.new and "copied to a second home" in rep.summary()


# ---- TAM ----------------------------------------------------------------------------------------

def test_tam_global_branch_applies_the_predicted_kernel_depthwise():
    """Y(n, c, t) = sum_k K(n, c, k) V(n, c, t+k-1) X(n, t+k-1, c), zero outside the clip, with
    K from G and V from L on the pooled features: an explicit loop over videos, channels, frames."""
    torch.manual_seed(0)
    t, c = 4, 8
    m = TAM(c, t).eval()
    with torch.no_grad():
        for bn in (m.G[1], m.L[1]):
            bn.running_mean.uniform_(-0.2, 0.2)
    x = torch.randn(2 * t, c, 3, 3)
    x5 = x.view(2, t, c, 3, 3)
    with torch.no_grad():
        theta = x5.mean((3, 4)).transpose(1, 2)                      # N, C, T
        kernel = m.G(theta.reshape(-1, t)).view(2, c, 3)
        local = m.L(theta)
        out = m(x).view(2, t, c, 3, 3)
    torch.testing.assert_close(kernel.sum(-1), torch.ones(2, c))     # softmax: a convex kernel
    for n in range(2):
        for ch in range(c):
            for s in range(t):
                want = sum(kernel[n, ch, k] * local[n, ch, s + k - 1] * x5[n, s + k - 1, ch]
                           for k in range(3) if 0 <= s + k - 1 < t)
                torch.testing.assert_close(out[n, s, ch], want, rtol=1e-5, atol=1e-6)


# ---- TIN ----------------------------------------------------------------------------------------

def test_fractional_shift_at_integers_is_a_zero_filled_roll_and_at_halves_a_mean():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 3, 4, 2, 2)                              # N, T, groups, C/group, H, W
    for s in (-2, -1, 0, 1, 2):
        offset = torch.full((2, 3), float(s))
        torch.testing.assert_close(fractional_shift(x, offset), _shift_time(x, s))
    offset = torch.tensor([[0.5, -0.5, 1.5], [0.5, -1.5, -0.5]])
    out = fractional_shift(x, offset)
    for n in range(2):
        for grp in range(3):
            o = offset[n, grp].item()
            lo, hi = math.floor(o), math.floor(o) + 1
            want = (_shift_time(x, lo) + _shift_time(x, hi))[n, :, grp] / 2
            torch.testing.assert_close(out[n, :, grp], want)


def test_fractional_shift_interpolates_linearly_and_its_gradient_is_the_neighbours_difference():
    torch.manual_seed(0)
    x = torch.randn(1, 6, 1, 3)
    o = torch.tensor([[0.3]], requires_grad=True)
    out = fractional_shift(x, o)
    torch.testing.assert_close(out, 0.7 * _shift_time(x, 0) + 0.3 * _shift_time(x, 1))
    out.sum().backward()
    torch.testing.assert_close(o.grad, (_shift_time(x, 1) - x).sum().view(1, 1))


def test_temporal_interlace_by_hand():
    """Offsets forced to (1, -1) -> groups shifted by (1, -1, -1, 1), weights forced to 1: the
    first C/4 channels are four zero-filled rolls, the rest pass through. At the authors' init
    (last FC's bias 0.5108) and zero FC weights the offsets are +-0.5."""
    torch.manual_seed(0)
    t, c = 4, 32                                                   # C/4 = 8: 4 groups of 2
    m = TemporalInterlace(c, t)
    x = torch.randn(2 * t, c, 3, 3)
    x5 = x.view(2, t, c, 3, 3)
    pooled = x5[:, :, :8].mean((3, 4)).transpose(1, 2)
    with torch.no_grad():
        m.offset_fc2.weight.zero_()
        torch.testing.assert_close(m.offsets(pooled), torch.tensor([[0.5, 0.5, -0.5, -0.5]] * 2), atol=1e-4, rtol=0)
        m.offset_fc2.bias.copy_(torch.tensor([math.log(3), -math.log(3)]))     # 4 (sigmoid - 0.5) = +-1
        m.weight_conv.weight.zero_()                                             # 2 sigmoid(0) = 1
        out = m(x).view(2, t, c, 3, 3)
    for grp, s in enumerate((1, -1, -1, 1)):
        sl = slice(2 * grp, 2 * grp + 2)
        torch.testing.assert_close(out[:, :, sl], _shift_time(x5[:, :, sl], s), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out[:, :, 8:], x5[:, :, 8:])


# ---- every variant at a tiny size ----------------------------------------------------------------

@pytest.mark.parametrize("name", SUCCESSORS)
def test_tiny_forward_backward(name):
    torch.manual_seed(0)
    model = build_model(name=name, frames=4, num_classes=7, width_mult=0.25)
    x = torch.randn(2, 4, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    F.cross_entropy(out, torch.tensor([1, 5])).backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert dead == []
    with torch.no_grad():
        assert torch.isfinite(model.eval()(x)).all()
    with pytest.raises(ValueError, match="frames=4"):
        model(torch.randn(1, 3, 3, 32, 32))


def test_listed_by_stm_models(capsys):
    assert set(SUCCESSORS) <= set(list_models())
    assert main(["models"]) == 0
    lines = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines() if ln.strip()}
    assert all(n in lines for n in SUCCESSORS) and "TEA" in lines["tea"] and "TIN" in lines["tin"]


# ---- cost at 8 frames, 224 px, 174 classes ------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _cost(name: str, mta_base_width: int = 0) -> tuple[int, int, int]:
    """(parameters, fvcore FLOPs, fvcore's conv + linear multiply-adds) at 8 x 224 px, 174 classes."""
    from fvcore.nn import FlopCountAnalysis

    block = {"mta_base_width": mta_base_width} if mta_base_width else {}
    model = build_model(ModelConfig(name=name, frames=8, num_classes=174, block=block)).eval()
    fa = FlopCountAnalysis(model, torch.zeros(1, 8, 3, 224, 224))
    fa.unsupported_ops_warnings(False)
    fa.uncalled_modules_warnings(False)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        by_op = fa.by_operator()
    return count_params(model), sum(by_op.values()), sum(v for k, v in by_op.items() if k in MULTIPLY_ADD_OPS)


def mmcv_style_flops(model: nn.Module, frames: int, size: int = 224) -> int:
    """mmcv's `get_flops` rules (mmaction2's metafiles), re-implemented with forward hooks on
    modules: conv multiply-adds + bias adds, linear multiply-adds, BN 2 per element (affine),
    ReLU 1 per output element, pooling 1 per input element; functional calls are not seen."""
    total = 0

    def conv(m, i, o):
        nonlocal total
        total += o.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)
        total += o.numel() if m.bias is not None else 0

    def add(per):
        def hook(m, i, o):
            nonlocal total
            total += per(m, i[0], o)
        return hook

    hooks = {nn.Conv1d: conv, nn.Conv2d: conv, nn.Conv3d: conv,
             nn.Linear: add(lambda m, i, o: i.numel() * o.shape[-1]),
             nn.BatchNorm1d: add(lambda m, i, o: 2 * i.numel()), nn.BatchNorm2d: add(lambda m, i, o: 2 * i.numel()),
             nn.ReLU: add(lambda m, i, o: o.numel()),
             nn.MaxPool2d: add(lambda m, i, o: i.numel()), nn.AvgPool2d: add(lambda m, i, o: i.numel()),
             nn.AdaptiveAvgPool2d: add(lambda m, i, o: i.numel())}
    handles = [m.register_forward_hook(hooks[type(m)]) for m in model.modules() if type(m) in hooks]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, frames, 3, size, size))
    finally:
        for h in handles:
            h.remove()
    return total


def _half_unit(s: str) -> float:
    return 0.5 * 10 ** -len(s.partition(".")[2])


def _matches(value: float, printed: str) -> bool:
    """`value` (in the printed unit) rounds to the printed figure: within half a unit of its last digit."""
    return abs(value - float(printed)) <= _half_unit(printed) + 1e-9


# Registry variants: exact counts of this library, pinned so that any change shows.
PINNED = {  # name: (parameters, fvcore FLOPs)
    "tea": (14_846_066, 21_067_575_296),
    "tdn": (24_382_606, 35_893_882_368),
    "tam": (25_127_246, 32_935_188_224),
    "tin": (23_895_566, 32_878_804_864),
}


@pytest.mark.parametrize("name", SUCCESSORS)
def test_profile_pins(name):
    res = profile_model(name, 8, 174, 224, 1.0)
    assert (res["params"], res["flops"]) == PINNED[name]
    assert _cost(name)[:2] == PINNED[name]                   # the helper below counts the same model


def test_tsn_reference_counts():
    """The plain ResNet-50 (+ 2048 x 174 fc) every difference below is measured against."""
    params, flops, madds = _cost("tsn")
    assert (params, flops, madds) == (23_864_558, 32_878_567_424, 32_699_940_864)
    assert _matches(mmcv_style_flops(build_model(name="tsn", frames=8, num_classes=174), 8) / 1e9, "32.96")  # = TSM's


def test_tea_matches_the_count_on_res2net_widths_and_not_on_resnet50():
    paper = SUCCESSOR_PAPER["tea"]
    params, _, madds = _cost("tea", mta_base_width=26)           # Res2Net-50 26w x 4s, the official backbone
    assert (params, madds) == (24_456_280, 34_537_495_808)
    assert _matches(params / 1e6, paper["params"]) and _matches(madds / 1e9, paper["flops"])
    params, _, madds = _cost("tea")                               # the registry's, on ResNet-50's widths
    assert not _matches(params / 1e6, paper["params"]) and round(madds / 1e9, 2) == 20.89
    # By hand (conv1 widths c): MTA keeps 3 of the 16 g x g blocks of each 3x3 conv, so 13/16 of
    # ResNet-50's 3x3 weights (11,317,248, see test_models) and a quarter of bn2 (c/2) go; ME adds
    # c*c/16 twice, 9c/16 (depthwise) and BNs of c/16 and c (2 each); MTA's temporal convs 4 x 3 x c/4.
    widths = [64] * 3 + [128] * 4 + [256] * 6 + [512] * 3
    me = sum(c * c // 8 + 9 * c // 16 + 2 * c // 16 + 2 * c for c in widths)
    assert params == 23_864_558 - 11_317_248 * 13 // 16 - sum(c // 2 for c in widths) + me + sum(3 * c for c in widths)


def test_tdn_matches_the_count_with_the_released_codes_biases():
    paper = SUCCESSOR_PAPER["tdn"]
    params, _, madds = _cost("tdn")
    model = build_model(name="tdn", frames=8, num_classes=174)
    def convs(net):                                          # the bottlenecks' ResNet convs
        return [b for blk in net.modules() if hasattr(blk, "conv3")
                for b in (blk.conv1, blk.conv2, blk.conv3, *(blk.downsample or [])) if isinstance(b, nn.Conv2d)]

    frame_stream = model.conv1.out_channels + sum(c.out_channels for s in model.stages for c in convs(s))
    difference_stream = sum(c.out_channels for c in convs(model.stdm.layer1))
    unused_conv1 = 3 * 64 * 7 * 7 + 64
    assert (frame_stream, difference_stream, unused_conv1) == (26_560, 1_408, 9_472)
    assert not _matches(params / 1e6, paper["params"])
    assert params + frame_stream + difference_stream + unused_conv1 == 24_420_046
    assert _matches((params + 37_440) / 1e6, paper["params"])
    assert _matches(madds / 1e9, paper["flops"]) and madds == 35_638_744_064


def test_tam_matches_the_count_by_hand():
    """Parameters by hand: per block (conv1 width c) L holds 3c*c/4 + c/4*c = c^2 weights and a
    BN of c/4 (c/2 parameters); G holds T*2T + 2*2T (BN) + 2T*3 = 208 at T = 8. Multiply-adds:
    the published count lacks the functional adaptive conv, 3 * c * T * H * W per block."""
    paper = SUCCESSOR_PAPER["tam"]
    params, _, madds = _cost("tam")
    widths = [64] * 3 + [128] * 4 + [256] * 6 + [512] * 3
    assert params == 23_864_558 + sum(c * c + c // 2 for c in widths) + 16 * 208 == 25_127_246
    assert _matches(params / 1e6, paper["params"])
    sides = ([(64, 56)] * 3 + [(128, 56)] + [(128, 28)] * 3 + [(256, 28)] + [(256, 14)] * 5   # conv1 output
             + [(512, 14)] + [(512, 7)] * 2)                                                    # (c, side)
    adaptive = 3 * 8 * sum(c * s * s for c, s in sides)
    assert adaptive == 45_760_512
    # beside it: L's temporal convs, c * c per frame; G's FCs, T*2T + 2T*3 = 176 per channel and clip
    assert madds - 32_699_940_864 == adaptive + 8 * sum(c * c for c in widths) + sum(176 * c for c in widths)
    assert not _matches(madds / 1e9, paper["flops"]) and _matches((madds - adaptive) / 1e9, paper["flops"])
    mmcv = mmcv_style_flops(build_model(name="tam", frames=8, num_classes=174), 8)
    assert _matches(mmcv / 1e9, "32.97")                           # mmaction2 0.x's figure


def test_tin_matches_mmaction2():
    """Parameters by hand: per block (input channels C) the offset conv C/4*3 + 1, FCs T*T + T and
    T*2 + 2, the weight conv C/4*2*3 + 2: 9C/4 + 93 at T = 8."""
    paper = SUCCESSOR_PAPER["tin"]
    params, flops, _ = _cost("tin")
    inputs = [64, 256, 256, 256, 512, 512, 512, 512, 1024, 1024, 1024, 1024, 1024, 1024, 2048, 2048]
    assert params == 23_864_558 + sum(9 * c // 4 + 93 for c in inputs) == 23_895_566
    assert _matches(params / 1e6, paper["params"])
    assert not _matches(flops / 1e9, paper["flops"])              # fvcore's convention is not mmcv's
    assert _matches(mmcv_style_flops(build_model(name="tin", frames=8, num_classes=174), 8) / 1e9, paper["flops"])


def test_every_successor_has_its_published_cost_and_an_explanation():
    assert sorted(SUCCESSOR_PAPER) == sorted(SUCCESSORS)
    for name, row in SUCCESSOR_PAPER.items():
        assert float(row["params"]) > 20 and float(row["flops"]) > 30 and row["flops_convention"] in ("count", "mmcv")
        assert row["source"] and len(row["why"]) > 80, name
