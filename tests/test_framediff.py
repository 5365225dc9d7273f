"""The frame-difference reference model (proxy calibration, issue 10.6): its stem sees exactly
[frame t, frame t+1 - frame t] for the T-1 neighbouring pairs, so unlike TSN it tells a clip
from the same clip played backwards."""
from __future__ import annotations

import torch

from stm_lib.models import build_model


def test_stem_sees_frame_and_next_frame_difference():
    torch.manual_seed(0)
    m = build_model(name="tsn-diff", frames=4, num_classes=5, width_mult=0.25).eval()
    x = torch.randn(2, 4, 3, 32, 32)
    seen = {}
    m.conv1.register_forward_pre_hook(lambda mod, inp: seen.update(x=inp[0].clone()))
    m(x)
    want = torch.empty(2, 3, 6, 32, 32)  # by hand, pair by pair
    for n in range(2):
        for t in range(3):
            want[n, t, :3] = x[n, t]
            want[n, t, 3:] = x[n, t + 1] - x[n, t]
    torch.testing.assert_close(seen["x"], want.flatten(0, 1), rtol=0, atol=0)
    assert m.in_channels == 3 and m.conv1.in_channels == 6


def test_sees_time_order_where_tsn_cannot():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 3, 32, 32)
    back = x.flip(1)
    tsn = build_model(name="tsn", frames=4, num_classes=5, width_mult=0.25).eval()
    diff = build_model(name="tsn-diff", frames=4, num_classes=5, width_mult=0.25).eval()
    torch.nn.init.normal_(tsn.fc.weight)  # fc starts near zero (N(0, 0.001)): make logits differ visibly
    torch.nn.init.normal_(diff.fc.weight)
    with torch.no_grad():
        torch.testing.assert_close(tsn(x), tsn(back))  # averaging over frames: order-blind
        assert (diff(x) - diff(back)).abs().max() > 1e-3
