"""One typed config object. CLI flags, YAML files and notebook parameters all become a `Config`;
builders (model, data, engine) read from it and never from globals.

Defaults are the paper's recipe (section 4.2) where the paper gives one; `width_mult`,
`input_size` and the proxy datasets are the knobs that scale a run down to a CPU. `FULL_RECIPE`
is the paper's batch and lr per frame count.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
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
    # Ablation knobs: BlockSpec fields (cmm_reduction, fusion, cstm, ...) and the variant's
    # `where` / `stages`, overriding the registry variant `name` (models.registry.resolve_variant).
    block: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_fields(self, "model")
        if not isinstance(self.block, dict):
            raise ValueError(f"model.block must be a mapping of BlockSpec fields, got {self.block!r}")
        # lists (YAML, notebooks) and tuples compare equal after a round trip
        self.block = {k: tuple(v) if isinstance(v, list) else v for k, v in self.block.items()}


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
    # 2000: from scratch, 8 epochs of 1000 clips are 400 SGD steps at batch 16, too few for even the
    # frame-difference reference to learn the temporal proxy (runs/calibration/README.md, session 8);
    # the book's proxy profile sets its own count (stm_lib/book/tables.py)
    proxy_videos: int = 2000
    proxy_classes: int = 10
    proxy_frames: int = 16
    proxy_resolution: int = 64
    proxy_cache: str | None = None    # None = ~/.cache/stm/proxy
    proxy_seed: int = 0               # the proxy's content depends only on these proxy_* fields
    proxy_val_clips: int = 0          # validation clips; 0 = a fifth of proxy_videos
    val_list_file: str | None = None  # `list` dataset: the validation list (same format)
    decoder: str = "auto"             # video files: auto (decord, PyAV fallback) | decord | pyav
    flow_root: str | None = None      # two-stream ST-ResNet: `<flow_root>/<clip id>/flow_x_00001.jpg ...`
    flow_stack: int = 10              # L: flow fields stacked per frame (2L channels)

    def __post_init__(self) -> None:
        check_fields(self, "data")


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
"""`torch.compile` modes; reduce-overhead and max-autotune capture CUDA graphs."""


@dataclass
class TrainConfig:
    epochs: int = 50
    batch_size: int = 64
    lr: float = 0.01                  # the lr used as is (paper 4.2: 0.01 at batch 64 and at 32)
    lr_scale: bool = False            # a choice, not the paper's: lr * batch_size / 64 (global batch)
    lr_steps: tuple[int, ...] = (30, 40, 45)
    lr_schedule: str = "step"         # step | cosine
    warmup_epochs: float = 0          # fractions work (engine.optim); the default stays 0 (cache keys)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    clip_grad: float = 20.0
    fc_lr_mult: float | None = None   # fc weight x this, bias x twice; None = 5 with `pretrained`, else 1
    amp: str = "none"                 # none | bf16 | fp16
    channels_last: bool = False
    compile: bool = False
    compile_mode: str = "default"     # torch.compile mode with `compile` (COMPILE_MODES); not part of a run's identity
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

    def __post_init__(self) -> None:
        check_fields(self, "train")
        try:
            self.lr_steps = tuple(int(s) for s in self.lr_steps)
        except (TypeError, ValueError):
            raise ValueError(f"train.lr_steps must be a list of epochs, got {self.lr_steps!r}") from None


# Paper section 4.2: 8 GPUs x 8 clips of 8 frames, 8 x 4 clips of 16 frames, lr 0.01 for both
# (not scaled with the batch). The `full` profile trains with exactly these.
FULL_RECIPE = {8: dict(batch_size=64, lr=0.01, lr_scale=False),
               16: dict(batch_size=32, lr=0.01, lr_scale=False)}


def full_recipe(frames: int) -> dict[str, Any]:
    """TrainConfig fields of the paper's recipe for `frames` (8 or 16), e.g.
    `cfg.update("train", **full_recipe(16))`."""
    if frames not in FULL_RECIPE:
        raise ValueError(f"the paper trains 8 or 16 frames; no full recipe for frames={frames}")
    return dict(FULL_RECIPE[frames])


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        """The config as YAML that `load_yaml` reads back equal (tuples written as lists)."""
        import yaml

        return yaml.safe_dump(plain(self.to_dict()), sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        """Build from nested dicts; an unknown key is an error, not silently ignored."""
        sections = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}
        unknown = set(d) - set(sections)
        if unknown:
            raise ValueError(f"unknown config section(s): {sorted(unknown, key=str)}; expected {sorted(sections)}")
        kw = {}
        for name, klass in sections.items():
            kw[name] = _build(klass, d.get(name, {}), name)
        return cls(**kw)

    def merge(self, overrides: dict[str, dict[str, Any]] | None) -> "Config":
        """A copy with notebook-style overrides `{"model": {...}, "data": {...}, "train": {...}}`
        applied; `model.block` entries are merged into the existing block, not replacing it."""
        d = self.to_dict()
        for section, values in (overrides or {}).items():
            if section not in d:
                raise ValueError(f"overrides: unknown section {section!r}; use model, data or train")
            if not isinstance(values, dict):
                raise ValueError(f"overrides[{section!r}] must be a dict of fields, got {values!r}")
            values = dict(values)
            if section == "model" and isinstance(values.get("block"), dict):
                values["block"] = {**d["model"]["block"], **values["block"]}
            d[section].update(values)
        return Config.from_dict(d)

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
    if not isinstance(values, dict):
        raise ValueError(f"config section '{where}' must be a mapping, got {values!r}"[:300])
    known = {f.name: f for f in fields(klass)}
    bad = set(values) - set(known)
    if bad:
        raise ValueError(f"unknown option(s) in '{where}': {sorted(bad, key=str)}; known: {sorted(known)}"[:300])
    return klass(**values)


# Ranges a field's value must lie in (issue 28): a negative epoch count or a dropout of 1 is refused
# here, in one line, instead of failing deep inside a run that has already written files.
_AT_LEAST_1 = (lambda v: v >= 1, "at least 1")
_NOT_NEGATIVE = (lambda v: v >= 0, "0 or more")
_POSITIVE = (lambda v: v > 0, "above 0")
RANGES = {
    "model": {"frames": _AT_LEAST_1, "num_classes": _NOT_NEGATIVE, "width_mult": _POSITIVE,
              "dropout": (lambda v: 0 <= v < 1, "in [0, 1)")},
    "data": {"split": _AT_LEAST_1, "input_size": _AT_LEAST_1, "scale_size": _NOT_NEGATIVE, "test_clips": _AT_LEAST_1,
             "test_crops": _AT_LEAST_1, "num_workers": _NOT_NEGATIVE, "proxy_videos": _AT_LEAST_1,
             "proxy_classes": (lambda v: v >= 2, "at least 2"), "proxy_frames": _AT_LEAST_1,
             "proxy_resolution": _AT_LEAST_1, "proxy_val_clips": _NOT_NEGATIVE, "flow_stack": _AT_LEAST_1},
    "train": {"epochs": _AT_LEAST_1, "batch_size": _AT_LEAST_1, "lr": _POSITIVE, "lr_steps": _NOT_NEGATIVE,
              "warmup_epochs": _NOT_NEGATIVE, "momentum": _NOT_NEGATIVE,
              "weight_decay": _NOT_NEGATIVE, "clip_grad": _NOT_NEGATIVE, "fc_lr_mult": _POSITIVE, "seed": _NOT_NEGATIVE,
              "max_steps_per_epoch": _NOT_NEGATIVE, "max_skipped": (lambda v: 0 <= v <= 1, "in [0, 1]"),
              "checkpoint_every_steps": _NOT_NEGATIVE},
}
_KIND = {"int": "an integer", "float": "a finite number", "bool": "true or false", "str": "a string",
         "tuple[int, ...]": "a list of integers", "dict[str, Any]": "a mapping"}


def _typed(v: Any, t: str) -> tuple[bool, Any]:
    """(does `v` fit annotation `t`, the value to keep). bool is not an int; an int is a float;
    a float written as text ("1e-3", which YAML 1.1 reads as a string) is read as that float;
    numpy scalars become Python numbers (YAML and JSON write those)."""
    if v is None:
        return t.endswith("| None"), v
    t = t.removesuffix(" | None")
    if t == "int":
        ok = isinstance(v, numbers.Integral) and not isinstance(v, bool)
        return ok, int(v) if ok else v
    if t == "float":
        if isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                return False, v
        if not isinstance(v, numbers.Real) or isinstance(v, bool) or not math.isfinite(v):
            return False, v
        return True, v if isinstance(v, int) else float(v)
    if t == "tuple[int, ...]":
        return isinstance(v, (list, tuple)) and all(_typed(x, "int")[0] for x in v), v
    return isinstance(v, {"bool": bool, "str": str, "dict[str, Any]": dict}[t]), v


def check_fields(obj: Any, section: str) -> None:
    """Every field of a ModelConfig / DataConfig / TrainConfig against its annotation and RANGES,
    raising one line `section.key: expected ..., got ...` (load_yaml adds the file). Runs in
    `__post_init__`, so YAML files, notebook overrides, flags and checkpoints are all checked
    before a run writes anything."""
    for f in fields(obj):
        v = getattr(obj, f.name)
        ok, v = _typed(v, str(f.type))
        if not ok:
            t = str(f.type).removesuffix(" | None")
            want = _KIND.get(t, t) + (" or null" if str(f.type).endswith("| None") else "")
            raise ValueError(f"{section}.{f.name}: expected {want}, got {v!r}"[:300])
        setattr(obj, f.name, v)
        test, text = RANGES.get(section, {}).get(f.name, (None, ""))
        for x in (v if isinstance(v, (list, tuple)) else [v]):
            if test and x is not None and not test(x):
                raise ValueError(f"{section}.{f.name}: must be {text}, got {x!r}")


def plain(d):
    """Nested dicts with tuples as lists: what YAML, JSON and weights_only checkpoints store."""
    if isinstance(d, dict):
        return {k: plain(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [plain(v) for v in d]
    return d


MAX_YAML_DEPTH = 50        # a config is 3 levels deep (section, field, block knob)
MAX_YAML_VALUES = 10_000   # a config holds about 70 values


def safe_load(text: str) -> Any:
    """`yaml.safe_load` that refuses (a yaml.YAMLError with the line) documents nested deeper than
    MAX_YAML_DEPTH, since PyYAML composes recursively and 100,000 `[` are a RecursionError, and
    documents whose aliases expand to more than MAX_YAML_VALUES values or contain themselves: a
    361-byte "billion laughs" loads as a small graph of shared lists, but printing or copying it
    (an error message, `Config.to_dict`) builds 10^9 strings."""
    import yaml
    from yaml.composer import ComposerError

    class Limited(yaml.SafeLoader):
        def __init__(self, stream):
            super().__init__(stream)
            self.depth, self.sizes = 0, {}   # id(node) -> values under it, aliases expanded

        def compose_node(self, parent, index):
            ev = self.peek_event()
            inside = isinstance(ev, yaml.AliasEvent) and ev.anchor in self.anchors
            if inside and id(self.anchors[ev.anchor]) not in self.sizes:   # its anchor is still being composed
                raise ComposerError(None, None, f"the alias *{ev.anchor} contains itself", ev.start_mark)
            if self.depth >= MAX_YAML_DEPTH:
                raise ComposerError(None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", ev.start_mark)
            self.depth += 1
            try:
                node = super().compose_node(parent, index)
            finally:
                self.depth -= 1
            if id(node) not in self.sizes:   # an alias counts its anchor's whole size once more
                kids = node.value if isinstance(node, yaml.SequenceNode) else (
                    [x for kv in node.value for x in kv] if isinstance(node, yaml.MappingNode) else [])
                self.sizes[id(node)] = 1 + sum(self.sizes[id(k)] for k in kids)
                if self.sizes[id(node)] > MAX_YAML_VALUES:
                    raise ComposerError(None, None, f"more than {MAX_YAML_VALUES} values (aliases expanded)",
                                        ev.start_mark)
            return node

    loader = Limited(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_yaml(path: str | Path) -> Config:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        d = safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ValueError(f"{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a mapping with sections model/data/train")
    try:
        return Config.from_dict(d)
    except (TypeError, ValueError) as e:   # one short line, whatever the file holds
        raise ValueError(f"{path}: {str(e)[:300]}") from None
