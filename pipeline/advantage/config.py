"""Configuration of the GiGPO advantage engine.

Defaults follow the public reference trainer (verl-agent, ``gigpo/core_gigpo.py``)
except ``norm``: verl-agent's yaml default is ``mean_norm`` (our ``"mean"``); we
default to the paper's mean-and-std normalisation (``"std"``).

>>> AdvantageConfig(gamma=0.9).norm
'std'
>>> AdvantageConfig(gamma=-1.0)
Traceback (most recent call last):
...
ValueError: AdvantageConfig.gamma must be in [0.0, 1.0], got -1.0
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.validators import at_least, choice, finite_in, in_range, must

NORMS = ("std", "mean")
EPISODE_STATS = ("steps", "episodes")
CLUSTER_ORDERS = ("episode", "step")


@dataclass(frozen=True)
class AdvantageConfig:
    """How advantages are computed from a round's step rows."""

    # "gigpo" (A_E + step_weight * A_S), "grpo" (A_E), "step_only" (A_S), "rloo" (leave-one-out episode baseline),
    # "ppo" (GAE on a critic, computed by the trainer: trainer.critic); see estimators.py
    estimator: str = "gigpo"
    # discount of the step return G_t = r_t + gamma * G_{t+1} (no bootstrap at truncation); ppo's GAE discounts
    # with trainer.critic.gamma
    gamma: float = 0.95
    # omega: weight of the step advantage A_S in the "gigpo" estimator
    step_weight: float = 1.0
    # added to the std in "std" normalisation: (x - mean) / (std + epsilon)
    epsilon: float = 1e-6
    # "std": (x - mean) / (unbiased std + epsilon); "mean": x - mean
    norm: str = "std"
    # A_E statistics over every step row of a group ("steps", verl-agent) or one entry per episode ("episodes", Eq. 3)
    episode_stats: str = "steps"
    # subtracted from an invalid step's return (after discounting) and from that row's episode score (and, for
    # ppo, from that step's reward)
    invalid_penalty: float = 0.1
    # anchor-state strategy: "exact", "normalized", "similarity", "embedding", "columns", "state" (true state,
    # the oracle), "composite" (observation + admissible commands); see anchors.py
    anchor: str = "exact"
    # similarity/embedding: a text joins a cluster when ratio/cosine to its first member >= this
    anchor_threshold: float = 0.95
    # "normalized": text normalisers applied in order (see anchors.NORMALIZERS)
    normalizers: tuple[str, ...] = ("strip", "collapse_whitespace")
    # "columns": the columns whose values together are the anchor state (e.g. ("url", "cart"))
    anchor_columns: tuple[str, ...] = ()
    # similarity/embedding greedy order inside a group: "episode" (episode by episode, verl-agent) or "step"
    cluster_order: str = "episode"
    # "embedding": torch device of the sentence-embedding model
    embedding_device: str = "cpu"
    # "embedding": texts per encode batch
    embedding_batch_size: int = 256

    def __post_init__(self) -> None:
        from pipeline.advantage.anchors import ANCHORS, NORMALIZERS
        from pipeline.advantage.estimators import ESTIMATORS

        choice(self, "estimator", sorted(ESTIMATORS))
        choice(self, "norm", sorted(NORMS))
        choice(self, "episode_stats", sorted(EPISODE_STATS))
        choice(self, "anchor", sorted(ANCHORS))
        choice(self, "cluster_order", sorted(CLUSTER_ORDERS))
        for name in self.normalizers:
            choice(self, "normalizers", sorted(NORMALIZERS), value=name)
        finite_in(self, "gamma", 0.0, 1.0)
        must(self, "step_weight", isinstance(self.step_weight, (int, float)) and math.isfinite(self.step_weight),
             "finite")
        finite_in(self, "invalid_penalty", 0.0, math.inf)
        must(self, "epsilon", math.isfinite(self.epsilon) and self.epsilon > 0, "finite and > 0")
        in_range(self, "anchor_threshold", 0, 1, open_low=True)
        if self.anchor == "columns" and not self.anchor_columns:
            raise ValueError("AdvantageConfig.anchor_columns must name at least one column when anchor='columns'")
        at_least(self, "embedding_batch_size", 1)
        object.__setattr__(self, "normalizers", tuple(self.normalizers))
        object.__setattr__(self, "anchor_columns", tuple(self.anchor_columns))
