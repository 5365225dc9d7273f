"""`build_dataset`: a `DataConfig` -> the dataset it names. The floor above the readers
(`datasets`) and the proxies (`proxy`): a proxy is generated (or found in its cache) first, read
through the Something-Something v1 reader, then served from its decoded-once array."""
from __future__ import annotations

from stm_lib.data import proxy
from stm_lib.data.datasets import DATASETS, NO_FLIP, PROXIES, READERS, VideoDataset, read_annotations


def build_dataset(cfg, split: str, frames: int, train: bool) -> VideoDataset:
    """The dataset `cfg.dataset` (a `DataConfig`), split "train" or "val" (UCF-101/HMDB-51: the
    test list of split `cfg.split`). Proxies are generated (or found in the cache) first and
    read through the Something-Something v1 reader."""
    name, root = cfg.dataset, cfg.data_root
    if name in PROXIES:
        root = proxy.ensure_proxy(name.split("-", 1)[1], cfg)
        reader = "ssv1"
    elif name in READERS:
        reader = name
    else:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    classes, samples = read_annotations(reader, root, split, fold=cfg.split, list_file=cfg.list_file,
                                        val_list_file=getattr(cfg, "val_list_file", None))
    if not samples:
        raise ValueError(f"dataset {name!r} split {split!r} under {root} has no samples")
    flip = cfg.flip if cfg.flip is not None else name not in NO_FLIP
    ds = VideoDataset(samples, classes, frames, train, input_size=cfg.input_size,
                      scale_size=cfg.scale_size, flip=flip, test_clips=cfg.test_clips,
                      test_crops=cfg.test_crops, backend=getattr(cfg, "decoder", "auto"), name=name,
                      flow_root=getattr(cfg, "flow_root", None), flow_stack=getattr(cfg, "flow_stack", 10))
    return proxy.decode_once(ds, root, split) if name in PROXIES else ds
