"""Anchor groups one by one (``storage.schemas.ANCHOR_GROUPS``) and their purity against the true state.

An anchor group is ``(round, group_id, anchor_id)`` of an advantages table.
When the env reports its true state (``state_key``), an anchor group is *pure*
if all its steps acted on one true state; a step whose true state recurs in
its episode group but whose anchor group is a singleton is a *missed revisit*
(the anchors could have compared it and did not). Anything about states is
null where a step has no ``state_key`` (envs that report none, schema v1).

Like ``stats.py``: numpy segment reductions over rows in canonical order
(round, group, episode, step), so a round and any split of it into whole
groups give bit-identical numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np
import polars as pl

from pipeline.advantage.groupnorm import CodeStats, factorize, first_index
from pipeline.advantage.returns import canonical_order
from pipeline.advantage.validate import AdvantageInputError

Frame = Union[pl.DataFrame, pl.LazyFrame]
GROUPS_INPUT = ("round", "group_id", "episode_id", "step", "anchor_id", "observation", "step_return", "adv_step")
GROUPS_COLUMNS = {
    "round": pl.Int32,
    "group_id": pl.Int64,
    "anchor_id": pl.Int32,
    "size": pl.Int64,
    "anchor_text": pl.String,
    "distinct_returns": pl.Int64,
    "return_mean": pl.Float64,
    "return_std": pl.Float64,
    "mean_abs_adv_step": pl.Float64,
    "states": pl.Int64,
    "pure": pl.Boolean,
}
PURITY_COLUMNS = {
    "pure_share": pl.Float64,
    "impure_step_share": pl.Float64,
    "states_per_anchor_group": pl.Float64,
    "revisit_steps": pl.Int64,
    "missed_revisit_share": pl.Float64,
}


def input_rows(advantages: Frame, who: str, required: tuple[str, ...], optional: tuple[str, ...]) -> pl.DataFrame:
    """The columns ``who`` reads from an advantages frame, collected: all of ``required`` (an error names the
    missing ones) and those of ``optional`` it has."""
    schema = advantages.collect_schema() if isinstance(advantages, pl.LazyFrame) else advantages.schema
    missing = [c for c in dict.fromkeys(required) if c not in schema]
    if missing:
        raise AdvantageInputError(f"{who}: advantages lack column(s) {missing}; present: {list(schema)}")
    columns = list(dict.fromkeys([*required, *(c for c in optional if c in schema)]))
    return advantages.lazy().select(columns).collect()


def _run_starts(keys: np.ndarray) -> np.ndarray:
    """First index of each run of equal values in sorted ``keys``."""
    new = np.ones(len(keys), dtype=bool)
    new[1:] = keys[1:] != keys[:-1]
    return np.flatnonzero(new)


def _distinct(major: np.ndarray, n: int, minor: np.ndarray, n_minor: int) -> np.ndarray:
    """Distinct ``minor`` codes (< n_minor) per ``major`` code (< n): one sorted exact int64 key beats a lexsort."""
    keys = major.astype(np.int64) * n_minor + minor
    keys.sort()
    return np.bincount(keys[_run_starts(keys)] // n_minor, minlength=n)


def _revisits(group: np.ndarray, k: int, state: np.ndarray, n_states: int, lone: np.ndarray):
    """Per group (code < k): steps whose (group, state) pair recurs, and those of them with ``lone`` set.

    One sorted key per row (pair, then the flag in the lowest bit): a pair's rows are one run, no argsort needed.
    """
    keys = (group.astype(np.int64) * n_states + state) * 2 + lone
    keys.sort()
    pair = keys >> 1
    starts = _run_starts(pair)
    length = np.diff(np.append(starts, len(keys)))
    recurs = length > 1
    pair_group = pair[starts] // n_states
    lone_rows = np.add.reduceat(keys & 1, starts) if len(keys) else length
    return np.bincount(pair_group, length * recurs, k), np.bincount(pair_group, lone_rows * recurs, k)


def _anchor_codes(group_code: np.ndarray, anchor_id: np.ndarray) -> np.ndarray:
    """Dense anchor-group codes: a group's ``anchor_id``s (0, 1, ... by first appearance) after the groups before."""
    starts = np.flatnonzero(np.diff(group_code, prepend=-1))
    per_group = np.maximum.reduceat(anchor_id, starts).astype(np.int64) + 1
    code = np.repeat(np.cumsum(per_group) - per_group, np.diff(np.append(starts, len(group_code)))) + anchor_id
    seen = np.maximum.accumulate(code)
    if code[0] != 0 or np.any(anchor_id < 0) or np.any(code[1:] > seen[:-1] + 1):
        raise AdvantageInputError(
            "column 'anchor_id' must number each group's anchor groups 0, 1, ... in order of first appearance "
            "(as compute_advantages writes it)")
    return code


