"""Canonical row order, episode/group segments and discounted step returns.

Every kernel runs on rows sorted by ``(group_id, episode_id, step)``. That order
makes each group's arithmetic independent of the rest of the frame and of the
input row order, so one shard, a whole round, a permutation of it, or a Dask
partition all give bit-identical numbers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def canonical_order(*keys: np.ndarray) -> np.ndarray | None:
    """Permutation sorting rows by the key columns (first key most significant), or None when they already are.

    >>> canonical_order(np.array([1, 0]), np.array([5, 3]), np.array([0, 0]))
    array([1, 0])
    >>> canonical_order(np.array([0, 0]), np.array([3, 3]), np.array([0, 1])) is None
    True
    """
    if len(keys[0]) < 2:
        return None
    ordered = keys[-1][1:] > keys[-1][:-1]
    for key in reversed(keys[:-1]):
        ordered = (key[1:] > key[:-1]) | ((key[1:] == key[:-1]) & ordered)
    if ordered.all():
        return None
    return np.lexsort(keys[::-1])


@dataclass(frozen=True)
class Segments:
    """Episode and group runs of canonically sorted rows."""

    ep_starts: np.ndarray  # first row of each episode
    ep_lengths: np.ndarray  # rows per episode
    ep_index: np.ndarray  # episode number of each row
    group_index: np.ndarray  # group number of each row (0, 1, ... in order)
    ep_group: np.ndarray  # group number of each episode
    n_groups: int  # number of groups

    @classmethod
    def of(cls, group: np.ndarray, episode: np.ndarray) -> "Segments":
        """Segments of sorted ``group``/``episode`` columns (an episode lies in one group: validated before)."""
        n = len(group)
        new_group = np.empty(n, dtype=bool)
        new_ep = np.empty(n, dtype=bool)
        if n:
            new_group[0] = new_ep[0] = True
            np.not_equal(group[1:], group[:-1], out=new_group[1:])
            np.not_equal(episode[1:], episode[:-1], out=new_ep[1:])
            new_ep[1:] |= new_group[1:]
        starts = np.flatnonzero(new_ep)
        lengths = np.diff(np.append(starts, n))
        group_index = np.cumsum(new_group) - 1
        return cls(
            ep_starts=starts,
            ep_lengths=lengths,
            ep_index=np.repeat(np.arange(len(starts)), lengths),
            group_index=group_index,
            ep_group=group_index[starts],
            n_groups=int(new_group.sum()),
        )


def step_returns(reward: np.ndarray, remaining: np.ndarray, gamma: float) -> np.ndarray:
    """G_t = r_t + gamma * G_{t+1} inside each episode (no bootstrap after the last step).

    ``remaining`` is the number of steps after each row in its episode. The
    recurrence runs as a doubling scan: after the pass with shift s, every row
    holds the discounted sum of its next 2s rewards (cut at its episode's end),
    so log2(longest episode) vectorised passes finish it.

    >>> step_returns(np.array([0.0, 0.0, 1.0, 2.0]), np.array([2, 1, 0, 0]), 0.5)
    array([0.25, 0.5 , 1.  , 2.  ])
    """
    out = reward.astype(np.float64, copy=True)
    if gamma == 0.0 or len(out) == 0:
        return out
    longest = int(remaining.max())
    shift = 1
    while shift <= longest:
        head = out[:-shift]
        np.add(head, gamma**shift * out[shift:], out=head, where=remaining[:-shift] >= shift)
        shift *= 2
    return out
