"""GAE over the steps of each episode, on the critic's values at the round's start.

A step is one transition: state s_t (its prompt), action (its response), reward r_t
(the env reward minus the invalid-action penalty: the ``ppo`` estimator's
``advantage`` column). verl's recurrence, taken across an episode's steps instead of
the tokens of one response:

- ``delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)``, with ``V = 0`` after an episode's
  last step, truncated or not (no bootstrap at truncation, as the step returns);
- ``A_t = delta_t + gamma * lam * A_{t+1}``; value target ``R_t = A_t + V(s_t)``;
- then (``critic.whiten``) the round's advantages are whitened over its steps, one
  entry per step: ``(A - mean) / sqrt(unbiased var + 1e-8)`` (verl whitens over
  response tokens); the targets are not.

verl-agent's PPO baseline runs GAE over the tokens of each step's response alone;
here the steps of an episode are chained, so a step's advantage sees the episode's
later rewards through the values. A step the trainer drops (an empty response) is
skipped: its neighbours are chained directly and its reward is lost.

>>> adv, ret = gae(np.array([0.0, 1.0]), np.array([0.5, 0.5]), np.array([7, 7]), np.array([0, 1]), 1.0, 1.0)
>>> adv.tolist(), ret.tolist()
([0.5, 0.5], [1.0, 1.0])
"""
from __future__ import annotations

import dataclasses

import numpy as np

from pipeline.advantage.returns import Segments, canonical_order, step_returns
from trainer.batches import RoundData

WHITEN_EPS = 1e-8  # verl's masked_whiten


def gae(reward: np.ndarray, value: np.ndarray, episode: np.ndarray, step: np.ndarray, gamma: float,
        lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Advantages and value targets (float64) of rows in any order; an episode's rows chain in step order."""
    order = canonical_order(episode, step)
    if order is None:
        order = np.arange(len(reward))
    ep = episode[order]
    seg = Segments.of(ep, ep)
    remaining = np.repeat(seg.ep_starts + seg.ep_lengths, seg.ep_lengths) - 1 - np.arange(len(ep))
    v = value[order].astype(np.float64)
    next_v = np.append(v[1:], 0.0)
    next_v[remaining == 0] = 0.0
    delta = reward[order].astype(np.float64) + gamma * next_v - v
    adv = np.empty(len(ep))
    adv[order] = step_returns(delta, remaining, gamma * lam)
    return adv, adv + value.astype(np.float64)


def whiten(x: np.ndarray) -> np.ndarray:
    """``(x - mean) / sqrt(unbiased var + 1e-8)`` (a single entry: 0).

    >>> whiten(np.array([1.0, 3.0])).round(6).tolist()
    [-0.707107, 0.707107]
    """
    var = x.var(ddof=1) if len(x) > 1 else 0.0
    return (x - x.mean()) / np.sqrt(var + WHITEN_EPS)


def with_gae(data: RoundData, values: np.ndarray, critic) -> RoundData:
    """``data`` with GAE advantages (its ``advantage`` holds the steps' rewards), value targets and old values."""
    adv, ret = gae(data.advantage, values, data.episode, data.step, critic.gamma, critic.lam)
    if critic.whiten:
        adv = whiten(adv)
    return dataclasses.replace(data, advantage=adv.astype(np.float32), returns=ret.astype(np.float32),
                               old_values=values.astype(np.float32))
