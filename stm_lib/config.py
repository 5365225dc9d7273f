"""One typed config object. CLI flags, YAML files and notebook parameters all become a `Config`;
builders (model, data, engine) read from it and never from globals.

Defaults are the paper's recipe (section 4.2) where the paper gives one; `width_mult`,
`input_size` and the proxy datasets are the knobs that scale a run down to a CPU.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


@dataclass
class ModelConfig:
    name: str = "stm"            # a registry variant: `stm list-models` / stm_lib.models.list_models()
    frames: int = 8              # T: segments per clip (paper: 8 or 16)
    num_classes: int = 174       # 174 = Something-Something; 0 = take it from the dataset
    width_mult: float = 1.0      # <1 scales every channel count (CPU-scale proxy runs)
    dropout: float = 0.5         # before fc (TSM recipe)
    pretrained: str | None = None  # path to torchvision ResNet-50 state dict, or "torchvision"


@dataclass
class DataConfig:
    dataset: str = "proxy-temporal"   # ssv1 ssv2 jester kinetics400 ucf101 hmdb51 list proxy-temporal proxy-scene
    data_root: str | None = None
    split: int = 1                    # UCF-101 / HMDB-51 split 1, 2 or 3
    list_file: str | None = None      # `list` dataset: TSM lines "folder num_frames label"
    input_size: int = 224             # network input side
    scale_size: int = 0               # shorter side before cropping; 0 = input_size * 256 / 224
    flip: bool | None = None          # None = per dataset (off for Something-Something, Jester)
    test_clips: int = 1               # temporal clips at evaluation (paper: 10; Table 9: 1)
    test_crops: int = 1               # 1 = centre crop, 3 = three crops (paper accuracy tables)
    num_workers: int = 2
    # embedded proxy datasets (stm_lib.data.proxy)
    proxy_videos: int = 1000
    proxy_classes: int = 10
    proxy_frames: int = 16
    proxy_resolution: int = 64
    proxy_cache: str | None = None    # None = ~/.cache/stm/proxy
    proxy_seed: int = 0               # the proxy's content depends only on these proxy_* fields
    val_list_file: str | None = None  # `list` dataset: the validation list (same format)
    decoder: str = "auto"             # video files: auto (decord, PyAV fallback) | decord | pyav
    flow_root: str | None = None      # two-stream ST-ResNet: `<flow_root>/<clip id>/flow_x_00001.jpg ...`
    flow_stack: int = 10              # L: flow fields stacked per frame (2L channels)


@dataclass
class TrainConfig:
    epochs: int = 50
    batch_size: int = 64
    lr: float = 0.01                  # the lr used as is; with lr_scale it is the lr at batch 64
    lr_scale: bool = False            # True: lr * batch_size / 64 (global batch; paper 4.2 rule)
    lr_steps: tuple[int, ...] = (30, 40, 45)
    lr_schedule: str = "step"         # step | cosine
    warmup_epochs: int = 0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    clip_grad: float = 20.0
    fc_lr_mult: float = 5.0           # TSM recipe: fc weight x5, bias x10
    amp: str = "none"                 # none | bf16 | fp16
    channels_last: bool = False
    compile: bool = False
    device: str = "auto"              # auto | cpu | cuda
    deterministic: bool = False
    seed: int = 0
    out: str = "runs/train"
    resume: bool = False
    max_steps_per_epoch: int = 0      # 0 = full epoch (smoke runs cap this)
    max_skipped: float = 0.1          # stop when more than this share of an epoch's clips fail to load
    checkpoint_every_steps: int = 0   # >0: also checkpoint mid-epoch every N steps (long epochs)
    sync_bn: bool = False             # SyncBatchNorm under DDP on GPUs (the paper: per-GPU BN)
    tensorboard: bool = True          # write TensorBoard events when tensorboard is importable
    progress: bool = True             # tqdm bar per epoch (rank 0, interactive terminals)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        """Build from nested dicts; an unknown key is an error, not silently ignored."""
        sections = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}
        unknown = set(d) - set(sections)
        if unknown:
            raise ValueError(f"unknown config section(s): {sorted(unknown)}; expected {sorted(sections)}")
        kw = {}
        for name, klass in sections.items():
            kw[name] = _build(klass, d.get(name, {}), name)
        return cls(**kw)

    def update(self, section: str, **values: Any) -> "Config":
        """Return a copy with some fields of one section replaced (None values are skipped)."""
        cur = getattr(self, section)
        values = {k: v for k, v in values.items() if v is not None}
        known = {f.name for f in fields(cur)}
        bad = set(values) - known
        if bad:
            raise ValueError(f"unknown {section} option(s): {sorted(bad)}")
        return dataclasses.replace(self, **{section: dataclasses.replace(cur, **values)})


def _build(klass, values: dict[str, Any], where: str):
    known = {f.name: f for f in fields(klass)}
    bad = set(values) - set(known)
    if bad:
        raise ValueError(f"unknown option(s) in '{where}': {sorted(bad)}; known: {sorted(known)}")
    values = dict(values)
    if "lr_steps" in values and values["lr_steps"] is not None:
        values["lr_steps"] = tuple(int(s) for s in values["lr_steps"])
    return klass(**values)


def load_yaml(path: str | Path) -> Config:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path) as f:
        d = yaml.safe_load(f) or {}
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a mapping with sections model/data/train")
    return Config.from_dict(d)
