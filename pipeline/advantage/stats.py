"""Per-group anchor statistics of an advantages table (``storage.schemas.ANCHOR_STATS``).

An episode counts as a success when its ``won`` column is true if the table has
one, else when its score (sum of its rewards, no invalid-action penalty) is > 0.
The number of anchor groups is recovered from ``anchor_group_size`` alone (a
group of k steps contributes k rows of 1/k), so it holds for every anchor
strategy, fuzzy ones included. ``round`` and ``group_id`` identify a group
(group ids are unique within a round), so a table of several rounds works.
The purity columns (``purity.py``) compare the anchor groups (``anchor_id``)
with the true state (``state_key``); they are null without one.
"""
from __future__ import annotations

from typing import Union

import numpy as np
import polars as pl

from pipeline.advantage.purity import (
    GROUPS_INPUT, PURITY_COLUMNS, SortedRows, anchor_groups, input_rows, per_anchor, purity_by_group,
)
from pipeline.advantage.validate import AdvantageInputError

Frame = Union[pl.DataFrame, pl.LazyFrame]
STATS_INPUT = (
    "round", "group_id", "task_id", "episode_id", "step", "reward", "anchor_group_size", "adv_episode", "adv_step",
    "anchor_id",
)
_OPTIONAL = ("won", "state_key")  # read when present
STATS_COLUMNS = {
    "round": pl.Int32,
    "group_id": pl.Int64,
    "task_id": pl.String,
    "steps": pl.Int64,
    "episodes": pl.Int64,
    "anchor_groups": pl.Int64,
    "anchored_share": pl.Float64,
    "largest_anchor_group": pl.Int64,
    "mean_abs_adv_episode": pl.Float64,
    "mean_abs_adv_step": pl.Float64,
    "success_rate": pl.Float64,
    **PURITY_COLUMNS,
}


def anchor_stats(advantages: Frame) -> Frame:
    """One row per (round, group_id): steps, episodes, anchor groups, anchored share, sizes, |A|, success, purity.

    Vectorised segment reductions over rows in canonical order (round, group,
    episode, step), summed with ``np.bincount``: a round and any split of it
    into whole groups give bit-identical statistics.

    >>> adv = pl.DataFrame({"round": [0, 0, 0], "group_id": [4, 4, 4], "task_id": ["t"] * 3,
    ...     "episode_id": [0, 0, 1], "step": [0, 1, 0], "reward": [0.0, 1.0, 0.0], "anchor_group_size": [2, 1, 2],
    ...     "adv_episode": [0.5, 0.5, -1.0], "adv_step": [0.7, 0.0, -0.7], "anchor_id": [0, 1, 0],
    ...     "state_key": [5, 5, 5]})
    >>> anchor_stats(adv).select("anchor_groups", "anchored_share", "success_rate", "missed_revisit_share").row(0)
    (2, 0.6666666666666666, 0.5, 0.3333333333333333)
    """
    rows = input_rows(advantages, "anchor_stats", STATS_INPUT, _OPTIONAL)
    out = _per_group(SortedRows.of(rows)) if rows.height else pl.DataFrame(schema=STATS_COLUMNS)
    return out.lazy() if isinstance(advantages, pl.LazyFrame) else out


def anchor_tables(advantages: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(anchor_stats(advantages), anchor_groups(advantages))``, sorting the rows and finding the anchor groups once.

    >>> adv = pl.DataFrame({"round": [0, 0], "group_id": [4, 4], "task_id": ["t"] * 2, "episode_id": [0, 1],
    ...     "step": [0, 0], "reward": [1.0, 0.0], "anchor_group_size": [2, 2], "adv_episode": [0.7, -0.7],
    ...     "adv_step": [0.7, -0.7], "anchor_id": [0, 0], "observation": ["start"] * 2, "step_return": [1.0, 0.0]})
    >>> [t.height for t in anchor_tables(adv)]
    [1, 1]
    """
    if not advantages.height:
        return anchor_stats(advantages), anchor_groups(advantages)
    rows = input_rows(advantages, "anchor_tables", (*STATS_INPUT, *GROUPS_INPUT), _OPTIONAL)
    s = SortedRows.of(rows)
    return _per_group(s), per_anchor(s)


def _per_group(s: SortedRows) -> pl.DataFrame:
    rows, codes, starts = s.rows, s.group, s.starts
    rnd, group, episode = (rows[c].to_numpy() for c in ("round", "group_id", "episode_id"))
    n = len(rnd)
    new_episode = np.zeros(n, dtype=bool)
    new_episode[starts] = True
    new_episode[1:] |= episode[1:] != episode[:-1]
    ep_starts = np.flatnonzero(new_episode)
    ep_codes, k = codes[ep_starts], len(starts)
    count = np.diff(np.append(starts, n))
    episodes = np.bincount(ep_codes, minlength=k)
    size = rows["anchor_group_size"].to_numpy()
    if "won" in rows.columns:
        success = np.maximum.reduceat(rows["won"].to_numpy().astype(np.int8), ep_starts) > 0
    else:
        success = np.add.reduceat(rows["reward"].cast(pl.Float64).to_numpy(), ep_starts) > 0
    tasks = rows["task_id"]
    first_task = tasks.gather(starts)
    mixed = np.unique(group[(tasks != first_task.gather(codes)).to_numpy()])
    if len(mixed):
        raise AdvantageInputError(f"column 'task_id': group_id(s) {mixed.tolist()[:10]} hold several task ids")

    def mean_abs(name: str) -> np.ndarray:
        return np.bincount(codes, np.abs(rows[name].to_numpy()), k) / count

    return pl.DataFrame(
        {
            "round": rnd[starts],
            "group_id": group[starts],
            "task_id": first_task,
            "steps": count,
            "episodes": episodes,
            "anchor_groups": np.rint(np.bincount(codes, 1.0 / size, k)),
            "anchored_share": np.bincount(codes, size > 1, k) / count,
            "largest_anchor_group": np.maximum.reduceat(size, starts),
            "mean_abs_adv_episode": mean_abs("adv_episode"),
            "mean_abs_adv_step": mean_abs("adv_step"),
            "success_rate": np.bincount(ep_codes, success, k) / episodes,
        }
    ).hstack(purity_by_group(s.anchors, codes, k)).cast(STATS_COLUMNS)
