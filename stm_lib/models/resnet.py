"""ResNet-50 (bottleneck, 3-4-6-3; torchvision's v1.5 layout with the stride on the 3x3 conv)
whose every block can carry a temporal module, and ImageNet initialisation from torchvision's
state dict. Parameter names match torchvision's, so its state dict loads key for key.

Input `(N, T, 3, H, W)`; frames run through the 2D network as a batch of N*T images; per-frame
logits are averaged over T (TSN consensus, paper Fig. 3: no temporal reduction before it).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from stm_lib.models.relatives import STHConv, TemporalConv
from stm_lib.models.successors import MTA, TAM, LongTermTDM, MotionExcitation, ShortTermTDM, TemporalInterlace
from stm_lib.models.temporal import CMM, CSTM, TemporalShift


@dataclass(frozen=True)
class BlockSpec:
    """What one bottleneck carries. Every named variant is a choice of these fields."""
    shift: str | None = None          # None | "tsm" | "stsm" | "tin": on the residual branch before conv1
    cstm: str | None = None           # None | "channelwise" | "ordinary": Eq. (1) before the 3x3 conv
    cmm: bool = False                 # Eq. (2) beside the 3x3 path
    fusion: str = "sum"               # "sum" | "concat" (Table 6) when both paths exist
    conv2: str = "plain"              # "plain" | "sth" (hybrid conv replaces the 3x3) | "mta" (TEA's MTA)
    conv1: str = "plain"              # "plain" | "temporal" (ST-ResNet 1x1x3 conv, average init)
    cmm_reduction: int = 16           # r of section 3.2 (also TEA ME's and TDN L-TDM's r, 16 too)
    stsm_spatial_fold_div: int = 32   # STSM: C/32 channels for each of 4 pixel directions (open)
    sth_temporal_share: float = 0.25  # STH: share of input channels with temporal kernels (open)
    temporal_module: str | None = None  # None | "me" (TEA) | "ltdm" (TDN) | "tam" (TANet): on conv1's output
    mta_base_width: int = 16          # MTA's group width = planes * w / 64: 16 keeps ResNet-50's widths,
                                      # 26 is Res2Net-50 26w x 4s (the official TEA; no ImageNet weights here)

    def __post_init__(self) -> None:
        for f, allowed in CHOICES.items():
            if getattr(self, f) not in allowed:
                raise ValueError(f"BlockSpec.{f} must be one of {allowed}, got {getattr(self, f)!r}")
        if not (isinstance(self.cmm_reduction, int) and self.cmm_reduction >= 1):
            raise ValueError(f"BlockSpec.cmm_reduction must be an integer >= 1, got {self.cmm_reduction!r}")
        if not (isinstance(self.mta_base_width, int) and self.mta_base_width >= 1):
            raise ValueError(f"BlockSpec.mta_base_width must be an integer >= 1, got {self.mta_base_width!r}")

    @property
    def is_plain(self) -> bool:
        """No temporal module: the block is ResNet-50's, whatever its (unused) module knobs say."""
        return ((self.shift, self.cstm, self.cmm, self.conv2, self.conv1, self.temporal_module)
                == (None, None, False, "plain", "plain", None))

    def width(self, planes: int) -> int:
        """The block's inner width: `planes`, or with MTA 4 groups of planes * mta_base_width / 64."""
        return planes if self.conv2 != "mta" else 4 * max(1, planes * self.mta_base_width // 64)


CHOICES = {"shift": (None, "tsm", "stsm", "tin"), "cstm": (None, "channelwise", "ordinary"),
           "fusion": ("sum", "concat"), "conv2": ("plain", "sth", "mta"), "conv1": ("plain", "temporal"),
           "temporal_module": (None, "me", "ltdm", "tam")}


PLAIN = BlockSpec()


def cmm_reduction(r: int, width_mult: float) -> int:
    """The reduction CMM applies in a network of width multiplier w: r * w, at least 1, so that
    CMM keeps the channel count C/r it has at full width (section 3.2, r = 16: 4, 8, 16, 32 in
    stages 2-5) instead of shrinking with the backbone (1, 2, 4, 8 at w = 0.25, where the
    module would be nearly degenerate). Exact when r * w is an integer; full width is r."""
    return max(1, round(r * width_mult))


class Bottleneck(nn.Module):
    """[shift] -> conv1 1x1 -> BN -> ReLU -> [ME | L-TDM | TAM] -> [CSTM] -> conv2 3x3 (stride) -> BN
    -> ReLU [+ CMM] -> conv3 1x1 -> BN -> + shortcut -> ReLU. With CSTM and CMM this is the STM
    block of section 3.3 / Fig. 3: `relu(bn2(conv2(cstm(x)))) + cmm(x)`, both fed by the same
    post-ReLU conv1 output. With `conv2="mta"` TEA's MTA replaces conv2 -> BN -> ReLU (its groups
    apply bn2 and ReLU themselves) and the inner width is `spec.width(planes)`.
    """
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, frames: int, spec: BlockSpec = PLAIN,
                 width_mult: float = 1.0):
        super().__init__()
        out = planes * self.expansion
        planes = spec.width(planes)           # the inner width: unchanged unless MTA sets it
        if spec.conv1 == "temporal":
            self.conv1 = TemporalConv(inplanes, planes, frames)
        else:
            self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.mta = spec.conv2 == "mta"
        if spec.conv2 == "sth":
            self.conv2 = STHConv(planes, planes, stride, frames, spec.sth_temporal_share)
        elif self.mta:
            self.conv2 = MTA(planes, frames, stride, first=stride != 1 or inplanes != out)
        else:
            self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes * 3 // 4 if self.mta else planes)   # MTA: its 3 convolved groups
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(out))
        self.shift = None
        if spec.shift == "tin":
            self.shift = TemporalInterlace(inplanes, frames)
        elif spec.shift:
            self.shift = TemporalShift(frames, 8, spec.stsm_spatial_fold_div if spec.shift == "stsm" else 0)
        self.after_conv1 = None
        if spec.temporal_module == "me":
            self.after_conv1 = MotionExcitation(planes, frames, cmm_reduction(spec.cmm_reduction, width_mult))
        elif spec.temporal_module == "ltdm":
            self.after_conv1 = LongTermTDM(planes, frames, cmm_reduction(spec.cmm_reduction, width_mult))
        elif spec.temporal_module == "tam":
            self.after_conv1 = TAM(planes, frames)
        self.cstm = CSTM(planes, frames, channelwise=spec.cstm == "channelwise") if spec.cstm else None
        self.cmm = CMM(planes, frames, cmm_reduction(spec.cmm_reduction, width_mult), stride) if spec.cmm else None
        self.fuse = None
        if spec.cmm and spec.fusion == "concat":   # Table 6: concat to 2C, then 1x1 back to C
            self.fuse = nn.Conv2d(2 * planes, planes, 1, bias=False)

    def resnet_layers(self) -> list[nn.Module]:
        """ResNet-50's own layers, in registration order; they get ResNet's init. Every other
        child (shift, after_conv1, cstm, cmm, fuse, or a new temporal module) is not listed and
        keeps its own; MTA (conv2) inits itself."""
        return [m for m in (self.conv1, self.bn1, self.conv2, self.bn2, self.conv3, self.bn3, self.downsample)
                if m is not None]

    def forward(self, x: torch.Tensor, inject: torch.Tensor | None = None) -> torch.Tensor:
        """`inject`: another stream's features added to the residual branch's input only
        (ST-ResNet's motion -> appearance connection); the shortcut keeps `x`."""
        identity = x if self.downsample is None else self.downsample(x)
        out = x if inject is None else x + inject
        out = out if self.shift is None else self.shift(out)
        out = self.relu(self.bn1(self.conv1(out)))
        out = out if self.after_conv1 is None else self.after_conv1(out)
        st = out if self.cstm is None else self.cstm(out)
        st = self.conv2(st, self.bn2) if self.mta else self.relu(self.bn2(self.conv2(st)))
        if self.cmm is not None:
            m = self.cmm(out)
            st = st + m if self.fuse is None else self.fuse(torch.cat([st, m], dim=1))
        out = self.bn3(self.conv3(st))
        return self.relu(out + identity)


