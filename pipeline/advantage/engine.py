"""``compute_advantages``: GiGPO's retroactive anchor join and group-wise normalisation.

Only the scalar columns enter the computation (keys, reward, action_valid, the
anchor columns). Rows are put in canonical order (already so when rollout
workers wrote them), cut into chunks of ~``CHUNK_ROWS`` rows between groups,
and each chunk runs the numpy segment kernels (returns.py, groupnorm.py); the
result columns are scattered back to the input order and attached to the
untouched input, so token columns are never copied. Groups are independent,
so chunking (like sharding) never changes a number.
"""
from __future__ import annotations

from typing import Union

import numpy as np
import polars as pl

from pipeline.advantage.anchors import ANCHORS
from pipeline.advantage.config import AdvantageConfig
from pipeline.advantage.estimators import EstimatorRows, estimate
from pipeline.advantage.groupnorm import (
    anchor_advantage,
    combine_codes,
    episode_advantage,
    factorize,
    first_index,
    pair_codes,
)
from pipeline.advantage.returns import Segments, canonical_order, step_returns
from pipeline.advantage.validate import KEY_COLUMNS, check_keys, check_schema, check_values, required_columns

Frame = Union[pl.DataFrame, pl.LazyFrame]
ADVANTAGE_COLUMNS = ("step_return", "adv_episode", "adv_step", "anchor_group_size", "advantage", "anchor_id")
_DTYPES = {"anchor_group_size": pl.Int32, "anchor_id": pl.Int32}
CHUNK_ROWS = 1 << 17  # rows per kernel call (whole groups): hash tables and temporaries stay in cache


def compute_advantages(steps: Frame, cfg: AdvantageConfig | None = None) -> Frame:
    """Add ``step_return, adv_episode, adv_step, anchor_group_size, advantage, anchor_id`` to one round's steps.

    ``anchor_id`` numbers a row's anchor group inside its group_id (0, 1, ...
    in order of first appearance in (episode_id, step) order), so
    ``(group_id, anchor_id)`` names an anchor group whatever the strategy.

    DataFrame in, DataFrame out (input row order kept). LazyFrame in: the scalar
    columns are collected and checked now, and a LazyFrame joining the results
    back on ``(episode_id, step)`` is returned. Existing advantage columns are
    replaced.

    >>> steps = pl.DataFrame({"group_id": [0, 0], "episode_id": [0, 1], "step": [0, 0],
    ...                       "reward": [1.0, 0.0], "anchor_key": [7, 7]})
    >>> compute_advantages(steps, AdvantageConfig(epsilon=1e-6))["adv_episode"].round(4).to_list()
    [0.7071, -0.7071]
    """
    cfg = cfg or AdvantageConfig()
    if isinstance(steps, pl.LazyFrame):
        check_schema(steps.collect_schema(), cfg)
        scalars = steps.select(scalar_columns(steps.collect_schema(), cfg)).collect()
        result = pl.DataFrame(_compute(scalars, cfg)).with_columns(scalars["episode_id"], scalars["step"])
        base = steps.drop(ADVANTAGE_COLUMNS, strict=False)
        return base.join(result.lazy(), on=["episode_id", "step"], how="left", maintain_order="left")
    if not isinstance(steps, pl.DataFrame):
        raise TypeError(f"compute_advantages takes a polars DataFrame or LazyFrame, got {type(steps).__name__}")
    check_schema(steps.schema, cfg)
    columns = _compute(steps.select(scalar_columns(steps.schema, cfg)), cfg)
    return steps.drop(ADVANTAGE_COLUMNS, strict=False).with_columns(
        pl.Series(name, values, dtype=_DTYPES.get(name, pl.Float64)) for name, values in columns.items()
    )


def scalar_columns(names, cfg: AdvantageConfig) -> list[str]:
    """Columns the computation reads: required ones, plus action_valid/round when ``names`` has them."""
    optional = [c for c in ("action_valid", "round") if c in names]
    return list(dict.fromkeys(required_columns(cfg) + tuple(optional)))


