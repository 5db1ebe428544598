"""Estimators: how the episode advantage A_E and step advantage A_S combine.

An estimator takes numpy arrays ``adv_episode``, ``adv_step`` and the config and
returns the per-row ``advantage`` the trainer uses. Register more with
``@register_estimator(name)``. Both inputs compare the episodes of one task
(A_S only states revisited inside one episode when it is alone), so every
estimator needs ``rollout.group_size >= 2`` (``RunConfig`` refuses 1).

>>> import numpy as np
>>> from pipeline.advantage.config import AdvantageConfig
>>> ESTIMATORS["gigpo"](np.array([1.0]), np.array([0.5]), AdvantageConfig(step_weight=2.0))
array([2.])
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    from pipeline.advantage.config import AdvantageConfig

Estimator = Callable[[np.ndarray, np.ndarray, "AdvantageConfig"], np.ndarray]
ESTIMATORS: dict[str, Estimator] = {}


def register_estimator(name: str):
    """Register an estimator under ``name`` (decorator).

    >>> @register_estimator("half_step")
    ... def _half(a_e, a_s, cfg):
    ...     return a_e + 0.5 * a_s
    >>> del ESTIMATORS["half_step"]
    """

    def deco(fn: Estimator) -> Estimator:
        ESTIMATORS[name] = fn
        return fn

    return deco


@register_estimator("gigpo")
def gigpo(adv_episode: np.ndarray, adv_step: np.ndarray, cfg: "AdvantageConfig") -> np.ndarray:
    """GiGPO, Eq. 8: A = A_E + omega * A_S."""
    return adv_episode + cfg.step_weight * adv_step


@register_estimator("grpo")
def grpo(adv_episode: np.ndarray, adv_step: np.ndarray, cfg: "AdvantageConfig") -> np.ndarray:
    """GRPO: the episode advantage only."""
    return adv_episode.copy()


@register_estimator("step_only")
def step_only(adv_episode: np.ndarray, adv_step: np.ndarray, cfg: "AdvantageConfig") -> np.ndarray:
    """Ablation: the step (anchor) advantage only."""
    return adv_step.copy()
