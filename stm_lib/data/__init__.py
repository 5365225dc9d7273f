"""Video data: dataset readers in their official layouts, TSN sampling, the paper's transforms,
embedded proxy datasets, a loader that survives bad files, `stm data check` and `stm data bench`.

    from stm_lib.data import build_dataset, make_loader
    ds = build_dataset(cfg.data, "train", frames=8, train=True)
    for clips, labels, n_skipped in make_loader(ds, 16, train=True, num_workers=2, seed=epoch): ...
"""
from stm_lib.data.build import build_dataset
from stm_lib.data.datasets import (
    DATASETS,
    NO_FLIP,
    Sample,
    VideoDataset,
    load_clip,
    read_annotations,
)
from stm_lib.data.decode import DecodeError
from stm_lib.data.loader import SkipCollate, make_loader

__all__ = ["DATASETS", "NO_FLIP", "Sample", "VideoDataset", "build_dataset", "load_clip",
           "read_annotations", "DecodeError", "SkipCollate", "make_loader"]
