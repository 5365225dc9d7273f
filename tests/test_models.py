"""Models against independent truths: torchvision's ResNet-50, hand-computed tensors, the paper."""
import pytest
import torch
import torch.nn.functional as F
import torchvision

from stm_lib.config import ModelConfig
from stm_lib.models import build_model, list_models, load_imagenet
from stm_lib.models.temporal import CMM, CSTM, TemporalShift

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def tv_resnet():
    torch.manual_seed(0)
    m = torchvision.models.resnet50(weights=None).eval()
    # Non-trivial BN statistics so that a wrong running-stat copy would show.
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    return m


def test_tsn_equals_torchvision_per_frame_average(tv_resnet, tmp_path):
    path = tmp_path / "r50.pth"
    torch.save(tv_resnet.state_dict(), path)
    model = build_model(ModelConfig(name="tsn", frames=3, num_classes=1000, pretrained=str(path))).eval()
    rep = model.load_report
    assert not rep.new and not rep.skipped and not rep.unexpected
    x = torch.randn(2, 3, 3, 64, 64)
    with torch.no_grad():
        ours = model(x)
        ref = torch.stack([tv_resnet(x[:, t]) for t in range(3)], 1).mean(1)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_imagenet_into_stm_reports_new_keys(tv_resnet):
    sd = {"module." + k: v for k, v in tv_resnet.state_dict().items()}   # DataParallel-style prefix
    model = build_model(name="stm", num_classes=174, frames=4)
    rep = load_imagenet(model, sd)
    assert rep.skipped == ["fc.bias", "fc.weight"]            # 1000 -> 174 classes
    assert all(".cstm." in k or ".cmm." in k or k.startswith("fc.") for k in rep.new)
    assert any(".cmm.reduce" in k for k in rep.new) and any(".cstm.conv" in k for k in rep.new)
    assert "layer3.2.conv2.weight" in rep.loaded
    torch.testing.assert_close(model.state_dict()["layer3.2.conv2.weight"], tv_resnet.state_dict()["layer3.2.conv2.weight"])
    # The paper's init survives loading: CSTM still a shift.
    w = model.layer1[0].cstm.conv.weight.view(64, 3)
    assert w[0].tolist() == [1, 0, 0] and w[-1].tolist() == [0, 0, 1] and w[32].tolist() == [0, 1, 0]


def test_pretrained_file_errors(tmp_path, tv_resnet):
    with pytest.raises(FileNotFoundError, match="not found"):
        build_model(name="tsn", pretrained=str(tmp_path / "missing.pth"))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pth"):
        build_model(name="tsn", pretrained=str(bad))
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": tv_resnet.state_dict()}, wrapped)
    with pytest.raises(ValueError, match="width_mult=1"):
        build_model(name="tsn", width_mult=0.5, pretrained=str(wrapped))
    assert len(build_model(name="tsn", pretrained=str(wrapped)).load_report.loaded) > 300


def test_cstm_init_is_quarter_shift():
    frames, c = 5, 8
    x = torch.randn(2 * frames, c, 3, 3)
    x5 = x.view(2, frames, c, 3, 3)
    expected = torch.zeros_like(x5)
    expected[:, 1:, :2] = x5[:, :-1, :2]        # first C/4: [1,0,0] -> G_t = F_{t-1}
    expected[:, :, 2:6] = x5[:, :, 2:6]         # middle C/2: identity
    expected[:, :-1, 6:] = x5[:, 1:, 6:]        # last C/4: [0,0,1] -> G_t = F_{t+1}
    for channelwise in (True, False):
        out = CSTM(c, frames, channelwise=channelwise)(x)
        torch.testing.assert_close(out, expected.view_as(x))


def test_cstm_eq1_with_arbitrary_kernel():
    frames, c = 4, 3
    m = CSTM(c, frames)
    k = torch.randn(c, 3)
    with torch.no_grad():
        m.conv.weight.copy_(k.view(c, 1, 3, 1, 1))
    x = torch.randn(frames, c, 2, 2)
    pad = torch.cat([torch.zeros(1, c, 2, 2), x, torch.zeros(1, c, 2, 2)])
    ref = torch.stack([sum(k[:, i + 1].view(c, 1, 1) * pad[t + 1 + i] for i in (-1, 0, 1)) for t in range(frames)])
    torch.testing.assert_close(m(x), ref)


