"""DeepSpeed trainer: advantage rows of a round -> PPO-clip updates -> HF checkpoint.

The config alone imports no torch (``trainer.config``); the rest is imported when first used.

>>> from trainer import TrainerConfig
>>> TrainerConfig().loss_agg_mode
'token-mean'
"""
from importlib import import_module

from trainer.config import TrainerConfig

_LAZY = {"shutdown_distributed": "trainer.deepspeed_engine", "train_from_run": "trainer.rounds",
         "TrainResult": "trainer.updates", "mean_logprob": "trainer.updates", "train_round": "trainer.updates"}

__all__ = ["TrainResult", "TrainerConfig", "mean_logprob", "shutdown_distributed", "train_from_run", "train_round"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'trainer' has no attribute {name!r}")
    return getattr(import_module(_LAZY[name]), name)
