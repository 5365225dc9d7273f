"""torchrun / DDP set-up, and the sampler that makes a DDP run see the same global batches as a
single process.

One code path for every scale: a plain `stm train` is world size 1; `torchrun --nproc_per_node N`
(one node) or `torchrun --nnodes M --rdzv_backend c10d --rdzv_endpoint HOST:PORT` (many nodes)
sets RANK / WORLD_SIZE / LOCAL_RANK and we join the process group. NCCL on GPUs, gloo on CPU.
"""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from stm_lib.config import Config
from stm_lib.io import atomic_write_text


def write_config(cfg: Config, path: str | Path) -> Path:
    """Write the resolved `cfg` as YAML (atomically): the file `stm train --config` reads back
    equal, every field included."""
    atomic_write_text(path, cfg.to_yaml())
    return Path(path)


def torchrun_command(cfg: Config, nproc: int, config_path: str | Path) -> str:
    """Write `cfg` to `config_path` and return the one-node line that trains it with DDP on
    `nproc` processes. Everything travels in the file, nothing in flags, so no field is dropped
    (the lr and batch are global: the run is the same on 1 or `nproc` GPUs)."""
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    write_config(cfg, config_path)
    return shlex.join(["torchrun", "--nproc_per_node", str(nproc), "-m", "stm_lib.cli", "train",
                       "--config", str(config_path)])


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(pref: str = "auto", local_rank: int = 0) -> torch.device:
    """`auto` = the local GPU when there is one, else CPU."""
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    if pref.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("--device cuda asked for, but torch sees no CUDA device")
        return torch.device(pref if ":" in pref else f"cuda:{local_rank}")
    return torch.device(pref)


def setup(device_pref: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); else world size 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    device = resolve_device(device_pref, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
    if world > 1 and device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # N processes on one host share its cores instead of each grabbing all of them.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_world)))
    return DistInfo(rank, world, local_rank, local_world, device)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks in place (no-op at world size 1)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    if dist.is_available() and dist.is_initialized():
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]
    return obj


class ShardedSampler(Sampler[int]):
    """A permutation derived only from (seed, epoch), dealt out rank::world_size.

    Why not torch's DistributedSampler: the same class serves world size 1, evaluation (no
    padding: every video counted once) and resuming mid-epoch (`skip` drops the indices already
    trained on). With per-rank batch B/W, the union of the ranks' k-th batches is exactly the
    single-process k-th batch of size B, so a DDP run follows the single-process run.
    """

    def __init__(self, n: int, world_size: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0, pad: bool = True):
        self.n, self.world, self.rank = n, world_size, rank
        self.shuffle, self.seed, self.pad = shuffle, seed, pad
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """`skip`: indices of this rank already consumed this epoch (mid-epoch resume)."""
        self.epoch, self.skip = epoch, skip

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed * 100_003 + self.epoch)
            idx = torch.randperm(self.n, generator=g).tolist()
        else:
            idx = list(range(self.n))
        if self.pad and self.world > 1 and self.n % self.world:
            idx += idx[: self.world - self.n % self.world]  # equal length on every rank
        return idx[self.rank :: self.world]

    def __iter__(self):
        return iter(self._indices()[self.skip :])

    def __len__(self) -> int:
        if self.pad and self.world > 1:
            per = -(-self.n // self.world)
        else:
            per = len(range(self.rank, self.n, self.world))
        return max(0, per - self.skip)