def test_cmm_eq2_hand_made():
    frames, c, r = 4, 32, 16                       # reduced to 2 channels
    m = CMM(c, frames, reduction=r).eval()
    sel = torch.zeros(2, c, 1, 1)
    sel[0, 3] = sel[1, 7] = 1.0                    # reduce: pick channels 3 and 7
    kern = torch.randn(2, 1, 3, 3)
    with torch.no_grad():
        m.reduce.weight.copy_(sel)
        m.motion.weight.copy_(kern)
        m.restore.weight.zero_()
        m.restore.weight[0, 0] = 1.0               # restore: out channel 0 <- motion channel 0
        m.restore.weight[5, 1] = 2.0               # out channel 5 <- 2 * motion channel 1
    x = torch.randn(frames, c, 5, 5)               # one video of 4 frames
    out = m(x)
    feat = x[:, [3, 7]]                             # BN at init in eval = identity (mean 0, var 1)
    feat = feat / torch.sqrt(torch.tensor(1 + m.bn.eps))
    for t in range(frames - 1):
        h = F.conv2d(feat[t + 1:t + 2], kern, padding=1, groups=2)[0] - feat[t]
        torch.testing.assert_close(out[t, 0], h[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out[t, 5], 2 * h[1], rtol=1e-5, atol=1e-5)
    assert torch.count_nonzero(out[frames - 1]) == 0      # zero motion for the last step
    assert torch.count_nonzero(out[:, [1, 2, 4, 6]]) == 0


def test_cmm_stride2_pools_after_restore():
    """Section 3.2 + our cost reading: in a stride-2 block CMM's restore conv runs at full
    resolution and the 2x2 max-pool comes after it (this order gives the paper's 33.3G). Both
    orders computed by hand from the module's own weights; max-pool and a 1x1 conv do not
    commute, so only the right one matches."""
    torch.manual_seed(0)
    frames, c = 2, 32
    m = CMM(c, frames, stride=2).eval()
    with torch.no_grad():                                   # non-trivial BN so it must be applied
        m.bn.running_mean.uniform_(-0.5, 0.5)
        m.bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2 * frames, c, 5, 5)                   # odd side: ceil_mode, as a stride-2 3x3 conv
    with torch.no_grad():
        f = F.batch_norm(F.conv2d(x, m.reduce.weight), m.bn.running_mean, m.bn.running_var,
                         m.bn.weight, m.bn.bias, eps=m.bn.eps)
        f5 = f.view(2, frames, -1, 5, 5)
        h = torch.zeros_like(f5)                           # Eq. 2; the last step stays zero
        h[:, 0] = F.conv2d(f5[:, 1], m.motion.weight, padding=1, groups=f.shape[1]) - f5[:, 0]
        h = h.flatten(0, 1)
        restore_then_pool = F.max_pool2d(F.conv2d(h, m.restore.weight), 2, ceil_mode=True)
        pool_then_restore = F.conv2d(F.max_pool2d(h, 2, ceil_mode=True), m.restore.weight)
        out = m(x)
    assert out.shape == (4, 32, 3, 3)                      # matches a stride-2 3x3 conv (5 -> 3)
    torch.testing.assert_close(out, restore_then_pool, rtol=1e-5, atol=1e-5)
    assert (out - pool_then_restore).abs().max() > 0.1
    assert m(torch.randn(4, 32, 8, 8)).shape == (4, 32, 4, 4)


def test_temporal_shift_tsm():
    x = torch.arange(3 * 8, dtype=torch.float).view(3, 8, 1, 1).repeat(1, 1, 2, 2)  # T=3, C=8, value = 8t+c
    out = TemporalShift(3, fold_div=8)(x)
    assert out[0, 0, 0, 0] == x[1, 0, 0, 0] and out[2, 0, 0, 0] == 0          # channel 0 from t+1
    assert out[1, 1, 0, 0] == x[0, 1, 0, 0] and out[0, 1, 0, 0] == 0          # channel 1 from t-1
    torch.testing.assert_close(out[:, 2:], x[:, 2:])


def test_stsm_spatial_shift():
    x = torch.randn(2, 64, 4, 4)
    out = TemporalShift(2, fold_div=8, spatial_fold_div=32)(x)   # channels 16,17: up; 18,19: down; ...
    torch.testing.assert_close(out[:, 16, :-1], x[:, 16, 1:])
    assert torch.count_nonzero(out[:, 16, -1]) == 0
    torch.testing.assert_close(out[:, 18, 1:], x[:, 18, :-1])
    torch.testing.assert_close(out[:, 24:], x[:, 24:])


