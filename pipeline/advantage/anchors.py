"""Anchor-state strategies: which steps of a group acted from the same state.

A strategy maps the step rows (sorted by ``group_id, episode_id, step``) to an
anchor identity per row: a ``pl.Series`` (or a ``pl.DataFrame`` whose columns
together are the identity). Identities are compared inside a ``group_id`` only;
the engine never merges anchors across groups. Register new strategies with
``@register_anchor(name, columns=...)``; ``similarity`` and ``embedding`` live in
``clustering.py``.

``anchor_key`` is the stable 64-bit key rollout workers store in the steps
table: the first 8 bytes (little endian) of BLAKE2b over the UTF-8 text, one
hash per distinct text. It does not depend on the Polars/Arrow version (unlike
Polars' ``.hash()``).

>>> anchor_key(["You are in the kitchen."]).dtype
UInt64
>>> anchor_key(["a  b "], normalizers=("strip", "collapse_whitespace")).item() == text_key("a b")
True
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Union

import polars as pl

if TYPE_CHECKING:
    from pipeline.advantage.config import AdvantageConfig

AnchorFn = Callable[[pl.DataFrame, "AdvantageConfig"], Union[pl.Series, pl.DataFrame]]


@dataclass(frozen=True)
class AnchorStrategy:
    """A registered strategy: the function and the input columns it reads."""

    fn: AnchorFn  # (sorted step rows, config) -> anchor identity per row
    columns: Callable[["AdvantageConfig"], tuple[str, ...]]  # input columns the strategy needs


ANCHORS: dict[str, AnchorStrategy] = {}
NORMALIZERS: dict[str, Callable[[pl.Expr], pl.Expr]] = {}


def register_anchor(name: str, columns: Callable[["AdvantageConfig"], tuple[str, ...]]):
    """Register an anchor strategy under ``name`` (decorator).

    >>> @register_anchor("first_line", columns=lambda cfg: ("observation",))
    ... def _first_line(rows, cfg):
    ...     return rows["observation"].str.split("\\n").list.first()
    >>> "first_line" in ANCHORS
    True
    >>> del ANCHORS["first_line"]
    """

    def deco(fn: AnchorFn) -> AnchorFn:
        ANCHORS[name] = AnchorStrategy(fn, columns)
        return fn

    return deco


def register_normalizer(name: str):
    """Register a text normaliser (``pl.Expr -> pl.Expr``) for ``anchor="normalized"`` (decorator)."""

    def deco(fn: Callable[[pl.Expr], pl.Expr]) -> Callable[[pl.Expr], pl.Expr]:
        NORMALIZERS[name] = fn
        return fn

    return deco


@register_normalizer("strip")
def _strip(e: pl.Expr) -> pl.Expr:
    return e.str.strip_chars()


@register_normalizer("collapse_whitespace")
def _collapse_whitespace(e: pl.Expr) -> pl.Expr:
    return e.str.replace_all(r"\s+", " ")


@register_normalizer("lowercase")
def _lowercase(e: pl.Expr) -> pl.Expr:
    return e.str.to_lowercase()


@register_normalizer("drop_step_counters")
def _drop_step_counters(e: pl.Expr) -> pl.Expr:
    # "Step 3:", "step 3/50", "Turn 4 -" and similar progress counters
    return e.str.replace_all(r"(?i)\b(?:step|turn)\s*#?\d+(?:\s*/\s*\d+)?\s*[:.\-]?\s*", "")


@register_normalizer("mask_numbers")
def _mask_numbers(e: pl.Expr) -> pl.Expr:
    return e.str.replace_all(r"\d+", "#")


def normalize_texts(texts: pl.Series, normalizers: Iterable[str]) -> pl.Series:
    """Apply the named normalisers in order (vectorised).

    >>> normalize_texts(pl.Series(["  Step 2: a\\n b "]), ["strip", "drop_step_counters", "collapse_whitespace"]).item()
    'a b'
    """
    expr = pl.col("t")
    for name in normalizers:
        if name not in NORMALIZERS:
            raise ValueError(f"unknown normalizer {name!r}; registered: {sorted(NORMALIZERS)}")
        expr = NORMALIZERS[name](expr)
    return pl.DataFrame({"t": texts}).select(expr)["t"].alias(texts.name)


def text_key(text: str) -> int:
    """Stable uint64 key of one text: BLAKE2b-64 of its UTF-8 bytes, little endian.

    >>> text_key("")
    13020603013274838756
    """
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def commands_key(commands: Iterable[str]) -> int:
    """Stable uint64 key of a set of commands (the steps' ``admissible_key``): ``text_key`` of them sorted, one a line.

    >>> commands_key(["look", "go to desk 1"]) == commands_key(["go to desk 1", "look"]) != commands_key(["look"])
    True
    """
    return text_key("\n".join(sorted(commands)))


def anchor_key(texts: Iterable[str] | pl.Series, normalizers: Iterable[str] = ()) -> pl.Series:
    """Stable uint64 anchor keys of ``texts`` (after ``normalizers``), hashing each distinct text once."""
    s = texts if isinstance(texts, pl.Series) else pl.Series("anchor_key", list(texts), dtype=pl.String)
    if s.null_count():
        raise ValueError(f"anchor_key: {s.null_count()} null text(s); every step needs an observation")
    s = normalize_texts(s.cast(pl.String), normalizers)
    if s.is_empty():
        return pl.Series("anchor_key", [], dtype=pl.UInt64)
    uniq = s.unique()
    keys = pl.Series([text_key(t) for t in uniq.to_list()], dtype=pl.UInt64)
    return s.replace_strict(uniq, keys, return_dtype=pl.UInt64).alias("anchor_key")


@register_anchor("exact", columns=lambda cfg: ("anchor_key",))
def exact_anchor(rows: pl.DataFrame, cfg: "AdvantageConfig") -> pl.Series:
    """The stored ``anchor_key`` as is (rollout workers hash the observation)."""
    return rows["anchor_key"]


@register_anchor("normalized", columns=lambda cfg: ("observation",))
def normalized_anchor(rows: pl.DataFrame, cfg: "AdvantageConfig") -> pl.Series:
    """The observation after ``cfg.normalizers``; equal normalised texts share an anchor."""
    return normalize_texts(rows["observation"], cfg.normalizers)


@register_anchor("state", columns=lambda cfg: ("state_key",))
def state_anchor(rows: pl.DataFrame, cfg: "AdvantageConfig") -> pl.Series:
    """The env's true state (``state_key``): the oracle, an upper bound for ablations.

    Only for envs that report their state (ALFWorld); a null ``state_key`` is
    refused by the engine's input checks.
    """
    return rows["state_key"]


@register_anchor("composite", columns=lambda cfg: ("anchor_key", "admissible_key"))
def composite_anchor(rows: pl.DataFrame, cfg: "AdvantageConfig") -> pl.DataFrame:
    """The exact observation (``anchor_key``) plus what the env reports beside it (``admissible_key``).

    ALFWorld's admissible commands depend on where the agent is, what it holds
    and what is open there, so they split the many states that answer
    "Nothing happens." while using nothing a real agent could not see.
    """
    return rows.select("anchor_key", "admissible_key")


@register_anchor("columns", columns=lambda cfg: tuple(cfg.anchor_columns))
def columns_anchor(rows: pl.DataFrame, cfg: "AdvantageConfig") -> pl.DataFrame:
    """A structured state: rows with equal values in all ``cfg.anchor_columns`` share an anchor."""
    return rows.select(cfg.anchor_columns)