def check_input(x: torch.Tensor, channels: int, frames: int | None, what: str = "") -> None:
    """A clip batch `(N, T, channels, H, W)`, with T == frames unless frames is None."""
    if x.dim() != 5 or x.shape[2] != channels:
        raise ValueError(f"expected input (N, T, {channels}, H, W){what}; got shape {tuple(x.shape)}")
    if frames is not None and x.shape[1] != frames:
        raise ValueError(f"this model was built for frames={frames}, got T={x.shape[1]}")


STAGES = ((3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2))   # (blocks, planes, stride): stages 2-5


def _owns_init(m: nn.Module) -> bool:
    """True when m's class (not a torch.nn layer) defines `reset_parameters` itself."""
    reset = getattr(type(m), "reset_parameters", None)
    return reset is not None and not reset.__module__.startswith("torch.")


def _resnet_init(module: nn.Module) -> None:
    """kaiming_normal (fan_out) convs, BN weight 1 / bias 0; ST-ResNet's temporal conv gets a
    kaiming 1x1 kernel averaged over time. Subtrees that own their init are left alone."""
    if _owns_init(module):
        return
    if isinstance(module, TemporalConv):
        w = torch.empty(module.weight.shape[:2] + (1, 1))
        module.inflate_(nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu"))
    elif isinstance(module, (nn.Conv2d, nn.Conv3d)):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    for child in module.children():
        _resnet_init(child)


def _width(c: int, mult: float) -> int:
    return max(4, int(round(c * mult)))


class VideoResNet(nn.Module):
    """ResNet-50 applied per frame, with `specs[stage][block]` choosing each block's module.
    `stem="tdn"` adds TDN's short-term difference stream beside the stem and layer1
    (`successors.ShortTermTDM`, with its own plain copy of layer1)."""

    def __init__(self, specs: list[list[BlockSpec]], frames: int, num_classes: int,
                 width_mult: float = 1.0, dropout: float = 0.5, in_channels: int = 3, stem: str = "plain"):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        if not 0 < width_mult <= 4:
            raise ValueError(f"width_mult must be in (0, 4], got {width_mult}")
        if stem not in ("plain", "tdn"):
            raise ValueError(f"stem must be 'plain' or 'tdn', got {stem!r}")
        self.frames, self.num_classes, self.in_channels = frames, num_classes, in_channels
        self.temporal = stem != "plain" or any(not s.is_plain for stage in specs for s in stage)
        stem_ch = _width(64, width_mult)
        self.conv1 = nn.Conv2d(in_channels, stem_ch, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_ch)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = stem_ch
        for i, ((n, planes, stride), stage_specs) in enumerate(zip(STAGES, specs)):
            planes = _width(planes, width_mult)
            blocks = []
            for b in range(n):
                blocks.append(Bottleneck(inplanes, planes, stride if b == 0 else 1, frames, stage_specs[b], width_mult))
                inplanes = planes * Bottleneck.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(inplanes, num_classes)
        self.stdm = None
        if stem == "tdn":
            n, planes, _ = STAGES[0]
            layer, inplanes = [], stem_ch
            for b in range(n):
                layer.append(Bottleneck(inplanes, _width(planes, width_mult), 1, frames, PLAIN, width_mult))
                inplanes = layer[-1].conv3.out_channels
            self.stdm = ShortTermTDM(frames, in_channels, stem_ch, nn.Sequential(*layer))
        self._init_backbone()

    @torch.no_grad()
    def _init_backbone(self) -> None:
        """torchvision's ResNet init on ResNet-50's own layers (stem, each block's
        `resnet_layers()`), fc ~ N(0, 0.001) (TSM code). Modules added to a block are never
        visited, so they keep their own init (CSTM: its `reset_parameters`, the shift kernels of
        section 4.2; CMM and the concat fusion conv: PyTorch's default, "randomly initialized").
        Inside ResNet's layers a module whose class defines its own `reset_parameters` (not a
        torch.nn layer) keeps it too."""
        for layer in [self.conv1, self.bn1] + [m for blk in self.modules() if isinstance(blk, Bottleneck)
                                               for m in blk.resnet_layers()]:
            _resnet_init(layer)
        nn.init.normal_(self.fc.weight, 0, 0.001)
        nn.init.zeros_(self.fc.bias)

    def heads(self) -> list[nn.Linear]:
        """The classifier layers (the optimiser's fc lr multiplier applies to them)."""
        return [self.fc]

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    @property
    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """`(N*T, C_in, H, W)` -> `(N*T, C)` pooled per-frame features."""
        x = self.layer1(self.stem(x)) if self.stdm is None else self.stdm(x, self.stem, self.layer1)
        x = self.layer4(self.layer3(self.layer2(x)))
        return torch.flatten(self.avgpool(x), 1)

    def imagenet_copies(self) -> dict[str, str]:
        """Tensors that start from an ImageNet tensor of another name (`load_imagenet`): TDN's
        difference stream takes conv1 (RGB mean, repeated: `_inflate`) and layer1."""
        if self.stdm is None:
            return {}
        return {"stdm.conv.weight": "conv1.weight",
                **{f"stdm.layer1.{k}": f"layer1.{k}" for k in self.stdm.layer1.state_dict()}}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels, self.frames if self.temporal else None)
        n, t = x.shape[:2]
        logits = self.fc(self.dropout(self.features(x.flatten(0, 1))))
        return logits.view(n, t, -1).mean(dim=1)        # TSN consensus: average over T