@dataclass(frozen=True)
class Anchors:
    """The anchor groups of canonically sorted rows, with the true states they hold."""

    code: np.ndarray  # anchor group of each row, numbered in order of first appearance
    n: int  # anchor groups
    first: np.ndarray  # first row of each anchor group
    size: np.ndarray  # steps per anchor group
    state: np.ndarray  # dense code of each row's true state (0 where it has none)
    n_states: int  # distinct true states (at least 1)
    known: np.ndarray  # whether each row has a true state
    states: np.ndarray  # distinct true states per anchor group (float; nan where a step has no state_key)

    @classmethod
    def of(cls, rows: pl.DataFrame, group_code: np.ndarray) -> "Anchors":
        """Anchor groups of non-empty canonically sorted rows (``group_code``: each row's episode group)."""
        anchor_id = rows["anchor_id"]
        if anchor_id.null_count():
            raise AdvantageInputError(
                "column 'anchor_id' has nulls: advantages written with schema version 1 carry no anchor groups; "
                "recompute them with compute_advantages")
        code = _anchor_codes(group_code, anchor_id.to_numpy())
        n = int(code.max()) + 1
        state, n_states, known = _state_codes(rows)
        states = _distinct(code, n, state, n_states).astype(np.float64)
        states[np.bincount(code, ~known, n) > 0] = np.nan
        return cls(code, n, first_index(code, n), np.bincount(code, minlength=n), state, n_states, known, states)


def _state_codes(rows: pl.DataFrame) -> tuple[np.ndarray, int, np.ndarray]:
    """Dense codes of each row's ``state_key`` (0 where null or absent), their count, and which rows have one."""
    if "state_key" not in rows.columns:
        return np.zeros(rows.height, np.int64), 1, np.zeros(rows.height, dtype=bool)
    col = rows["state_key"].cast(pl.UInt64)
    state, n = factorize(col.fill_null(0).to_numpy())
    return state, max(n, 1), col.is_not_null().to_numpy()


@dataclass(frozen=True)
class SortedRows:
    """Non-empty rows in canonical order (round, group, episode, step), their episode groups and anchor groups."""

    rows: pl.DataFrame
    group: np.ndarray  # episode-group code of each row (0, 1, ...)
    starts: np.ndarray  # first row of each episode group
    anchors: Anchors

    @classmethod
    def of(cls, rows: pl.DataFrame) -> "SortedRows":
        keys = [rows[c].to_numpy() for c in ("round", "group_id", "episode_id", "step")]
        order = canonical_order(*keys)
        if order is not None:
            rows = rows[order]
            keys = [k[order] for k in keys]
        rnd, group = keys[0], keys[1]
        new_group = np.ones(len(rnd), dtype=bool)
        new_group[1:] = (rnd[1:] != rnd[:-1]) | (group[1:] != group[:-1])
        code = np.cumsum(new_group) - 1
        return cls(rows, code, np.flatnonzero(new_group), Anchors.of(rows, code))


def anchor_groups(advantages: Frame) -> Frame:
    """One row per anchor group: size, a text, distinct returns, return mean/std, mean |A_S|, true states.

    >>> adv = pl.DataFrame({"round": [0] * 4, "group_id": [3] * 4, "episode_id": [0, 0, 1, 1], "step": [0, 1, 0, 1],
    ...     "anchor_id": [0, 1, 0, 1], "observation": ["start", "Nothing happens.", "start", "Nothing happens."],
    ...     "step_return": [0.5, 1.0, 0.0, 0.0], "adv_step": [0.7, 0.7, -0.7, -0.7], "state_key": [1, 2, 1, 3]})
    >>> anchor_groups(adv).select("anchor_id", "size", "anchor_text", "return_mean", "states", "pure").rows()
    [(0, 2, 'start', 0.25, 1, True), (1, 2, 'Nothing happens.', 0.5, 2, False)]
    """
    rows = input_rows(advantages, "anchor_groups", GROUPS_INPUT, ("state_key",))
    out = per_anchor(SortedRows.of(rows)) if rows.height else pl.DataFrame(schema=GROUPS_COLUMNS)
    return out.lazy() if isinstance(advantages, pl.LazyFrame) else out


