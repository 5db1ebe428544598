"""The run-config reference (``docs/configuration.md``), generated from the config dataclasses.

    python -m pipeline.config_doc > docs/configuration.md

Every key of ``RunConfig`` and its nested sections gets its type, its default
and its doc: the field's comment in the source (a trailing comment, else the
comment lines right above the field). ``tests/test_docs.py`` checks that the
committed file equals this output.

>>> from pipeline.run_config import EvalConfig
>>> field_docs(EvalConfig)["every"]
'evaluate after every k-th round, and always after the last one (0: the last one only)'
>>> cell(("strip", "collapse_whitespace")), cell(None), cell("a | b")
('`["strip", "collapse_whitespace"]`', '`null`', '`a \\\\| b`')
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import json
import tokenize
import types
import typing
from pathlib import Path
from typing import Any, Iterator

from pipeline.run_config import RunConfig

HEADER = """# Configuration reference

Generated from the config dataclasses by `python -m pipeline.config_doc > docs/configuration.md`;
`tests/test_docs.py` fails when this file and the code disagree. Edit the field comments in the code,
then regenerate.

A run config is YAML (`configs/*.yaml`; `extends: other.yaml` reads another file first and overrides it
section by section). Any key can be overridden on the command line as a dotted path with a YAML value,
e.g. `python pipeline/round.py --config configs/local.yaml trainer.lr=3e-5 rollout.sampling.seed=1`.
Unknown keys and mistyped values are refused before any work, naming the dotted key (exit code 2).
A section whose default is `null` is absent unless the config names it; once named, its keys take the
defaults listed under it. The docs quote Python's `None`, `True` and `False`; YAML writes `null`, `true`
and `false`.
"""


@functools.cache
def _comments(path: str) -> tuple[dict[int, str], list[str]]:
    """Comments of a source file by line number, and its lines."""
    source = Path(path).read_text()
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return {t.start[0]: t.string.lstrip("#").strip() for t in tokens if t.type == tokenize.COMMENT}, \
        source.splitlines()


def _class_node(path: str, name: str) -> ast.ClassDef:
    tree = ast.parse(Path(path).read_text())
    return next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == name)


def field_docs(cls: type) -> dict[str, str]:
    """``field name -> doc`` of a dataclass: its trailing comment, else the comment lines right above it."""
    path = inspect.getsourcefile(cls)
    comments, lines = _comments(path)
    out = {}
    for node in _class_node(path, cls.__name__).body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        doc = comments.get(node.end_lineno) or comments.get(node.lineno)
        if not doc:
            above, i = [], node.lineno - 1
            while i >= 1 and lines[i - 1].strip().startswith("#") and not lines[i - 1].strip().startswith("# ---"):
                above.insert(0, comments[i])
                i -= 1
            doc = " ".join(above)
        out[node.target.id] = doc
    return out


def _section_class(tp: Any) -> type | None:
    """The dataclass a field's annotation holds (also inside ``X | None``), else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        return inner[0] if len(inner) == 1 else None
    return None


def type_name(tp: Any) -> str:
    """A YAML-minded name of an annotation.

    >>> type_name(tuple[str, ...]), type_name(int | str), type_name(typing.Optional[float]), type_name(dict)
    ('list[str]', 'int | str', 'float | null', 'mapping')
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "null"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if dataclasses.is_dataclass(tp):
        return "section"
    if origin is tuple:
        inner = [type_name(args[0])] if len(args) == 2 and args[1] is Ellipsis else [type_name(a) for a in args]
        return f"list[{', '.join(inner)}]"
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in args)
    if tp is dict or origin is dict:
        return "mapping"
    if tp is list or origin is list:
        return "list"
    return getattr(tp, "__name__", str(tp))


def _yaml(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list, dict)):
        return json.dumps(value)
    return str(value)


def cell(value: Any) -> str:
    """A default as a Markdown table cell (a code span; ``|`` escaped)."""
    return "`" + _yaml(value).replace("|", "\\|") + "`"


def _default(f: dataclasses.Field) -> tuple[str, Any]:
    """("value", v), ("section", None) or ("required", None)."""
    if f.default is not dataclasses.MISSING:
        return "value", f.default
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        return ("section", None) if dataclasses.is_dataclass(value) else ("value", value)
    return "required", None


def sections(cls: type, prefix: str = "") -> Iterator[tuple[str, type]]:
    """``(dotted prefix, dataclass)`` of a config and every section nested in it, depth first."""
    yield prefix, cls
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        inner = _section_class(hints[f.name])
        if inner is not None:
            yield from sections(inner, f"{prefix}.{f.name}" if prefix else f.name)


def _esc(text: str) -> str:
    return text.replace("``", "`").replace("|", "\\|")


def _row(prefix: str, f: dataclasses.Field, tp: Any, doc: str) -> str:
    key = f"{prefix}.{f.name}" if prefix else f.name
    kind, value = _default(f)
    if _section_class(tp) is not None:
        default = "`null` (absent)" if kind == "value" and value is None else "see below"
        doc = f"{doc} (keys under `{key}` below)" if doc else f"keys under `{key}` below"
    else:
        default = "required" if kind == "required" else cell(value)
    return f"| `{key}` | {_esc(type_name(tp))} | {default} | {_esc(doc)} |"


def render(cls: type = RunConfig) -> str:
    """The Markdown reference of ``cls`` (``RunConfig``): one table per section."""
    out = [HEADER]
    for prefix, section in sections(cls):
        hints, docs = typing.get_type_hints(section), field_docs(section)
        summary = _esc((inspect.getdoc(section) or "").split("\n\n")[0].replace("\n", " "))
        out += [f"## {f'`{prefix}`' if prefix else 'Top level'}", "", f"{summary} (`{section.__qualname__}`)", "",
                "| key | type | default | meaning |", "|---|---|---|---|"]
        out += [_row(prefix, f, hints[f.name], docs.get(f.name, "")) for f in dataclasses.fields(section) if f.init]
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(render(), end="")