class SpatiotemporalResNet(nn.Module):
    """Spatiotemporal ResNet (Feichtenhofer et al., NIPS 2016; seed 003): an appearance stream on
    RGB and a motion stream on `flow_stack` stacked optical-flow fields (u, v interleaved: 2L
    channels), both ResNet-50 with the same block specs. Additive connections carry the motion
    stream's input of the blocks in `connect` (res2b..res5b: block 1 of every stage) into the
    appearance stream's residual branch. After the last stage each stream max-pools its per-frame
    features over time (kernel 5, stride 2, as in the seed) and averages the rest; the two
    streams' logits are averaged (late fusion).

    Input `(N, T, 3 + 2L, H, W)`: RGB channels first, then the flow stack of each frame, so the
    engine, profiler and loaders see one tensor like every other model's.
    """

    def __init__(self, specs: list[list[BlockSpec]], frames: int, num_classes: int, width_mult: float = 1.0,
                 dropout: float = 0.5, flow_stack: int = 10, connect: tuple[int, ...] = (1,), time_pool: int = 5):
        super().__init__()
        if flow_stack < 1:
            raise ValueError(f"flow_stack must be >= 1, got {flow_stack}")
        self.appearance = VideoResNet(specs, frames, num_classes, width_mult, dropout, in_channels=3)
        self.motion = VideoResNet(specs, frames, num_classes, width_mult, dropout, in_channels=2 * flow_stack)
        self.frames, self.num_classes, self.flow_stack = frames, num_classes, flow_stack
        self.in_channels = 3 + 2 * flow_stack
        self.connect, self.time_pool = tuple(connect), time_pool

    def heads(self) -> list[nn.Linear]:
        """Both streams' classifiers (there is no top-level fc)."""
        return self.appearance.heads() + self.motion.heads()

    def _head(self, stream: VideoResNet, x: torch.Tensor, n: int, t: int) -> torch.Tensor:
        f = torch.flatten(stream.avgpool(x), 1).view(n, t, -1)
        k = min(self.time_pool, t)
        f = torch.nn.functional.max_pool1d(f.transpose(1, 2), k, stride=2).mean(dim=2)   # temporal max-pool
        return stream.fc(stream.dropout(f))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        appearance, motion = self.streams(x)
        return (appearance + motion) / 2

    def streams(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The appearance and the motion stream's logits, before late fusion."""
        check_input(x, self.in_channels, self.frames, f": 3 RGB channels then {2 * self.flow_stack} flow channels")
        n, t = x.shape[:2]
        a = self.appearance.stem(x[:, :, :3].flatten(0, 1))
        m = self.motion.stem(x[:, :, 3:].flatten(0, 1))
        for stage_a, stage_m in zip(self.appearance.stages, self.motion.stages):
            for b, (block_a, block_m) in enumerate(zip(stage_a, stage_m)):
                a = block_a(a, inject=m if b in self.connect else None)   # motion -> appearance
                m = block_m(m)
        return self._head(self.appearance, a, n, t), self._head(self.motion, m, n, t)


@dataclass
class LoadReport:
    """Which keys of a torchvision ResNet-50 state dict went where."""
    loaded: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)        # in the model, not in the file (temporal modules)
    skipped: list[str] = field(default_factory=list)    # in the file, not used (fc with another class count)
    inflated: list[str] = field(default_factory=list)   # loaded after reshaping (1x1 -> 1x1x3; RGB -> flow stem)
    unexpected: list[str] = field(default_factory=list)  # in the file, unknown to the model
    copied: list[str] = field(default_factory=list)     # model tensors filled from a file tensor of another
    #                                                     name (TDN's difference stream: `imagenet_copies`)

    def summary(self) -> str:
        copied = f", {len(self.copied)} copied to a second home" if self.copied else ""
        return (f"ImageNet init: {len(self.loaded)} tensors loaded ({len(self.inflated)} inflated{copied}), "
                f"{len(self.new)} new (temporal modules / fc), {len(self.skipped)} skipped, "
                f"{len(self.unexpected)} unexpected")


