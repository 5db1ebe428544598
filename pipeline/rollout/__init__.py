"""Rollout: play episode groups with a policy backend and an env pool, write trajectory shards.

The collect stage (``pipeline.stages.collect``) commits a round's shards.

>>> from pipeline.rollout import RolloutConfig
>>> RolloutConfig().group_size
8
"""
from pipeline.rollout.config import RolloutConfig
from pipeline.rollout.dispatch import make_groups, play_batches, summary
from pipeline.rollout.task import BatchResult, play_groups, release_resources, rollout_batch, shard_name
from pipeline.rollout.worker import BatchStats, Group, mix_seed, play_batch

__all__ = ["BatchResult", "BatchStats", "Group", "RolloutConfig", "make_groups", "mix_seed", "play_batch",
           "play_batches", "play_groups", "release_resources", "rollout_batch", "shard_name", "summary"]
