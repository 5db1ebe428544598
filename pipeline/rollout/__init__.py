"""Rollout: play episode groups with a policy backend and an env pool, write trajectory shards.

>>> from pipeline.rollout import RolloutConfig, collect
>>> RolloutConfig().group_size
8
"""
from pipeline.rollout.collect import STAGE, collect, make_groups, summary
from pipeline.rollout.config import RolloutConfig
from pipeline.rollout.task import BatchResult, play_groups, release_resources, rollout_batch, shard_name
from pipeline.rollout.worker import BatchStats, Group, mix_seed, play_batch

__all__ = ["STAGE", "BatchResult", "BatchStats", "Group", "RolloutConfig", "collect", "make_groups", "mix_seed",
           "play_batch", "play_groups", "release_resources", "rollout_batch", "shard_name", "summary"]
