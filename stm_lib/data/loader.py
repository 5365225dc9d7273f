"""DataLoader set-up: workers, pinned memory, persistent workers, deterministic seeding, and a
collate that drops clips that failed to decode instead of ending the epoch."""
from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, get_worker_info


class SkipCollate:
    """Stack `(clip, label)` items, dropping `None` (a clip that failed to decode).

    Yields `(clips, labels, n_skipped)`; a batch whose items all failed gives `clips` of size 0
    (shape `(0, *item_shape)`) so the engine can skip it and still count the failures.
    """

    def __init__(self, item_shape: tuple[int, ...] = ()):
        self.item_shape = tuple(item_shape)

    def __call__(self, batch):
        good = [b for b in batch if b is not None]
        skipped = len(batch) - len(good)
        if not good:
            return torch.empty((0, *self.item_shape)), torch.empty(0, dtype=torch.long), skipped
        clips = torch.stack([c for c, _ in good])
        labels = torch.tensor([int(y) for _, y in good], dtype=torch.long)
        return clips, labels, skipped


def seed_worker(worker_id: int) -> None:
    """Each worker's RNGs follow from `torch.initial_seed()`, which the DataLoader derives from
    its generator: the same `seed` gives the same augmentations, run after run."""
    s = torch.initial_seed()
    np.random.seed(s % 2**32)
    random.seed(s)
    info = get_worker_info()
    if info is not None and hasattr(info.dataset, "reseed"):
        info.dataset.reseed(s)


def make_loader(dataset, batch_size: int, train: bool, num_workers: int = 0, sampler=None,
                seed: int = 0) -> DataLoader:
    """A DataLoader yielding `(clips, labels, n_skipped)`.

    Shuffles (train, no sampler) with a generator seeded from `seed`; call with `seed=base +
    epoch` each epoch (or use `sampler.set_epoch`) so a resumed run repeats an uninterrupted
    one. With no workers the dataset's own RNG is reseeded from `seed` instead. A dataset with
    `in_memory = True` (decoded proxies) is always read in this process.
    """
    g = torch.Generator()
    g.manual_seed(int(seed))
    if getattr(dataset, "in_memory", False):
        # frames already decoded (proxies): a clip costs ~0.5 ms of cropping against 60-110 ms of model
        # step, so worker processes would only compete with the model for the cores (measured:
        # runs/pipeline_bench/). Results do not change: augmentation is seeded per clip.
        num_workers = 0
    if num_workers == 0 and hasattr(dataset, "reseed"):
        dataset.reseed(int(seed))
    kw = {}
    if num_workers > 0:
        kw.update(persistent_workers=True, prefetch_factor=2, worker_init_fn=seed_worker)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=SkipCollate(getattr(dataset, "item_shape", ())),
        pin_memory=torch.cuda.is_available(),
        drop_last=train,
        generator=g,
        **kw,
    )