def _compute(frame: pl.DataFrame, cfg: AdvantageConfig) -> dict[str, np.ndarray]:
    """The advantage columns, as numpy arrays in ``frame``'s row order."""
    check_values(frame, cfg)
    group, episode, step = (frame[c].to_numpy() for c in KEY_COLUMNS)
    order = canonical_order(group, episode, step)
    if order is not None:
        frame = frame[order]
        group, episode, step = (frame[c].to_numpy() for c in KEY_COLUMNS)
    check_keys(group, episode, step)
    out = {name: np.empty(len(frame), dtype=np.int32 if name in _DTYPES else np.float64) for name in ADVANTAGE_COLUMNS}
    for a, b in _chunks(group, CHUNK_ROWS):
        rows = slice(a, b) if order is None else order[a:b]  # scatter back to the input order
        for name, values in _kernel(frame[a:b], group[a:b], episode[a:b], step[a:b], cfg).items():
            out[name][rows] = values
    return out


def _chunks(group: np.ndarray, rows: int) -> list[tuple[int, int]]:
    """Row ranges of about ``rows`` rows that cut only between groups (groups are independent)."""
    n = len(group)
    if n <= rows:
        return [(0, n)]
    starts = np.flatnonzero(np.concatenate(([True], group[1:] != group[:-1])))
    at = np.searchsorted(starts, np.arange(0, n, rows))  # first group starting at or after each target
    cuts = np.unique(starts[at[at < len(starts)]])
    bounds = np.append(cuts, n)
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))


def _kernel(frame: pl.DataFrame, group, episode, step, cfg: AdvantageConfig) -> dict[str, np.ndarray]:
    seg = Segments.of(group, episode)
    reward = frame["reward"].cast(pl.Float64).to_numpy()
    if "action_valid" in frame.columns:
        penalty = np.where(frame["action_valid"].to_numpy(), 0.0, cfg.invalid_penalty)
    else:
        penalty = np.zeros(len(frame))
    remaining = np.repeat(seg.ep_lengths, seg.ep_lengths) - 1 - step
    returns = step_returns(reward, remaining, cfg.gamma) - penalty

    episode_sum = np.add.reduceat(reward, seg.ep_starts) if len(reward) else reward
    scores = episode_sum[seg.ep_index] - penalty
    entries = seg.ep_starts if cfg.episode_stats == "episodes" else None
    adv_episode = episode_advantage(scores, seg.group_index, entries, seg.n_groups, cfg.norm, cfg.epsilon)

    codes, n_codes = _anchor_codes(frame, seg, cfg)
    adv_step, size = anchor_advantage(returns, codes, n_codes, cfg.norm, cfg.epsilon)
    first_code = codes[first_index(seg.group_index, seg.n_groups)]  # a group's anchor codes are consecutive
    return {
        "step_return": returns,
        "adv_episode": adv_episode,
        "adv_step": adv_step,
        "anchor_group_size": size.astype(np.int32),
        "advantage": estimate(adv_episode, adv_step, cfg, EstimatorRows(scores, reward - penalty, seg)),
        "anchor_id": (codes - first_code[seg.group_index]).astype(np.int32),
    }


def _anchor_codes(frame: pl.DataFrame, seg: Segments, cfg: AdvantageConfig) -> tuple[np.ndarray, int]:
    """Dense codes of (group, anchor identity) pairs, numbered in order of first appearance."""
    identity = ANCHORS[cfg.anchor].fn(frame, cfg)
    columns = identity.get_columns() if isinstance(identity, pl.DataFrame) else [identity]
    if any(len(col) != len(frame) for col in columns):
        raise ValueError(f"anchor strategy {cfg.anchor!r} returned {len(columns[0])} values for {len(frame)} rows")
    codes, n = seg.group_index, seg.n_groups
    if len(columns) == 1 and columns[0].dtype.is_integer() and not columns[0].null_count():
        return pair_codes(codes, columns[0].to_numpy())
    for col in columns:
        col_codes, col_n = factorize(col.to_pandas(use_pyarrow_extension_array=True))
        codes, n = combine_codes(codes, col_codes, col_n)
    return codes, n