def read_state_dict(source: str) -> dict[str, torch.Tensor]:
    """`source`: a path to a torchvision ResNet-50 state dict (.pth), or "torchvision" /
    "torchvision:IMAGENET1K_V2" for torchvision's weights API (needs internet the first time)."""
    if source.startswith("torchvision"):
        import torchvision

        tag = source.partition(":")[2] or "IMAGENET1K_V1"     # V1: the weights TSN/TSM/STM used
        return torchvision.models.ResNet50_Weights[tag].get_state_dict(progress=True)
    from pathlib import Path

    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights not found: {path}")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a loadable PyTorch state dict ({type(e).__name__}: {e})") from e
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path}: expected a dict of tensors (a state dict)")
    return sd


def _inflate(k: str, v: torch.Tensor, shape: torch.Size, own: dict | None = None) -> torch.Tensor | None:
    """An ImageNet tensor reshaped for a model tensor of `shape`, or None if no rule applies:
    a 1x1 conv -> ST-ResNet's 1x1x3 temporal conv, as the temporal average [W/3, W/3, W/3]; the
    RGB stem -> a flow stem of 2L channels, as the mean over RGB repeated (TSN's cross-modality
    init, the usual start of a flow stream; TDN's 12-channel difference stem too); a 3x3 conv ->
    TEA's MTA (three g x g kernels from its diagonal blocks; bn2's matching 3g channels, when
    `own`, the model's state dict, shows that block's conv2 is an MTA)."""
    if v.dim() == 4 and len(shape) == 5 and shape[:2] == v.shape[:2] and shape[3:] == v.shape[2:]:
        return v.unsqueeze(2).expand(shape) / shape[2]
    if k == "conv1.weight" and len(shape) == 4 and shape[0] == v.shape[0] and shape[2:] == v.shape[2:]:
        return v.mean(dim=1, keepdim=True).expand(shape).clone()
    if (k.endswith(".conv2.weight") and len(shape) == 4 and shape[0] == 3 * shape[1]
            and v.shape[:2] == (4 * shape[1], 4 * shape[1]) and v.shape[2:] == shape[2:]):
        g = shape[1]                                  # MTA: the 3x3 kernel's first three diagonal blocks
        return torch.cat([v[i * g:(i + 1) * g, i * g:(i + 1) * g] for i in range(3)])
    conv2 = (own or {}).get(k.rpartition(".bn2.")[0] + ".conv2.weight") if ".bn2." in k else None
    if (conv2 is not None and conv2.dim() == 4 and conv2.shape[0] == 3 * conv2.shape[1] == shape[0]
            and v.shape[0] == 4 * conv2.shape[1]):
        return v[:shape[0]].clone()                   # MTA's bn2: the channels of those three groups
    return None


