"""Estimators: how a row's ``advantage`` (what the trainer uses) is made from the round's step rows.

An estimator takes numpy arrays ``adv_episode``, ``adv_step`` and the config and
returns the per-row ``advantage``. Register more with ``@register_estimator(name)``.
One registered with ``rows=True`` also gets an ``EstimatorRows`` (the rows'
penalised scores and rewards and their episode/group segments) as a fourth
argument. ``groups=True`` (the default) says its advantages compare the episodes
of one task, so it needs ``rollout.group_size >= 2`` (``RunConfig`` refuses 1);
``critic=True`` says the trainer finishes the advantage with a value model
(``RunConfig`` then turns on ``trainer.critic``). ``ESTIMATOR_SPECS`` holds both.

>>> import numpy as np
>>> from pipeline.advantage.config import AdvantageConfig
>>> ESTIMATORS["gigpo"](np.array([1.0]), np.array([0.5]), AdvantageConfig(step_weight=2.0))
array([2.])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from pipeline.advantage.returns import Segments

if TYPE_CHECKING:
    from pipeline.advantage.config import AdvantageConfig

Estimator = Callable[..., np.ndarray]  # (adv_episode, adv_step, cfg[, rows]) -> advantage
ESTIMATORS: dict[str, Estimator] = {}


@dataclass(frozen=True)
class EstimatorSpec:
    """What an estimator needs besides A_E and A_S."""

    rows: bool = False  # called with an EstimatorRows as a fourth argument
    groups: bool = True  # compares the episodes of one group: needs rollout.group_size >= 2
    critic: bool = False  # the trainer computes the advantage with a value model (trainer.critic)


ESTIMATOR_SPECS: dict[str, EstimatorSpec] = {}


@dataclass(frozen=True)
class EstimatorRows:
    """Per-row inputs of one chunk of rows in canonical (group, episode, step) order."""

    score: np.ndarray  # the row's episode score (sum of its rewards) minus the row's invalid-action penalty
    reward: np.ndarray  # the row's reward minus its invalid-action penalty
    seg: Segments  # episode and group runs of the rows


def register_estimator(name: str, *, rows: bool = False, groups: bool = True, critic: bool = False):
    """Register an estimator under ``name`` (decorator); see the module doc for the flags.

    >>> @register_estimator("half_step")
    ... def _half(a_e, a_s, cfg):
    ...     return a_e + 0.5 * a_s
    >>> ESTIMATOR_SPECS["half_step"].groups
    True
    >>> del ESTIMATORS["half_step"], ESTIMATOR_SPECS["half_step"]
    """

    def deco(fn: Estimator) -> Estimator:
        ESTIMATORS[name] = fn
        ESTIMATOR_SPECS[name] = EstimatorSpec(rows=rows, groups=groups, critic=critic)
        return fn

    return deco


def estimate(adv_episode: np.ndarray, adv_step: np.ndarray, cfg: "AdvantageConfig", rows: EstimatorRows) \
        -> np.ndarray:
    """The ``advantage`` column of ``cfg.estimator``."""
    fn = ESTIMATORS[cfg.estimator]
    spec = ESTIMATOR_SPECS.get(cfg.estimator, EstimatorSpec())
    return fn(adv_episode, adv_step, cfg, rows) if spec.rows else fn(adv_episode, adv_step, cfg)


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


@register_estimator("rloo", rows=True)
def rloo(adv_episode: np.ndarray, adv_step: np.ndarray, cfg: "AdvantageConfig", rows: EstimatorRows) -> np.ndarray:
    """RLOO: A = R - mean of the other episodes' R in the group (leave-one-out), on every step of the episode.

    R is A_E's score: the episode's summed reward minus the row's own invalid-action
    penalty; each other episode enters once, with its step-0 row's score (as A_E with
    ``episode_stats="episodes"``), whatever ``episode_stats`` says. Not divided by a
    std, as in the RLOO paper (Ahmadian et al. 2024) and verl's ``rloo``: ``norm``
    and ``epsilon`` do not apply. A group of one episode has baseline 0 (verl).

    >>> from pipeline.advantage.config import AdvantageConfig
    >>> seg = Segments.of(np.zeros(3, int), np.array([0, 1, 2]))
    >>> rows = EstimatorRows(np.array([3.0, 0.0, 0.0]), np.zeros(3), seg)
    >>> rloo(None, None, AdvantageConfig(), rows).tolist()
    [3.0, -1.5, -1.5]
    """
    seg = rows.seg
    entry = rows.score[seg.ep_starts]
    group_first = entry[np.searchsorted(seg.ep_group, np.arange(seg.n_groups))]
    shifted = entry - group_first[seg.ep_group]  # equal scores give exactly 0
    total = np.bincount(seg.ep_group, weights=shifted, minlength=seg.n_groups)
    count = np.bincount(seg.ep_group, minlength=seg.n_groups)
    baseline = (total[seg.ep_group] - shifted) / np.maximum(count[seg.ep_group] - 1, 1)
    adv = rows.score - group_first[seg.group_index] - baseline[seg.ep_index]
    return np.where(count[seg.group_index] > 1, adv, rows.score)


@register_estimator("ppo", rows=True, groups=False, critic=True)
def ppo(adv_episode: np.ndarray, adv_step: np.ndarray, cfg: "AdvantageConfig", rows: EstimatorRows) -> np.ndarray:
    """PPO with a critic: the step's reward minus its invalid-action penalty, GAE's input.

    The trainer (``trainer.critic``) replaces it with GAE over the episode's steps on
    its value head's values (``trainer/gae.py``); the stage stores what it needs.
    Needs no groups: an episode alone is enough.
    """
    return rows.reward.copy()
