"""Fixtures shared by several test files, built once per session (the suite's expensive parts).

- `proxy_cache`: one proxy cache folder. Proxies are cached under `<cache>/<kind>-<hash of their
  parameters>`, so every tiny run of the session (train, evaluate, resume, DDP) that asks for the
  same proxy generates it once.
- `tiny_run`: one finished tiny training run (`tiny_config`, 2 epochs) for every test that only
  needs *a* trained run folder (evaluate, predict, the CLI, resume-to-a-no-op).
"""
from __future__ import annotations

from pathlib import Path

import pytest


def tiny_config(out: Path, cache: Path, **train):
    """4-class temporal proxy, 32 train / 8 val clips, 4 frames of 32 px, TSM at width 0.25,
    2 epochs with the lr step after the first."""
    from stm_lib.config import Config

    cfg = Config()
    cfg = cfg.update("model", name="tsm", frames=4, num_classes=0, width_mult=0.25)
    cfg = cfg.update("data", dataset="proxy-temporal", proxy_cache=str(cache), proxy_videos=40,
                     proxy_classes=4, proxy_frames=8, proxy_resolution=32, input_size=32, num_workers=0)
    t = dict(epochs=2, batch_size=8, lr=0.01, lr_steps=(1,), out=str(out), deterministic=True,
             progress=False)  # tensorboard: on (written only when installed)
    t.update(train)
    return cfg.update("train", **t)


@pytest.fixture(scope="session")
def proxy_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("proxy-cache")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, proxy_cache):
    from stm_lib.engine import train

    return train(tiny_config(tmp_path_factory.mktemp("run") / "run", proxy_cache))
