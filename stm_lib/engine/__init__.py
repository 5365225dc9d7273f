"""Training and evaluation engine: the paper's recipe (section 4.2) on one CPU, one GPU or many
(torchrun/DDP), with atomic checkpoints, exact resume, metrics files and the two test protocols.

    from stm_lib.engine import train, evaluate, predict
    run_dir = train(cfg)                         # -> Path of the run folder
    evaluate(run_dir, clips=10, crops=3)         # -> {"top1": ..., "top5": ..., ...}
"""
from stm_lib.engine.evaluate import evaluate, predict
from stm_lib.engine.train import NonFiniteLossError, train

__all__ = ["train", "evaluate", "predict", "NonFiniteLossError"]
