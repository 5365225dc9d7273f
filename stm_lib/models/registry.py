"""Named variants. A variant is data: which block spec, in which blocks. Ablations are entries.

`where`: "all" = every bottleneck of the listed stages; "first" = only the first bottleneck of
each listed stage (Table 7); "second" = only the second (ST-ResNet's res2b..res5b). Stages are
numbered as in the paper: conv2_x .. conv5_x = 2 .. 5. `flow_stack` > 0 makes a two-stream
Spatiotemporal ResNet whose input carries that many stacked flow fields after the RGB channels.
`stem="tdn"` adds TDN's short-term difference stream beside the stem and stage 2
(`successors.ShortTermTDM`). STM's successors (`tea`, `tdn`, `tam`, `tin`) are described in
`models/successors.py`, with their published costs (`SUCCESSOR_PAPER`).

Ablations without library edits: `ModelConfig.block` overrides any BlockSpec field of a variant's
spec, and its `where` / `stages` (`resolve_variant`); `resolved_variant` is what provenance records.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from stm_lib.models.resnet import PLAIN, STAGES, BlockSpec, cmm_reduction

STM = BlockSpec(cstm="channelwise", cmm=True)
ONLY = {"first": 0, "second": 1}   # `where` -> the one block of each stage that carries the spec


@dataclass(frozen=True)
class Variant:
    spec: BlockSpec
    where: str = "all"                      # "all" | "first" | "second"
    stages: tuple[int, ...] = (2, 3, 4, 5)
    about: str = ""
    flow_stack: int = 0                     # > 0: two-stream ST-ResNet, L flow fields per frame
    frame_diff: bool = False                # the frame-difference reference (models/framediff.py)
    stem: str = "plain"                     # "plain" | "tdn" (TDN's S-TDM beside the stem and stage 2)

    def block_specs(self) -> list[list[BlockSpec]]:
        if self.where != "all" and self.where not in ONLY:
            raise ValueError(f"where must be 'all', 'first' or 'second', got {self.where!r}")
        return [[self.spec if s in self.stages and (self.where == "all" or b == ONLY[self.where]) else PLAIN
                 for b in range(n)] for s, (n, _, _) in zip((2, 3, 4, 5), STAGES)]


VARIANTS: dict[str, Variant] = {
    "tsn": Variant(PLAIN, about="TSN baseline: ResNet-50 per frame, logits averaged (Tables 1-5)"),
    "tsm": Variant(BlockSpec(shift="tsm"), about="TSM residual shift 1/8+1/8 (Table 9)"),
    "cstm": Variant(BlockSpec(cstm="channelwise"), about="CSTM only, every block (Table 5, Table 8 channel-wise)"),
    "cstm-ordinary": Variant(BlockSpec(cstm="ordinary"), about="CSTM with an ordinary temporal conv (Table 8)"),
    "cmm": Variant(BlockSpec(cmm=True), about="CMM beside the plain 3x3 path, every block (Table 5)"),
    "stm": Variant(STM, about="STM block = CSTM + CMM by summation, all 16 blocks (the paper's model)"),
    "stm-concat": Variant(BlockSpec(cstm="channelwise", cmm=True, fusion="concat"),
                          about="STM with concatenation + 1x1 fusion (Table 6)"),
    "stm-first4": Variant(STM, where="first", about="STM in the first block of each stage, 4 blocks (Table 7)"),
    **{f"stm-stage{s}": Variant(STM, where="first", stages=(s,),
                                about=f"STM in the first block of stage {s} only (Table 7)")
       for s in (2, 3, 4, 5)},
    "tsn-diff": Variant(PLAIN, frame_diff=True,
                        about="reference, not the paper's: TSN on [frame, next-frame difference] pairs (proxy calibration)"),
    "stsm": Variant(BlockSpec(shift="stsm"), about="STSM spatio-temporal shift (open reading, see book)"),
    "sth": Variant(BlockSpec(conv2="sth"), about="STH hybrid conv, temporal share 1/4 (open reading, see book)"),
    "st-resnet-rgb": Variant(BlockSpec(conv1="temporal"), where="second",
                             about="ST-ResNet's 1x1x3 temporal conv (average init) in res2b..res5b, RGB only"),
    "st-resnet": Variant(BlockSpec(conv1="temporal"), where="second", flow_stack=10,
                         about="two-stream ST-ResNet: RGB + 10 stacked flows, motion->appearance at res2b..res5b"),
    # STM's successors (models/successors.py), on ResNet-50
    "tea": Variant(BlockSpec(temporal_module="me", conv2="mta"),
                   about="TEA: motion excitation + multiple temporal aggregation, every block (ResNet-50 widths)"),
    "tdn": Variant(BlockSpec(temporal_module="ltdm"), stages=(3, 4, 5), stem="tdn",
                   about="TDN: short-term difference stream on the stem + long-term TDM in stages 3-5"),
    "tam": Variant(BlockSpec(temporal_module="tam"), about="TANet: temporal adaptive module after conv1, every block"),
    "tin": Variant(BlockSpec(shift="tin"), about="TIN: learned fractional temporal interlace on C/4 before conv1"),
}


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(VARIANTS)}") from None


def list_models() -> list[str]:
    return list(VARIANTS)


VARIANT_KNOBS = ("where", "stages")   # Variant fields a model config may override besides the spec's
_TYPES = {"str | None": (str, type(None)), "str": (str,), "bool": (bool,), "int": (int,), "float": (float, int)}


def _typed(key: str, value: Any, annotation: str) -> Any:
    """`value` checked against a BlockSpec field's annotation (bool is not an int here)."""
    ok = isinstance(value, _TYPES[annotation]) and (annotation == "bool" or not isinstance(value, bool))
    if not ok:
        raise ValueError(f"model.block.{key}: expected {annotation}, got {value!r}")
    return float(value) if annotation == "float" else value


