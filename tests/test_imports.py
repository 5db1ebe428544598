"""How the project's modules import each other: the layers of pyproject.toml's import contracts, no import cycles
but the registries', lint-clean code, and a script folder that shadows no other module."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.child_env import ROOT, child_env

# Cycles closed only by imports inside functions, on purpose: AdvantageConfig checks its choices against the
# registries of anchors and estimators (which import the config), and make_backend loads the backends, which
# register themselves in pipeline.policy.base.
REGISTRY_CYCLES = [
    ["pipeline.advantage.anchors", "pipeline.advantage.config", "pipeline.advantage.estimators"],
    ["pipeline.policy.base", "pipeline.policy.expert", "pipeline.policy.hf", "pipeline.policy.vllm"],
]


def _tool(name: str) -> str:
    """A console script of this Python environment (the ``test`` extra installs ruff and import-linter)."""
    path = Path(sys.executable).with_name(name)
    found = str(path) if path.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e .[test]")
    return found


def _cycle_finder():
    spec = importlib.util.spec_from_file_location("import_cycles", ROOT / "scripts" / "import_cycles.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_import_contracts_hold():
    res = subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=ROOT, env=child_env(), capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]


def test_ruff_finds_nothing():
    res = subprocess.run([_tool("ruff"), "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]


def test_no_import_cycles_but_the_registries():
    finder = _cycle_finder()
    mods = finder.modules(ROOT)
    assert finder.cycles(finder.imports(mods, lazy=False)) == []
    assert finder.cycles(finder.imports(mods, lazy=True)) == REGISTRY_CYCLES


def test_the_driver_scripts_folder_shadows_no_other_module():
    # `python pipeline/round.py` puts pipeline/ first on sys.path: a module there named like a standard or an
    # installed one would be imported in its place, by any library
    names = {p.stem for p in (ROOT / "pipeline").glob("*.py")} | {
        p.parent.name for p in (ROOT / "pipeline").glob("*/__init__.py")}
    others = set(sys.stdlib_module_names) | set(importlib.metadata.packages_distributions())
    assert sorted(names & others) == []


def test_the_driver_starts_without_the_model_libraries():
    # the driver schedules work and reads its results: torch would cost every start, a config error's included,
    # seconds of CPU
    code = "import sys, pipeline.driver; print(sorted({'deepspeed', 'torch', 'transformers'} & set(sys.modules)))"
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=child_env(), capture_output=True, text=True,
                         timeout=120)
    assert (res.returncode, res.stdout) == (0, "[]\n"), res.stderr[-2000:]
