"""The range and choice checks of the config dataclasses' ``__post_init__``.

Each raises ``ValueError`` naming ``<Class>.<field>``; loading a YAML config
(``pipeline.config.from_dict``) turns that into the dotted key
(``RolloutConfig.group_size`` -> ``rollout.group_size``). The pipeline's configs
say ``<Class>.<field> must be <what>, got <value>`` (``must`` and the checks built
on it); the trainer's say ``<Class>.<field>=<value>: expected ...`` (``expect``).

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Opt:
...     lr: float = 1e-3
...     mode: str = "adam"
>>> at_least(Opt(lr=-1.0), "lr", 0)
Traceback (most recent call last):
...
ValueError: Opt.lr must be >= 0, got -1.0
>>> choice(Opt(mode="sgd"), "mode", ("adam",))
Traceback (most recent call last):
...
ValueError: Opt.mode must be one of ('adam',), got 'sgd'
>>> expect(Opt(mode="sgd"), "mode", False, "expected one of ['adam']")
Traceback (most recent call last):
...
ValueError: Opt.mode='sgd': expected one of ['adam']
"""
from __future__ import annotations

import math

_FIELD = object()  # the value checked is the field's own


def must(cfg, name: str, ok: bool, what: str, shown=_FIELD) -> None:
    """Unless ``ok``: ``ValueError("<Class>.<name> must be <what>, got <shown>")``, shown: the field's value."""
    if not ok:
        shown = getattr(cfg, name) if shown is _FIELD else shown
        raise ValueError(f"{type(cfg).__name__}.{name} must be {what}, got {shown}")


def choice(cfg, name: str, allowed, value=_FIELD) -> None:
    """``value`` (default: the field's) is one of ``allowed`` (the message shows ``allowed`` as given)."""
    value = getattr(cfg, name) if value is _FIELD else value
    must(cfg, name, value in allowed, f"one of {allowed}", repr(value))


def at_least(cfg, name: str, low: float, note: str = "") -> None:
    """The field is ``>= low`` (``note`` follows the bound in the message, e.g. `` (0: off)``)."""
    must(cfg, name, getattr(cfg, name) >= low, f">= {low}{note}")


def above(cfg, name: str, low: float) -> None:
    """The field is ``> low`` (NaN is not)."""
    must(cfg, name, getattr(cfg, name) > low, f"> {low}")


def in_range(cfg, name: str, low: float, high: float, open_low: bool = False) -> None:
    """The field is in ``[low, high]`` (``(low, high]`` with ``open_low``)."""
    value = getattr(cfg, name)
    ok = (low < value if open_low else low <= value) and value <= high
    must(cfg, name, ok, f"in {'(' if open_low else '['}{low}, {high}]")


def finite_in(cfg, name: str, low: float, high: float) -> None:
    """The field is a finite number in ``[low, high]``."""
    value = getattr(cfg, name)
    must(cfg, name, isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high,
         f"in [{low}, {high}]")


def expect(cfg, name: str, ok: bool, expected: str) -> None:
    """Unless ``ok``: ``ValueError("<Class>.<name>=<value!r>: <expected>")``."""
    if not ok:
        raise ValueError(f"{type(cfg).__name__}.{name}={getattr(cfg, name)!r}: {expected}")
