"""Typed configs from YAML plus dotted overrides, validated before any work starts.

Each concern has one frozen dataclass (fields with one-line docs, checked in
``__post_init__``). ``load`` reads a YAML file (which may ``extends:`` another
one, overriding it section by section), applies ``key.sub=value``
overrides, refuses unknown keys and mistyped values naming the dotted key,
and builds the nested dataclasses.

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Opt:
...     lr: float = 1e-3  # learning rate
...     name: str = "adam"  # optimizer
>>> from_dict(Opt, {"lr": 0.1})
Opt(lr=0.1, name='adam')
>>> from_dict(Opt, {"lr": "fast"}, "opt")
Traceback (most recent call last):
...
pipeline.config.ConfigError: opt.lr: expected float, got 'fast'
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, Mapping

import yaml


class ConfigError(ValueError):
    """A config key is unknown, mistyped or out of range (the message names the dotted key)."""


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert lists to tuples / dicts to dataclasses."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for arm in inner:
            try:
                return _convert(arm, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {inner}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, where)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        arms = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(arms) != len(value):
            raise ConfigError(f"{where}: expected {len(arms)} items, got {len(value)}")
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(arms, value)))
    if origin in (list, dict) or tp in (Any, dict, list):
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 1e-6 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp in (bool, int, float, str) and not (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def check_finite(value: Any, where: str) -> None:
    """Refuse a NaN or infinite float in ``value`` (walking lists, tuples and mappings), naming its dotted key.

    >>> check_finite({"resources": {"GPU": 1.0}, "betas": [0.9, float("inf")]}, "trainer")
    Traceback (most recent call last):
    ...
    pipeline.config.ConfigError: trainer.betas[1]: expected a finite number, got inf
    """
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_finite(item, f"{where}[{i}]")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            check_finite(item, _join(where, str(key)))


def from_dict(cls: type, data: Mapping[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, naming the dotted key of any problem."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(data) - set(names))
    if unknown:
        close = difflib.get_close_matches(unknown[0], names, n=3, cutoff=0.6)
        hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
        raise ConfigError(f"{_join(where, unknown[0])}: unknown key{hint}; expected one of {names}")
    kwargs = {k: _convert(hints[k], v, _join(where, k)) for k, v in data.items()}
    for key, value in kwargs.items():  # nested dataclasses were checked when built
        if not dataclasses.is_dataclass(value):
            check_finite(value, _join(where, key))
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        text, named = str(exc), f"{cls.__name__}."
        if text.startswith(named):  # "RolloutConfig.group_size must be ..." -> "rollout.group_size must be ..."
            raise ConfigError(_join(where, text[len(named):])) from exc
        raise ConfigError(f"{where or cls.__name__}: {text}") from exc


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set ``a.b.c=value`` items (values parsed as YAML) in a nested dict, returning a new dict."""
    out = json.loads(json.dumps(data))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key.path=value")
        node, parts = out, key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = yaml.safe_load(raw)
    return out


def _merge(base: dict, top: dict) -> dict:
    """``top`` over ``base``, section by section."""
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_yaml(path: str | Path) -> dict:
    """A YAML config as a dict; ``extends: other.yaml`` (relative to the file) is read first and overlaid."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read config ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    parent = data.pop("extends", None)
    return _merge(read_yaml(Path(path).parent / parent), data) if parent else data


def load(cls: type, path: str | Path | None, overrides: list[str] = ()) -> Any:
    """Read YAML at ``path`` (None: defaults only), apply overrides, validate into ``cls``."""
    data = read_yaml(path) if path is not None else {}
    return from_dict(cls, apply_overrides(data, list(overrides)))


def to_dict(cfg: Any) -> dict:
    """Plain nested dict of a config (tuples as lists), YAML/JSON ready."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def config_hash(cfg: Any) -> str:
    """Stable 16-hex-digit hash of a config's values."""
    return hashlib.sha256(json.dumps(to_dict(cfg), sort_keys=True).encode()).hexdigest()[:16]


def hash_index(cfg: Any) -> dict[str, str]:
    """Hashes a run's manifests may record: ``""`` the whole config's, and each dataclass section's by name.

    >>> @dataclasses.dataclass(frozen=True)
    ... class Opt:
    ...     lr: float = 1e-3  # learning rate
    >>> @dataclasses.dataclass(frozen=True)
    ... class Run:
    ...     opt: Opt = Opt()  # optimizer section
    ...     seed: int = 0  # random seed
    >>> hash_index(Run()) == {"": config_hash(Run()), "opt": config_hash(Opt())}
    True
    """
    sections = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    return {"": config_hash(cfg)} | {k: config_hash(v) for k, v in sections.items() if dataclasses.is_dataclass(v)}
