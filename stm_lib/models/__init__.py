"""Models: `build_model(ModelConfig)` turns a registry name and a few knobs into a network."""
from __future__ import annotations

from stm_lib.config import ModelConfig
from stm_lib.models.registry import VARIANTS, Variant, get_variant, list_models
from stm_lib.models.resnet import BlockSpec, LoadReport, SpatiotemporalResNet, VideoResNet, load_imagenet

__all__ = ["build_model", "list_models", "get_variant", "VARIANTS", "Variant", "BlockSpec",
           "VideoResNet", "SpatiotemporalResNet", "load_imagenet", "LoadReport"]


def build_model(cfg: ModelConfig | None = None, verbose: bool = False,
                **overrides) -> VideoResNet | SpatiotemporalResNet:
    """Build a registry variant. `overrides` are ModelConfig fields (e.g. `name="tsn"`).
    If `cfg.pretrained` is set, ResNet-50 ImageNet weights are loaded and the report is kept on
    the model as `model.load_report`."""
    import dataclasses

    cfg = dataclasses.replace(cfg or ModelConfig(), **overrides)
    variant = get_variant(cfg.name)
    if cfg.num_classes < 1:
        raise ValueError("num_classes must be set (>= 1) before building the model")
    if variant.frame_diff:
        from stm_lib.models.framediff import FrameDifferenceTSN

        model = FrameDifferenceTSN(cfg.frames, cfg.num_classes, cfg.width_mult, cfg.dropout)
    elif variant.flow_stack:
        model = SpatiotemporalResNet(variant.block_specs(), cfg.frames, cfg.num_classes, cfg.width_mult,
                                     cfg.dropout, flow_stack=variant.flow_stack)
    else:
        model = VideoResNet(variant.block_specs(), cfg.frames, cfg.num_classes, cfg.width_mult, cfg.dropout)
    model.variant_name = cfg.name
    model.load_report = None
    if cfg.pretrained:
        model.load_report = load_imagenet(model, cfg.pretrained)
        if verbose:
            print(model.load_report.summary())
    return model
