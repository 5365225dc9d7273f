"""Models: `build_model(ModelConfig)` turns a registry name and a few knobs into a network."""
from __future__ import annotations

import dataclasses

import torch

from stm_lib.config import ModelConfig
from stm_lib.models.registry import (VARIANTS, Variant, get_variant, list_models, resolve_variant,
                                     resolved_variant)
from stm_lib.models.resnet import (BlockSpec, LoadReport, SpatiotemporalResNet, VideoResNet, cmm_reduction,
                                   load_imagenet)

__all__ = ["build_model", "describe_widths", "list_models", "get_variant", "resolve_variant", "resolved_variant",
           "VARIANTS", "Variant", "BlockSpec", "VideoResNet", "SpatiotemporalResNet", "cmm_reduction",
           "load_imagenet", "LoadReport", "to_channels_last"]


def to_channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """NHWC storage for the weights: 4-D ones channels_last, 5-D ones (the Conv3d of CSTM, STH,
    ST-ResNet) channels_last_3d, which is the layout of the (N, C, T, H, W) view of a channels_last
    activation those convs run on. `model.to(memory_format=torch.channels_last)` cannot be used: it
    refuses 5-D tensors ("required rank 4 tensor"). Parameters stay the same objects."""
    for p in model.parameters():
        if p.dim() in (4, 5):
            fmt = torch.channels_last if p.dim() == 4 else torch.channels_last_3d
            p.data = p.data.contiguous(memory_format=fmt)
    return model


def build_model(cfg: ModelConfig | None = None, verbose: bool = False,
                **overrides) -> VideoResNet | SpatiotemporalResNet:
    """Build a registry variant, with `cfg.block` overrides of its BlockSpec / where / stages.
    `overrides` are ModelConfig fields (e.g. `name="tsn"`). If `cfg.pretrained` is set,
    ResNet-50 ImageNet weights are loaded and the report is kept on the model as
    `model.load_report`."""
    cfg = dataclasses.replace(cfg or ModelConfig(), **overrides)
    variant = resolve_variant(cfg.name, cfg.block)
    if cfg.num_classes < 1:
        raise ValueError("num_classes must be set (>= 1) before building the model")
    if variant.frame_diff:
        from stm_lib.models.framediff import FrameDifferenceTSN

        model = FrameDifferenceTSN(cfg.frames, cfg.num_classes, cfg.width_mult, cfg.dropout)
    elif variant.flow_stack:
        model = SpatiotemporalResNet(variant.block_specs(), cfg.frames, cfg.num_classes, cfg.width_mult,
                                     cfg.dropout, flow_stack=variant.flow_stack)
    else:
        model = VideoResNet(variant.block_specs(), cfg.frames, cfg.num_classes, cfg.width_mult, cfg.dropout,
                            stem=variant.stem)
    model.variant_name = cfg.name
    model.load_report = None
    if cfg.pretrained:
        model.load_report = load_imagenet(model, cfg.pretrained)
        if verbose:
            print(model.load_report.summary())
    return model


def describe_widths(cfg: ModelConfig) -> list[dict]:
    """Per stage (2-5) of the network `cfg` builds: blocks, bottleneck width, output channels,
    how many blocks carry CMM / CSTM, and CMM's channel count (0 without CMM). Read off the
    model itself, built on the meta device (no memory, no random draws); for a two-stream model,
    the appearance stream. Pages use it to state the proxy model."""
    with torch.device("meta"):
        model = build_model(dataclasses.replace(cfg, pretrained=None, num_classes=max(1, cfg.num_classes)))
    net = model.appearance if isinstance(model, SpatiotemporalResNet) else model
    rows = []
    for stage, layer in zip((2, 3, 4, 5), net.stages):
        cmm = [b.cmm.reduce.out_channels for b in layer if b.cmm is not None]
        rows.append({"stage": stage, "blocks": len(layer), "width": layer[0].conv1.out_channels,
                     "out_channels": layer[0].conv3.out_channels, "cmm_blocks": len(cmm),
                     "cstm_blocks": sum(b.cstm is not None for b in layer), "cmm_channels": max(cmm, default=0)})
    return rows