@pytest.mark.parametrize("name", list_models())
def test_every_variant_forward_backward(name):
    """Every trainable parameter gets a non-zero gradient from one cross-entropy step. None may
    legitimately stay at zero: no residual BN is zero-initialised, CMM's restore conv is random
    (section 4.2) and every branch (CSTM, CMM, shifts, both ST-ResNet streams) reaches the loss."""
    torch.manual_seed(0)
    model = build_model(name=name, frames=4, num_classes=7, width_mult=0.25)
    x = torch.randn(2, 4, model.in_channels, 32, 32)          # 3, or 3 + 20 flow channels
    out = model(x)
    assert out.shape == (2, 7)
    F.cross_entropy(out, torch.tensor([1, 5])).backward()
    dead = [n for n, p in model.named_parameters()
            if p.requires_grad and (p.grad is None or not torch.any(p.grad != 0))]
    assert dead == [], f"{name}: parameters without gradient: {dead[:8]}"


def test_sth_param_count_is_hand_computed():
    """STH (seed: temporal share r = 1/4) at 1 class: 21,623,873 parameters, by hand:
    ResNet-50 backbone 23,508,032 + fc (2048 + 1) = 23,510,081 (TSN). STHConv gives r of each
    3x3 conv's input channels a 3x1x1 kernel (3 weights instead of 9), removing 6r/9 of those
    weights: the 16 3x3 convs hold 9 * (3*64^2 + 4*128^2 + 6*256^2 + 3*512^2) = 11,317,248, of
    which 6/36 = 1,886,208 go. 23,510,081 - 1,886,208 = 21,623,873."""
    from stm_lib.profile import count_params

    convs3x3 = 9 * (3 * 64 ** 2 + 4 * 128 ** 2 + 6 * 256 ** 2 + 3 * 512 ** 2)
    assert convs3x3 == 11_317_248
    tsn = 23_508_032 + 2048 + 1
    assert count_params(build_model(name="tsn", num_classes=1)) == tsn
    assert count_params(build_model(name="sth", num_classes=1)) == tsn - convs3x3 * 6 // 36 == 21_623_873


def test_stage_variants_place_blocks():
    def stm_blocks(name):
        m = build_model(name=name, frames=4, num_classes=3, width_mult=0.25)
        return [n for n, mod in m.named_modules() if hasattr(mod, "cmm") and mod.cmm is not None and mod.cstm is not None]
    assert stm_blocks("stm-stage2") == ["layer1.0"]
    assert stm_blocks("stm-stage5") == ["layer4.0"]
    assert stm_blocks("stm-first4") == ["layer1.0", "layer2.0", "layer3.0", "layer4.0"]
    assert len(stm_blocks("stm")) == 16


