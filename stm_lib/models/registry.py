"""Named variants. A variant is data: which block spec, in which blocks. Ablations are entries.

`where`: "all" = every bottleneck of the listed stages; "first" = only the first bottleneck of
each listed stage (Table 7). Stages are numbered as in the paper: conv2_x .. conv5_x = 2 .. 5.
"""
from __future__ import annotations

from dataclasses import dataclass

from stm_lib.models.resnet import PLAIN, STAGES, BlockSpec

STM = BlockSpec(cstm="channelwise", cmm=True)


@dataclass(frozen=True)
class Variant:
    spec: BlockSpec
    where: str = "all"                      # "all" | "first"
    stages: tuple[int, ...] = (2, 3, 4, 5)
    about: str = ""

    def block_specs(self) -> list[list[BlockSpec]]:
        if self.where not in ("all", "first"):
            raise ValueError(f"where must be 'all' or 'first', got {self.where!r}")
        return [[self.spec if s in self.stages and (self.where == "all" or b == 0) else PLAIN
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
    "stsm": Variant(BlockSpec(shift="stsm"), about="STSM spatio-temporal shift (open reading, see book)"),
    "sth": Variant(BlockSpec(conv2="sth"), about="STH hybrid conv, temporal share 1/4 (open reading, see book)"),
}


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(VARIANTS)}") from None


def list_models() -> list[str]:
    return list(VARIANTS)
