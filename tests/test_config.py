"""Config plumbing: every field survives the multi-GPU launch (YAML file -> torchrun -> `stm train
--config`), flags cannot drift from the dataclasses, ablation knobs reach the blocks, the init
leaves added modules alone, CMM keeps its channels at proxy width, every model's heads get the fc
lr multiplier, and the paper's full recipe."""
from __future__ import annotations

import dataclasses
import json
import shlex

import pytest
import torch
from torch import nn

from stm_lib.cli import build_parser, main
from stm_lib.config import Config, DataConfig, ModelConfig, TrainConfig, full_recipe, load_yaml
from stm_lib.engine import optim
from stm_lib.engine.cli import _MAP, config_from_args
from stm_lib.engine.distributed import torchrun_command, write_config
from stm_lib.models import build_model, cmm_reduction, describe_widths, list_models, resolved_variant
from stm_lib.models import resnet

SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


def _other(section: str, f: dataclasses.Field, default):
    """A value of field `f`'s type that is not its default (a new field is covered, or this
    fails naming it)."""
    special = {("model", "name"): "stm-concat", ("model", "block"): {"cmm_reduction": 8, "stages": (3, 4)}}
    if (section, f.name) in special:
        return special[(section, f.name)]
    t = f.type
    if isinstance(default, bool) or t == "bool | None":
        return not default
    if isinstance(default, int):
        return default + 3
    if isinstance(default, float) or t == "float | None":
        return (default or 1.0) + 0.125
    if isinstance(default, str) or t == "str | None":
        return f"{default or 'x'}-other"
    if isinstance(default, tuple):
        return (7, 9)
    raise AssertionError(f"{section}.{f.name}: add a non-default value rule for type {t}")


def everything_changed() -> Config:
    d = {}
    for sec, klass in SECTIONS.items():
        base = klass()
        d[sec] = {f.name: _other(sec, f, getattr(base, f.name)) for f in dataclasses.fields(klass)}
    cfg = Config.from_dict(d)
    for sec, klass in SECTIONS.items():
        for f in dataclasses.fields(klass):
            assert getattr(getattr(cfg, sec), f.name) != getattr(klass(), f.name), f"{sec}.{f.name}"
    return cfg


def train_args(argv: list[str]):
    return build_parser().parse_args(argv)


def test_every_config_field_is_a_train_flag():
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["train"]
    # not Config fields: --config names the file; --resume-or-start is --resume that may also start
    dests = {a.dest for a in sub._actions} - {"help", "config", "resume_or_start"}
    fields = {(s, f.name) for s, k in SECTIONS.items() for f in dataclasses.fields(k)}
    assert set(_MAP.values()) == fields
    assert dests == set(_MAP), f"flags without a field: {dests - set(_MAP)}; fields without a flag: {set(_MAP) - dests}"


def test_every_field_survives_the_torchrun_launch(tmp_path):
    notebook = {"model": {"dropout": 0.0, "block": {"fusion": "sum"}}, "train": {"fc_lr_mult": 1.0}}
    cfg = everything_changed().merge(notebook)
    assert cfg.model.dropout == 0.0 and cfg.model.block == {"cmm_reduction": 8, "stages": (3, 4), "fusion": "sum"}
    line = torchrun_command(cfg, 8, tmp_path / "run.yaml")
    argv = shlex.split(line)
    assert argv[:6] == ["torchrun", "--nproc_per_node", "8", "-m", "stm_lib.cli", "train"]
    back = config_from_args(train_args(argv[5:]))
    assert back == cfg
    assert load_yaml(tmp_path / "run.yaml") == cfg
    assert not list(tmp_path.glob("*.tmp*"))        # written atomically, nothing left behind
    # the same through write_config + an explicit `stm train --config`, with the defaults config
    write_config(Config(), tmp_path / "d.yaml")
    assert config_from_args(train_args(["train", "--config", str(tmp_path / "d.yaml")])) == Config()


def test_flags_override_the_config_file(tmp_path):
    cfg = Config().merge({"model": {"block": {"cmm_reduction": 8, "fusion": "concat"}}, "train": {"epochs": 20}})
    write_config(cfg, tmp_path / "c.yaml")
    c = config_from_args(train_args(["train", "--config", str(tmp_path / "c.yaml"), "--epochs", "3",
                                     "--block", "fusion=sum", "--block", "stages=[4]"]))
    assert c.train.epochs == 3 and c.train.lr_steps == cfg.train.lr_steps   # the file's steps stay
    assert c.model.block == {"cmm_reduction": 8, "fusion": "sum", "stages": (4,)}