def test_bad_inputs():
    m = build_model(name="stm", frames=4, num_classes=3, width_mult=0.25)
    with pytest.raises(ValueError, match="frames=4"):
        m(torch.randn(1, 3, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\(N, T, 3, H, W\)"):
        m(torch.randn(4, 3, 32, 32))
    with pytest.raises(KeyError, match="unknown model"):
        build_model(name="resnet9000")
    with pytest.raises(ValueError, match="num_classes"):
        build_model(name="tsn", num_classes=0)


@pytest.mark.parametrize("name", list_models())
def test_imagenet_loads_into_every_variant(name, tv_resnet):
    model = build_model(name=name, frames=8, num_classes=174)
    rep = load_imagenet(model, tv_resnet.state_dict())
    resnet_keys = [k for k in tv_resnet.state_dict() if not k.startswith("fc.")]
    if name == "st-resnet":   # both streams get every tensor; checked in detail below
        assert not rep.unexpected and len(rep.loaded) == 2 * len(resnet_keys)
        assert len(rep.skipped) == 4
        return
    if name == "sth":
        # STH replaces every 3x3 conv by a hybrid conv: those 16 ImageNet tensors have no home.
        assert sorted(rep.unexpected) == sorted(k for k in resnet_keys if k.endswith(".conv2.weight"))
        assert len(rep.loaded) == len(resnet_keys) - 16
    else:
        assert not rep.unexpected and len(rep.loaded) == len(resnet_keys)
    assert rep.skipped == ["fc.bias", "fc.weight"]


# ---- Spatiotemporal ResNet (seed 003) -----------------------------------------------------------

def test_temporal_conv_is_temporal_average_of_1x1():
    """ST-ResNet's 1x1x3 conv inflated from W: out[t] = W (x[t-1] + x[t] + x[t+1]) / 3, zeros
    beyond the clip (hand-computed with a plain 1x1 conv)."""
    from stm_lib.models.relatives import TemporalConv

    torch.manual_seed(0)
    w = torch.randn(5, 4, 1, 1)
    tc = TemporalConv(4, 5, frames=3)
    tc.inflate_(w)
    x = torch.randn(2 * 3, 4, 6, 6)
    x5 = x.view(2, 3, 4, 6, 6)
    pad = torch.cat([torch.zeros_like(x5[:, :1]), x5, torch.zeros_like(x5[:, :1])], dim=1)
    avg = (pad[:, :-2] + pad[:, 1:-1] + pad[:, 2:]) / 3
    expected = F.conv2d(avg.flatten(0, 1), w)
    torch.testing.assert_close(tc(x), expected, rtol=1e-5, atol=1e-5)


def test_st_resnet_cost_is_hand_computed():
    """Against hand counts: the four res{2..5}b 1x1 convs (in -> in/4) triple their weights;
    at 224 px those convs cost in*in/4 * HW = 102.76M multiply-adds per frame in every stage.
    The two-stream model is two such networks plus 17 more stem input channels (20 flow vs 3
    RGB), with its fc run once per clip instead of once per frame."""
    from stm_lib.profile import count_flops, count_params

    T = 2                                                 # FLOPs are linear in T: 2 frames prove it as 8 would
    tsn, rgb, two = (build_model(name=n, frames=T, num_classes=101) for n in ("tsn", "st-resnet-rgb", "st-resnet"))
    extra = [(256, 56), (512, 28), (1024, 14), (2048, 7)]               # (block input channels, side)
    assert count_params(rgb) - count_params(tsn) == sum(2 * c * c // 4 for c, _ in extra)
    assert count_params(two) == 2 * count_params(rgb) + 17 * 64 * 7 * 7
    f_tsn, f_rgb, f_two = (count_flops(m, T) for m in (tsn, rgb, two))
    assert f_rgb - f_tsn == T * sum(2 * c * c // 4 * s * s for c, s in extra) == T * 4 * 102_760_448
    fc_per_frame = T * 2048 * 101
    assert f_two == 2 * (f_rgb - fc_per_frame + 2048 * 101) + T * 17 * 64 * 49 * 112 * 112


def test_st_resnet_imagenet_inflation(tv_resnet):
    """res{2..5}b conv1 get [W/3, W/3, W/3]; the flow stem gets the RGB mean repeated 20 times."""
    sd = tv_resnet.state_dict()
    model = build_model(name="st-resnet", frames=4, num_classes=10)
    rep = load_imagenet(model, sd)
    convs = [f"layer{i}.1.conv1.weight" for i in range(1, 5)]
    assert rep.inflated == sorted([f"appearance.{k}" for k in convs] + [f"motion.{k}" for k in convs]
                                  + ["motion.conv1.weight"])
    for k in convs:
        w = model.appearance.state_dict()[k]
        assert w.shape[2] == 3
        for t in range(3):
            torch.testing.assert_close(w[:, :, t], sd[k] / 3)
    stem = model.motion.conv1.weight
    assert stem.shape[1] == 20
    torch.testing.assert_close(stem, sd["conv1.weight"].mean(1, keepdim=True).expand_as(stem))
    torch.testing.assert_close(model.appearance.conv1.weight, sd["conv1.weight"])


def test_motion_is_added_to_the_appearance_residual_branch_only():
    """ST-ResNet's connection: x_a' = x_a + F(x_a + x_m); checked block-wise against the formula,
    and end to end: with the connections the appearance stream's output depends on the flow."""
    from stm_lib.models.resnet import Bottleneck

    torch.manual_seed(0)
    blk = Bottleneck(16, 4, 1, frames=2).eval()
    x, z = torch.randn(2, 16, 5, 5), torch.randn(2, 16, 5, 5)
    branch = blk.bn3(blk.conv3(blk.relu(blk.bn2(blk.conv2(blk.relu(blk.bn1(blk.conv1(x + z))))))))
    torch.testing.assert_close(blk(x, inject=z), torch.relu(branch + x))

    model = build_model(name="st-resnet", frames=4, num_classes=3, width_mult=0.25).eval()
    rgb = torch.randn(1, 4, 3, 32, 32)
    flows = torch.randn(2, 1, 4, 20, 32, 32)
    outs = [model.streams(torch.cat([rgb, f], dim=2))[0] for f in flows]
    assert not torch.allclose(outs[0], outs[1])          # appearance half changes with the flow
    model.connect = ()                                   # two independent streams
    outs = [model.streams(torch.cat([rgb, f], dim=2))[0] for f in flows]
    torch.testing.assert_close(outs[0], outs[1])
    assert model.appearance.conv1.weight.shape[1] == 3
    with pytest.raises(ValueError, match="23, H, W"):
        model(rgb)
