"""The documentation stays in step with the code: tables, metrics, config keys, the README's front door."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from pipeline import config_doc
from pipeline.records import RoundMetrics
from storage.schemas import TABLES

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TWO_COMMANDS = """```bash
bash scripts/run.sh     # main job: creates .venv on first use, then runs the embedded default
bash scripts/test.sh    # test suite: creates .venv (and .venv-vllm for the vLLM tests) on first use, runs pytest
```"""


def section(text: str, heading: str) -> str:
    """The body under the Markdown heading whose text is ``heading``, up to the next heading of its level or above."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"(#+) (.*)$", line)
        if m and m.group(2).strip() == heading:
            level, body = len(m.group(1)), []
            for rest in lines[i + 1:]:
                h = re.match(r"(#+) ", rest)
                if h and len(h.group(1)) <= level:
                    break
                body.append(rest)
            return "\n".join(body)
    raise AssertionError(f"no heading {heading!r}")


def documented(body: str) -> set[str]:
    """Names in the first cell of a table row, as code spans: ``| `name` | ...``."""
    return set(re.findall(r"^\| `([^`]+)` \|", body, re.MULTILINE))


def missing_columns(text: str) -> dict[str, list[str]]:
    """Columns of each storage table without a row under the table's heading (``### `table```)."""
    out = {}
    for table, schema in TABLES.items():
        absent = [c for c in schema.names if c not in documented(section(text, f"`{table}`"))]
        if absent:
            out[table] = absent
    return out


def test_every_table_column_is_in_the_data_dictionary():
    assert missing_columns((DOCS / "data-dictionary.md").read_text()) == {}


def test_a_deleted_column_row_is_caught():
    text = (DOCS / "data-dictionary.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `state_key` |"))
    assert missing_columns(text.replace(row + "\n", "")) == {"steps": ["state_key"]}


def test_every_round_metrics_field_is_in_the_data_dictionary():
    body = section((DOCS / "data-dictionary.md").read_text(), "Round metrics")
    fields = [f.name for f in dataclasses.fields(RoundMetrics)]
    assert [f for f in fields if f not in documented(body)] == []


@pytest.mark.timeout(120)
def test_configuration_reference_is_generated_from_the_code():
    assert (DOCS / "configuration.md").read_text() == config_doc.render(), \
        "docs/configuration.md is stale: python -m pipeline.config_doc > docs/configuration.md"


def test_readme_is_short_and_starts_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    assert text.startswith("# gigpo-pipeline\n\n" + TWO_COMMANDS + "\n")


def test_readme_links_point_at_existing_docs():
    text = (ROOT / "README.md").read_text()
    links = set(re.findall(r"\]\((docs/[^)#]+)", text))
    assert {p for p in links if not (ROOT / p).is_file()} == set()
    assert {f"docs/{p.name}" for p in DOCS.glob("*.md")} <= links
