"""DeepSpeed trainer: advantage rows of a round -> PPO-clip updates -> HF checkpoint.

The config alone imports no torch (``trainer.config``); the rest is imported when first used.

>>> from trainer import TrainerConfig
>>> TrainerConfig().loss_agg_mode
'token-mean'
"""
from importlib import import_module

from trainer.config import TrainerConfig

_LAZY = {"shutdown_distributed": "trainer.distributed", "train_round_rank": "trainer.distributed",
         "train_from_run": "trainer.rounds", "TrainResult": "trainer.train", "mean_logprob": "trainer.train",
         "train_round": "trainer.train"}

__all__ = ["TrainResult", "TrainerConfig", "mean_logprob", "shutdown_distributed", "train_from_run", "train_round",
           "train_round_rank"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'trainer' has no attribute {name!r}")
    return getattr(import_module(_LAZY[name]), name)