def resolve_variant(name: str, block: dict[str, Any] | None = None) -> Variant:
    """Registry variant `name` with `block` overrides: BlockSpec fields (applied to the blocks
    that carry the variant's spec) and `where` / `stages`. Unknown keys or values of the wrong
    type raise one ValueError naming them."""
    variant = get_variant(name)
    block = dict(block or {})
    spec_fields = {f.name: f for f in dataclasses.fields(BlockSpec)}
    bad = sorted(set(block) - set(spec_fields) - set(VARIANT_KNOBS))
    if bad:
        raise ValueError(f"unknown model.block field(s) {bad}; known: {sorted(spec_fields) + list(VARIANT_KNOBS)}")
    spec_kw = {k: _typed(k, v, spec_fields[k].type) for k, v in block.items() if k in spec_fields}
    stages = block.get("stages", variant.stages)
    if not isinstance(stages, (list, tuple)) or not all(isinstance(s, int) and 2 <= s <= 5 for s in stages):
        raise ValueError(f"model.block.stages: expected stage numbers in 2..5, got {stages!r}")
    variant = dataclasses.replace(variant, spec=dataclasses.replace(variant.spec, **spec_kw),
                                  where=block.get("where", variant.where), stages=tuple(stages))
    variant.block_specs()   # validates `where`
    return variant


def resolved_variant(cfg) -> dict[str, Any]:
    """What a `ModelConfig` builds, as plain data for provenance: the registry name, the
    overrides, and the resolved spec, `where`, `stages` and `flow_stack`; `cmm_reduction_used` is
    the reduction CMM applies at this width (`resnet.cmm_reduction`)."""
    v = resolve_variant(cfg.name, cfg.block)
    return {"name": cfg.name, "overrides": {k: list(x) if isinstance(x, tuple) else x for k, x in cfg.block.items()},
            "spec": dataclasses.asdict(v.spec), "where": v.where, "stages": list(v.stages),
            "flow_stack": v.flow_stack, "cmm_reduction_used": cmm_reduction(v.spec.cmm_reduction, cfg.width_mult)}
