"""Pipeline efficiency: the engine's training clips/s over a bare forward + backward + SGD-step
loop on the same model and batch, in the same process (issue 10, item 1).

The bare loop is the ceiling: its batch is prepared once and stays in memory, so it measures the
model alone. The engine is `stm_lib.engine.train` itself (one short epoch, its own loader,
augmentation, optimiser groups, gradient clipping and bookkeeping), its clips/s read from the
run's metrics (training time only, as every run reports it). Other work on the machine changes
both, so the two alternate, repeat after repeat, and the medians are compared. It measures the
engine, so it lives on the engine's floor (`stm data pipeline-bench` is its command).
"""
from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from stm_lib.config import Config, DataConfig, ModelConfig, TrainConfig
from stm_lib.engine.train import train
from stm_lib.provenance import load_average


def proxy_config(videos=1000, classes=10, proxy_frames=16, resolution=64, model="stm", frames=8,
                 width_mult=0.25, input_size=64, batch_size=16, lr=0.02, num_workers=2, cache=None) -> Config:
    """The proxy setting of the book (proxy profile): what the benchmark measures by default."""
    return Config(
        model=ModelConfig(name=model, frames=frames, num_classes=0, width_mult=width_mult),
        data=DataConfig(dataset="proxy-temporal", input_size=input_size, num_workers=num_workers,
                        proxy_videos=videos, proxy_classes=classes, proxy_frames=proxy_frames,
                        proxy_resolution=resolution, proxy_cache=cache),
        train=TrainConfig(epochs=1, batch_size=batch_size, lr=lr, lr_steps=(), fc_lr_mult=1.0, device="cpu",
                          tensorboard=False, progress=False))


def engine_clips_per_s(cfg: Config, steps: int, workdir: Path) -> float:
    """One epoch of `steps` steps through `train()`; the clips/s it logs for that epoch."""
    out = Path(tempfile.mkdtemp(prefix="engine-", dir=workdir))
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=1, max_steps_per_epoch=steps,
                                                             out=str(out)))
    train(cfg, command="stm data pipeline-bench (engine)")
    rows = (out / "metrics.jsonl").read_text().splitlines()
    return float(json.loads(rows[-1])["clips_per_s"])


def bare_batch(cfg: Config) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The first batch of the training split, decoded and augmented once: `(clips, labels, classes)`."""
    from stm_lib.data import build_dataset

    ds = build_dataset(cfg.data, "train", frames=cfg.model.frames, train=True)
    ds.reseed(cfg.train.seed)
    items = [ds[i] for i in range(cfg.train.batch_size)]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items]), ds.num_classes


def bare_clips_per_s(cfg: Config, x: torch.Tensor, y: torch.Tensor, classes: int, steps: int) -> float:
    """Forward, loss, backward, SGD step on a fresh model of the same config and the in-memory
    batch; one untimed warm-up step."""
    from stm_lib.models import build_model

    torch.manual_seed(cfg.train.seed)
    model = build_model(dataclasses.replace(cfg.model, num_classes=classes))
    model.train()
    opt = torch.optim.SGD(model.parameters(), cfg.train.lr, momentum=cfg.train.momentum)

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * len(y) / (time.perf_counter() - t0)


def run(cfg: Config, steps: int = 20, repeats: int = 3, log=print, engine_only: bool = False) -> dict:
    """Bare, engine, bare, engine, ..., bare: each engine repeat is compared with the mean of the
    bare repeats just before and after it, so a change in the machine's other load hits both
    sides of a pair; the median of these ratios is the pipeline efficiency."""
    from stm_lib.data.proxy import ensure_proxy

    ensure_proxy("temporal", cfg.data, progress=False)
    x, y, classes = bare_batch(cfg)  # also writes the decoded arrays before anything is timed
    engine, bare = [], []
    with tempfile.TemporaryDirectory(prefix="stm-pipeline-bench-") as work:
        if not engine_only:
            bare.append(bare_clips_per_s(cfg, x, y, classes, steps))
        for r in range(repeats):
            engine.append(engine_clips_per_s(cfg, steps, Path(work)))
            if engine_only:
                log(f"repeat {r + 1}/{repeats}: engine {engine[-1]:.2f} clips/s")
                continue
            bare.append(bare_clips_per_s(cfg, x, y, classes, steps))
            around = (bare[-2] + bare[-1]) / 2
            log(f"repeat {r + 1}/{repeats}: engine {engine[-1]:.2f} clips/s, bare loop {bare[-2]:.2f} before / "
                f"{bare[-1]:.2f} after, ratio {engine[-1] / around:.3f}")
    e = statistics.median(engine)
    if engine_only:
        return {"engine_clips_per_s": e, "engine_repeats": engine, "torch_threads": torch.get_num_threads()}
    pairs = [engine[r] / ((bare[r] + bare[r + 1]) / 2) for r in range(repeats)]
    b = statistics.median(bare)
    return {"engine_clips_per_s": e, "bare_clips_per_s": b, "ratio": statistics.median(pairs),
            "ratio_of_medians": e / b, "pair_ratios": pairs,
            "engine_repeats": engine, "bare_repeats": bare, "steps_per_repeat": steps,
            "torch_threads": torch.get_num_threads(), "loadavg_end": load_average(),
            "proxy_arrays": os.environ.get("STM_PROXY_ARRAYS", "1") != "0",
            "config": cfg.to_dict()}


def side_by_side(argv: list[str], threads_total: int = 2) -> dict:
    """Total clips/s of 1 process x `threads_total` threads against `threads_total` processes x 1
    thread (each an engine-only bench with the same arguments), run as subprocesses."""
    def launch(threads: int):
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        cmd = [sys.executable, "-m", "stm_lib.cli", "data", "pipeline-bench", *argv, "--engine-only", "--json"]
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)

    out = {}
    for name, procs in (("1x%d" % threads_total, lambda: [launch(threads_total)]),
                        ("%dx1" % threads_total, lambda: [launch(1) for _ in range(threads_total)])):
        ps = procs()
        res = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in ps]
        if any(p.returncode for p in ps):
            raise RuntimeError(f"side-by-side {name}: a benchmark process failed")
        out[name] = {"processes": len(ps), "clips_per_s_each": [r["engine_clips_per_s"] for r in res],
                     "total_clips_per_s": sum(r["engine_clips_per_s"] for r in res)}
    return out