def load_imagenet(model: nn.Module, source: str | dict[str, torch.Tensor]) -> LoadReport:
    """Copy matching ResNet-50 tensors into `model`; new modules keep their init. fc is loaded
    only when the class count matches (1000); otherwise it is reported as skipped. A two-stream
    `SpatiotemporalResNet` gets the weights in both streams (report keys are prefixed)."""
    sd = read_state_dict(source) if isinstance(source, str) else source
    sd = {k.removeprefix("module."): v for k, v in sd.items()}     # DataParallel / DDP checkpoints
    if isinstance(model, SpatiotemporalResNet):
        both = LoadReport()
        for name in ("appearance", "motion"):
            r = load_imagenet(getattr(model, name), sd)
            for f in ("loaded", "new", "skipped", "unexpected", "inflated"):
                getattr(both, f).extend(f"{name}.{k}" for k in getattr(r, f))
        return both
    own = model.state_dict()
    rep = LoadReport()
    to_load = {}
    for k, v in sd.items():
        if k not in own:
            rep.unexpected.append(k)
        elif own[k].shape == v.shape:
            to_load[k] = v
        elif (w := _inflate(k, v, own[k].shape, own)) is not None:
            to_load[k] = w
            rep.inflated.append(k)
        elif k.startswith("fc."):
            rep.skipped.append(k)
        else:
            raise ValueError(f"pretrained tensor {k} has shape {tuple(v.shape)}, model expects "
                             f"{tuple(own[k].shape)} (ImageNet weights need width_mult=1)")
    copies = {}                                    # a second home for an ImageNet tensor (TDN)
    for k, src in (model.imagenet_copies() if hasattr(model, "imagenet_copies") else {}).items():
        v = sd.get(src)
        if v is not None and k in own:
            copies[k] = v if own[k].shape == v.shape else _inflate(src, v, own[k].shape, own)
    copies = {k: v for k, v in copies.items() if v is not None}
    model.load_state_dict({**to_load, **copies}, strict=False)
    rep.loaded = sorted(to_load)
    rep.copied = sorted(copies)
    rep.skipped.sort()
    rep.inflated.sort()
    rep.new = sorted(k for k in own if k not in to_load and k not in copies)
    return rep
