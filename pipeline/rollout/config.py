"""Rollout settings: group size, batching, policy backend, sampling, env pool, prompts, Dask placement.

>>> cfg = RolloutConfig(group_size=4, groups_per_batch=2)
>>> cfg.episodes_per_batch
8
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.envs.alfworld import AlfworldEnvConfig
from pipeline.envs.pool import PoolConfig
from pipeline.envs.prompts import PromptConfig
from pipeline.policy.base import PolicyConfig, SamplingConfig
from pipeline.validators import at_least, choice


@dataclass(frozen=True)
class RolloutConfig:
    """How one round's trajectories are collected."""

    group_size: int = 8  # G: episodes per task, all from the same start state (paper: 8)
    # most groups one Dask task plays in lock-step (one shard pair); fewer to use every worker
    groups_per_batch: int = 4
    policy: PolicyConfig = field(default_factory=PolicyConfig)  # backend and device of the policy
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # temperature, top_p, max_new_tokens, seed
    env: AlfworldEnvConfig = field(default_factory=AlfworldEnvConfig)  # max_steps (truncation), win reward
    pool: PoolConfig = field(default_factory=PoolConfig)  # env worker processes per rollout task
    prompt: PromptConfig = field(default_factory=PromptConfig)  # prompt template, history, action parsing
    resources: dict = field(default_factory=dict)  # Dask worker resources per task, e.g. {"GPU": 1}; {} on CPU
    retries: int = 2  # Dask retries of a failed rollout task (its shards are rewritten, never duplicated)
    # progress bars with an ETA (collect, evaluate, advantage): true, false, or auto (when stderr is a terminal)
    progress: bool | str = "auto"

    def __post_init__(self) -> None:
        at_least(self, "group_size", 1)
        at_least(self, "groups_per_batch", 1)
        at_least(self, "retries", 0)
        choice(self, "progress", (True, False, "auto"))
        if self.policy.backend == "expert" and self.env.expert is None:
            raise ValueError("RolloutConfig.env.expert must name the expert ('handcoded' or 'planner') when "
                             "policy.backend is 'expert'")
        for name, amount in self.resources.items():
            if not isinstance(name, str) or isinstance(amount, bool) or not isinstance(amount, (int, float)) \
                    or amount <= 0:
                raise ValueError(f"RolloutConfig.resources[{name!r}] must be a positive number, got {amount!r}")

    @property
    def episodes_per_batch(self) -> int:
        """Episodes played together by one rollout task."""
        return self.group_size * self.groups_per_batch
