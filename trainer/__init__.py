"""DeepSpeed trainer: advantage rows of a round -> PPO-clip updates -> HF checkpoint.

>>> from trainer import TrainerConfig
>>> TrainerConfig().loss_agg_mode
'token-mean'
"""
from trainer.config import TrainerConfig
from trainer.deepspeed_engine import shutdown_distributed
from trainer.rounds import train_from_run
from trainer.updates import TrainResult, mean_logprob, train_round

__all__ = ["TrainResult", "TrainerConfig", "mean_logprob", "shutdown_distributed", "train_from_run", "train_round"]
