"""Group-wise normalisation kernels (numpy, O(rows), no per-row Python).

Groups are dense integer codes numbered in order of first appearance. Sums run
with ``np.bincount`` in row order, so a group's result depends only on its own
entries in canonical order. Values are shifted by their group's first entry
before the mean is taken: equal entries then give exactly 0, not rounding noise.
The std is the unbiased (n - 1) sample std, like ``torch.std`` in verl-agent.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


def factorize(values) -> tuple[np.ndarray, int]:
    """Dense int64 codes in order of first appearance, and their count.

    >>> factorize(np.array([7, 3, 7]))
    (array([0, 1, 0]), 2)
    """
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    return codes.astype(np.int64, copy=False), len(uniques)


def combine_codes(a: np.ndarray, b: np.ndarray, n_b: int) -> tuple[np.ndarray, int]:
    """Codes of the pairs (a, b) given dense codes a and b (b < n_b), in first-appearance order.

    >>> combine_codes(np.array([0, 0, 1, 0]), np.array([1, 0, 1, 1]), 2)
    (array([0, 1, 2, 0]), 3)
    """
    return factorize(a * np.int64(max(n_b, 1)) + b)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def pair_codes(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, int]:
    """Codes of the pairs (a, b) of two integer columns, in first-appearance order.

    Hashes each pair to one uint64 (b XOR a * golden ratio), factorises that
    once and then verifies that every code holds a single (a, b) pair; on a
    (vanishingly rare) collision it falls back to factorising b first.

    >>> pair_codes(np.array([0, 0, 1, 0]), np.array([5, 9, 5, 5]))
    (array([0, 1, 2, 0]), 3)
    """
    ua, ub = a.astype(np.int64, copy=False).view(np.uint64), b.astype(np.uint64, copy=False)
    codes, n = factorize(ub ^ (ua * _GOLDEN))
    first = first_index(codes, n)
    if np.array_equal(ua[first][codes], ua) and np.array_equal(ub[first][codes], ub):
        return codes, n
    b_codes, n_b = factorize(ub)
    return combine_codes(a, b_codes, n_b)


def first_index(codes: np.ndarray, n: int) -> np.ndarray:
    """Row of each code's first appearance (codes numbered in first-appearance order)."""
    if not len(codes):
        return np.zeros(0, dtype=np.int64)
    prev_max = np.maximum.accumulate(codes)
    is_first = np.empty(len(codes), dtype=bool)
    is_first[0] = True
    is_first[1:] = codes[1:] > prev_max[:-1]
    first = np.flatnonzero(is_first)
    assert len(first) == n, "codes must be numbered in order of first appearance"
    return first


@dataclass(frozen=True)
class CodeStats:
    """Per-group count, shift (first entry), mean and unbiased std of the shifted entries."""

    count: np.ndarray
    shift: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def of(cls, values: np.ndarray, codes: np.ndarray, n: int, first: np.ndarray | None = None) -> "CodeStats":
        """Statistics of ``values`` grouped by ``codes`` (0 <= code < n, first-appearance order; ``first``: each
        code's first row when known)."""
        count = np.bincount(codes, minlength=n)
        shift = values[first_index(codes, n) if first is None else first]
        shifted = values - shift[codes]
        mean = np.bincount(codes, weights=shifted, minlength=n) / np.maximum(count, 1)
        dev = shifted - mean[codes]
        var = np.bincount(codes, weights=dev * dev, minlength=n) / np.maximum(count - 1, 1)
        return cls(count=count, shift=shift, mean=mean, std=np.sqrt(var))

    def normalise(self, values: np.ndarray, codes: np.ndarray, norm: str, epsilon: float) -> np.ndarray:
        """(x - mean) / (std + epsilon) for norm "std", x - mean for "mean", per row's group."""
        centred = (values - self.shift[codes]) - self.mean[codes]
        if norm == "std":
            return centred / (self.std[codes] + epsilon)
        return centred


def episode_advantage(
    scores: np.ndarray, codes: np.ndarray, entries: np.ndarray | None, n: int, norm: str, epsilon: float
) -> np.ndarray:
    """A_E of each row: its score against the group's entries (rows ``entries``, or every row if None).

    A group with a single entry has mean 0 and std 1 (verl-agent), so its rows get
    score / (1 + epsilon) (or the score itself with norm "mean").

    >>> episode_advantage(np.array([1.0, 0.0]), np.array([0, 0]), np.array([0, 1]), 1, "std", 0.0).round(4)
    array([ 0.7071, -0.7071])
    """
    stats = CodeStats.of(scores, codes, n) if entries is None else CodeStats.of(scores[entries], codes[entries], n)
    lone = stats.count == 1
    stats.shift[lone], stats.mean[lone], stats.std[lone] = 0.0, 0.0, 1.0
    return stats.normalise(scores, codes, norm, epsilon)


def anchor_advantage(
    returns: np.ndarray, codes: np.ndarray, n: int, norm: str, epsilon: float
) -> tuple[np.ndarray, np.ndarray]:
    """A_S of each row inside its anchor group, and the group sizes; singleton groups give A_S = 0.

    >>> a, size = anchor_advantage(np.array([2.0, 1.0, 5.0]), np.array([0, 0, 1]), 2, "mean", 1e-6)
    >>> a.tolist(), size.tolist()
    ([0.5, -0.5, 0.0], [2, 2, 1])
    """
    stats = CodeStats.of(returns, codes, n)
    adv = stats.normalise(returns, codes, norm, epsilon)
    size = stats.count[codes]
    adv[size == 1] = 0.0
    return adv, size
