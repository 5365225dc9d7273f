"""stm: STM (SpatioTemporal and Motion Encoding, Jiang et al., ICCV 2019) and related 2D-CNN
temporal modules, with the data pipeline, training engine and profiling around them."""
from stm_lib.config import Config, DataConfig, ModelConfig, TrainConfig

__version__ = "0.1.0"
__all__ = ["Config", "ModelConfig", "DataConfig", "TrainConfig", "build_model", "list_models"]


def __getattr__(name):
    # Lazy so that `import stm_lib` stays cheap (no torch import for config-only use).
    if name in ("build_model", "list_models"):
        from stm_lib import models

        return getattr(models, name)
    raise AttributeError(name)