def per_anchor(s: SortedRows) -> pl.DataFrame:
    """``GROUPS_COLUMNS`` of each anchor group of sorted rows."""
    rows, a = s.rows, s.anchors
    returns = rows["step_return"].to_numpy() + 0.0  # + 0.0 turns -0.0 into 0.0: one value, one bit pattern
    ret = CodeStats.of(returns, a.code, a.n, a.first)
    return_code, n_returns = factorize(returns.view(np.uint64))
    return pl.DataFrame(
        {
            "round": rows["round"].gather(a.first),
            "group_id": rows["group_id"].gather(a.first),
            "anchor_id": rows["anchor_id"].gather(a.first),
            "size": a.size,
            "anchor_text": rows["observation"].gather(a.first),
            "distinct_returns": _distinct(a.code, a.n, return_code, max(n_returns, 1)),
            "return_mean": ret.shift + ret.mean,
            "return_std": ret.std,
            "mean_abs_adv_step": np.bincount(a.code, np.abs(rows["adv_step"].to_numpy()), a.n) / a.size,
            "states": pl.Series(a.states, nan_to_null=True),
        }
    ).with_columns(pure=pl.col("states") == 1).cast(GROUPS_COLUMNS)


def purity_by_group(a: Anchors, group_code: np.ndarray, k: int) -> pl.DataFrame:
    """``PURITY_COLUMNS`` of each of the ``k`` episode groups (rows' ``group_code``) holding anchor groups ``a``."""
    unknown = np.bincount(group_code, ~a.known, k) > 0
    anchor_group = group_code[a.first]
    shared = a.size > 1
    shared_count = np.bincount(anchor_group, shared, k)
    count = np.bincount(group_code, minlength=k)
    states = np.nan_to_num(a.states)
    revisits, missed = _revisits(group_code, k, a.state, a.n_states, ~shared[a.code])
    with np.errstate(invalid="ignore", divide="ignore"):
        columns = {
            "pure_share": np.bincount(anchor_group, shared & (states == 1), k) / shared_count,
            "impure_step_share": np.bincount(group_code, (states > 1)[a.code], k) / count,
            "states_per_anchor_group": np.bincount(anchor_group, states, k) / np.bincount(anchor_group, minlength=k),
            "revisit_steps": revisits.astype(np.float64),
            "missed_revisit_share": missed / revisits,
        }
    return pl.DataFrame(
        {name: pl.Series(np.where(unknown, np.nan, v), nan_to_null=True) for name, v in columns.items()}
    ).cast(PURITY_COLUMNS)


def pooled_purity(groups: Frame, stats: Frame) -> dict[str, float | None]:
    """Purity of a whole round (or any set of groups), pooled exactly from ``anchor_groups`` and ``anchor_stats``.

    Keys are ``RoundMetrics`` fields: ``anchor_pure_share`` (over non-singleton
    anchor groups), ``states_per_anchor_group`` (over anchor groups),
    ``impure_step_share`` (over steps), ``missed_revisit_share`` (over revisit
    steps); None where no step has a true state.
    """
    shared = pl.col("size") > 1
    pooled = groups.lazy().select(
        pl.col("pure").filter(shared).cast(pl.Float64).mean().alias("anchor_pure_share"),
        pl.col("states").cast(pl.Float64).mean().alias("states_per_anchor_group")).collect().row(0, named=True)
    w, revisits = pl.col("steps"), pl.col("revisit_steps")
    sums = stats.lazy().select(
        (pl.col("impure_step_share") * w).sum().alias("impure"),
        w.filter(pl.col("impure_step_share").is_not_null()).sum().alias("steps"),
        (pl.col("missed_revisit_share") * revisits).sum().alias("missed"),
        revisits.sum().alias("revisits")).collect().row(0, named=True)
    return {**pooled, "impure_step_share": sums["impure"] / sums["steps"] if sums["steps"] else None,
            "missed_revisit_share": sums["missed"] / sums["revisits"] if sums["revisits"] else None}