def test_bad_knobs_are_one_clear_line(tmp_path, capsys):
    assert main(["train", "--block", "cmm_reduktion=8", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cmm_reduktion" in err[0]
    y = tmp_path / "c.yaml"
    y.write_text("model:\n  block: {cmm_reduction: '8'}\n")
    assert main(["train", "--config", str(y), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.block.cmm_reduction" in err[0] and "'8'" in err[0]
    y.write_text("model:\n  block: {fusion: concatenate}\n")
    assert main(["train", "--config", str(y)]) == 2
    assert "fusion" in capsys.readouterr().err
    y.write_text("model:\n  name: stm\n frames: [\n")
    assert main(["train", "--config", str(y)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{y}:" in err[0]
    assert not (tmp_path / "r").exists()


def test_block_overrides_reach_the_blocks():
    m = build_model(name="stm", frames=4, num_classes=3, width_mult=0.25,
                    block={"cmm_reduction": 8, "fusion": "concat", "where": "first", "stages": [3, 5]})
    carrying = [(s, b) for s, layer in enumerate(m.stages, 2) for b, blk in enumerate(layer) if blk.cmm is not None]
    assert carrying == [(3, 0), (5, 0)]
    blk = m.layer2[0]
    assert blk.fuse is not None and blk.cstm is not None
    assert blk.cmm.reduce.out_channels == 128 // 8          # full-width channels / r, kept at width 0.25
    rec = resolved_variant(ModelConfig(name="stm", width_mult=0.25, block={"cmm_reduction": 8, "stages": [3, 5]}))
    assert rec["spec"]["cmm_reduction"] == 8 and rec["spec"]["cstm"] == "channelwise" and rec["cmm_reduction_used"] == 2
    assert rec["stages"] == [3, 5] and rec["where"] == "all" and rec["overrides"]["stages"] == [3, 5]
    json.dumps(rec)
    # a plain variant with a module knob only is still plain (any T accepted)
    tsn = build_model(name="tsn", frames=4, num_classes=3, width_mult=0.25, block={"cmm_reduction": 4})
    assert not tsn.temporal


def test_cmm_keeps_its_full_width_channels():
    full = [r["cmm_channels"] for r in describe_widths(ModelConfig(name="stm", width_mult=1.0))]
    assert full == [4, 8, 16, 32]                           # 64/16, 128/16, 256/16, 512/16
    proxy = describe_widths(ModelConfig(name="stm", width_mult=0.25))
    assert [r["cmm_channels"] for r in proxy] == full
    assert [r["width"] for r in proxy] == [16, 32, 64, 128] and [r["out_channels"] for r in proxy] == [64, 128, 256, 512]
    assert [r["cmm_blocks"] for r in proxy] == [3, 4, 6, 3]
    assert [r["cmm_blocks"] for r in describe_widths(ModelConfig(name="stm-stage4", width_mult=0.25))] == [0, 0, 1, 0]
    assert cmm_reduction(16, 1.0) == 16 and cmm_reduction(16, 0.25) == 4 and cmm_reduction(2, 0.25) == 1
    m = build_model(name="cmm", frames=4, num_classes=3, width_mult=0.5)
    assert [layer[0].cmm.reduce.out_channels for layer in m.stages] == full


class ToyTemporal(nn.Module):
    """A new temporal module with its own init: every weight 0.5."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.conv.weight, 0.5)

    def forward(self, x):
        return x + self.conv(x)


def test_a_new_module_keeps_its_own_init(monkeypatch):
    orig = resnet.Bottleneck.__init__

    def with_toy(self, inplanes, planes, *a, **k):         # a researcher adds a module to the block
        orig(self, inplanes, planes, *a, **k)
        self.tam = ToyTemporal(planes)

    monkeypatch.setattr(resnet.Bottleneck, "__init__", with_toy)

    class ToySTH(ToyTemporal):                             # ... or replaces the 3x3 conv with one
        def __init__(self, in_ch, out_ch, stride, frames, share):
            super().__init__(in_ch)

    monkeypatch.setattr(resnet, "STHConv", ToySTH)
    m = build_model(name="sth", frames=4, num_classes=3, width_mult=0.25)
    blocks = [blk for layer in m.stages for blk in layer]
    assert all(torch.all(blk.tam.conv.weight == 0.5) for blk in blocks)
    assert all(torch.all(blk.conv2.conv.weight == 0.5) for blk in blocks)
    assert m.layer1[0].conv1.weight.std() > 0.1             # the ResNet layers still get kaiming


def test_init_of_each_part_is_the_papers():
    """ResNet convs: kaiming normal, fan_out (std sqrt(2/fan_out)); CMM and the concat fusion conv:
    PyTorch's default (uniform within 1/sqrt(fan_in)); CSTM: the quarter shift; fc ~ N(0, 0.001)."""
    torch.manual_seed(0)
    m = build_model(name="stm-concat", frames=4, num_classes=3, width_mult=1.0)
    blk = m.layer3[1]
    w = blk.conv2.weight                                    # 256 x 256 x 3 x 3
    assert abs(w.std().item() / (2 / (256 * 9)) ** 0.5 - 1) < 0.02
    for conv in (blk.cmm.reduce, blk.cmm.restore, blk.fuse):
        bound = 1 / conv.weight[0].numel() ** 0.5
        assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.9 * bound
    taps = blk.cstm.conv.weight.flatten(1)                   # C x 3, one 1 per channel
    assert torch.equal(taps.sum(1), torch.ones(256)) and torch.equal((taps != 0).sum(1), torch.ones(256).long())
    assert taps.argmax(1).bincount().tolist() == [64, 128, 64]
    assert m.fc.weight.std() < 0.002 and torch.all(m.fc.bias == 0)


@pytest.mark.parametrize("name", list_models())
def test_param_groups_on_every_model(name):
    m = build_model(name=name, frames=4, num_classes=3, width_mult=0.25)
    groups = {g["name"]: g for g in optim.param_groups(m, lr=0.1, weight_decay=5e-4, fc_lr_mult=5)}
    ids = lambda g: {id(p) for p in g["params"]}  # noqa: E731
    heads = [m.appearance.fc, m.motion.fc] if name == "st-resnet" else [m.fc]
    assert ids(groups["fc_weight"]) == {id(h.weight) for h in heads}
    assert ids(groups["fc_bias"]) == {id(h.bias) for h in heads}
    assert (groups["fc_weight"]["lr_mult"], groups["fc_bias"]["lr_mult"]) == (5, 10)
    norm = {id(p) for mod in m.modules() if isinstance(mod, nn.BatchNorm2d) for p in mod.parameters()}
    assert norm <= ids(groups["no_decay"]) and groups["no_decay"]["weight_decay"] == 0
    assert all(p.ndim > 1 for p in groups["weight"]["params"])
    seen = [id(p) for g in groups.values() for p in g["params"]]
    assert len(seen) == len(set(seen)) == len(list(m.parameters()))


def test_fc_lr_mult_default_follows_the_backbone():
    assert optim.resolve_fc_lr_mult(None, None) == 1.0
    assert optim.resolve_fc_lr_mult(None, "torchvision") == 5.0
    assert optim.resolve_fc_lr_mult(3.0, None) == 3.0
    with pytest.raises(ValueError):
        optim.resolve_fc_lr_mult(0.0, None)


def test_the_engine_passes_the_multipliers(tmp_path, monkeypatch):
    import importlib

    T = importlib.import_module("stm_lib.engine.train")   # the module (the package exports the function)

    built = []
    real = T.build_optimizer
    monkeypatch.setattr(T, "build_optimizer", lambda *a, **k: built.append(real(*a, **k)) or built[-1])
    cfg = Config().merge({
        "model": {"name": "stm", "frames": 4, "num_classes": 0, "width_mult": 0.25, "block": {"cmm_reduction": 8}},
        "data": {"dataset": "proxy-temporal", "proxy_cache": str(tmp_path / "cache"), "proxy_videos": 20,
                 "proxy_classes": 2, "proxy_frames": 4, "proxy_resolution": 32, "input_size": 32, "num_workers": 0},
        "train": {"epochs": 1, "batch_size": 4, "lr_steps": [], "max_steps_per_epoch": 1, "out": str(tmp_path / "r"),
                  "progress": False, "tensorboard": False}})
    for mult, want in ((None, 1.0), (2.0, 2.0)):
        T.train(cfg.merge({"train": {"fc_lr_mult": mult, "out": str(tmp_path / f"r{mult}")}}))
        g = {x["name"]: x for x in built[-1].param_groups}
        assert (g["fc_weight"]["lr_mult"], g["fc_bias"]["lr_mult"], g["weight"]["lr_mult"]) == (want, 2 * want, 1.0)
        run = json.loads((tmp_path / f"r{mult}" / "run.json").read_text())
        assert run["fc_lr_mult"] == want and run["variant"]["spec"]["cmm_reduction"] == 8


def test_full_recipe_is_the_papers():
    assert full_recipe(8) == {"batch_size": 64, "lr": 0.01, "lr_scale": False}
    assert full_recipe(16) == {"batch_size": 32, "lr": 0.01, "lr_scale": False}
    with pytest.raises(ValueError):
        full_recipe(4)
    assert TrainConfig().lr_scale is False and TrainConfig().fc_lr_mult is None
    # the CLI's default lr is the dataclass's, used as is (no hidden linear scaling)
    c = config_from_args(train_args(["train", "--batch-size", "16"]))
    assert (c.train.lr, c.train.lr_scale) == (0.01, False)

