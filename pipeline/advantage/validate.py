"""Input checks of the advantage engine: each error names the column and offending ids."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import numpy as np
import polars as pl

from pipeline.advantage.anchors import ANCHORS

if TYPE_CHECKING:
    from pipeline.advantage.config import AdvantageConfig

KEY_COLUMNS = ("group_id", "episode_id", "step")
SHOWN = 10  # offending ids quoted in a message
# Why a column written only by some envs or schema versions may be missing or null.
_ENV_REPORTED = {
    "state_key": "only envs that report their true state (ALFWorld) write it; runs of schema version 1 lack it",
    "admissible_key": "only envs that report admissible commands (ALFWorld) write it; "
                      "runs of schema version 1 lack it",
}


class AdvantageInputError(ValueError):
    """The steps given to the advantage engine break its contract."""


def required_columns(cfg: "AdvantageConfig") -> tuple[str, ...]:
    """Columns ``compute_advantages`` reads under ``cfg`` (``action_valid`` and ``round`` are optional)."""
    extra = tuple(c for c in ANCHORS[cfg.anchor].columns(cfg) if c not in KEY_COLUMNS)
    return KEY_COLUMNS + ("reward",) + extra


def _listed(items: Iterable, total: int | None = None) -> str:
    items = list(items)
    total = len(items) if total is None else total
    shown = ", ".join(str(i) for i in items[:SHOWN])
    return f"[{shown}{', ...' if total > SHOWN else ''}] ({total} in all)"


def _pairs(episode: np.ndarray, step: np.ndarray, rows: np.ndarray) -> str:
    return _listed(((int(episode[i]), int(step[i])) for i in rows[:SHOWN]), len(rows))


def _why(columns: Iterable[str], anchor: str | None = None) -> str:
    notes = [f"{c!r}: {_ENV_REPORTED[c]}" for c in columns if c in _ENV_REPORTED]
    use = f"; anchor={anchor!r} cannot be used on these steps" if anchor and notes else ""
    return (" (" + "; ".join(notes) + ")" if notes else "") + use


def check_schema(schema: pl.Schema, cfg: "AdvantageConfig") -> None:
    """Required columns present, keys integer, reward numeric, action_valid boolean."""
    needed = required_columns(cfg)
    missing = [c for c in needed if c not in schema]
    if missing:
        raise AdvantageInputError(
            f"steps lack column(s) {missing} (anchor={cfg.anchor!r} reads {list(needed)}); present: {list(schema)}"
            + _why(missing)
        )
    for col in KEY_COLUMNS:
        if not schema[col].is_integer():
            raise AdvantageInputError(f"column {col!r} must be an integer type, got {schema[col]}")
    if not schema["reward"].is_numeric():
        raise AdvantageInputError(f"column 'reward' must be numeric, got {schema['reward']}")
    if "action_valid" in schema and schema["action_valid"] != pl.Boolean:
        raise AdvantageInputError(f"column 'action_valid' must be Boolean, got {schema['action_valid']}")
    for col in ("anchor_key", "state_key", "admissible_key"):
        if col in needed and not schema[col].is_integer():
            raise AdvantageInputError(f"column {col!r} must be an integer type (uint64), got {schema[col]}")
    if cfg.anchor in ("normalized", "similarity", "embedding") and schema["observation"] != pl.String:
        raise AdvantageInputError(f"column 'observation' must be String, got {schema['observation']}")


def check_values(frame: pl.DataFrame, cfg: "AdvantageConfig") -> None:
    """No nulls where values are needed, one round, finite rewards."""
    nullable_ok = set(cfg.anchor_columns) if cfg.anchor == "columns" else set()
    for col in required_columns(cfg) + (("action_valid",) if "action_valid" in frame.columns else ()):
        if col not in nullable_ok and frame[col].null_count():
            bad = frame.filter(pl.col(col).is_null())["episode_id"].unique(maintain_order=True)
            raise AdvantageInputError(
                f"column {col!r} has null values in episode_id(s) {_listed(bad)}" + _why([col], cfg.anchor))
    if "round" in frame.columns and frame.height and frame["round"].min() != frame["round"].max():
        rounds = frame["round"].unique().sort().to_list()
        raise AdvantageInputError(f"column 'round' holds several rounds {rounds}; compute one round at a time")
    reward = frame["reward"].cast(pl.Float64).to_numpy()
    bad_rows = np.flatnonzero(~np.isfinite(reward))
    if len(bad_rows):
        raise AdvantageInputError(
            "column 'reward' has NaN or infinite values at (episode_id, step) "
            + _pairs(frame["episode_id"].to_numpy(), frame["step"].to_numpy(), bad_rows)
        )


def check_keys(group: np.ndarray, episode: np.ndarray, step: np.ndarray) -> None:
    """On canonically sorted keys: each episode in one group, unique (episode_id, step), steps 0..n-1."""
    n = len(group)
    if n == 0:
        return
    run_start = np.ones(n, dtype=bool)
    run_start[1:] = (episode[1:] != episode[:-1]) | (group[1:] != group[:-1])
    firsts = episode[run_start]
    uniq, counts = np.unique(firsts, return_counts=True)
    if len(uniq) < len(firsts):
        split = uniq[counts > 1]
        where = {int(e): sorted({int(g) for g in group[run_start][firsts == e]}) for e in split[:SHOWN]}
        raise AdvantageInputError(
            f"column 'group_id': episode_id(s) {_listed(split.tolist())} appear in more than one group: {where}"
        )
    same = ~run_start[1:]
    dup = np.flatnonzero(same & (step[1:] == step[:-1])) + 1
    if len(dup):
        raise AdvantageInputError(f"duplicate (episode_id, step) keys {_pairs(episode, step, dup)}")
    expected = np.where(run_start, 0, np.concatenate(([0], step[:-1] + 1)))
    gaps = np.flatnonzero(step != expected)
    if len(gaps):
        raise AdvantageInputError(
            "column 'step' must run 0, 1, ..., n-1 inside each episode; first bad (episode_id, step) "
            + _pairs(episode, step, gaps)
        )
