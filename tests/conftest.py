"""Shared test setup: GPU tests are skipped on machines without CUDA; the tiny model and two small games, built
once per session."""
from __future__ import annotations

import os

import pytest

_EXTENSIONS_AT_START = os.environ.get("TORCH_EXTENSIONS_DIR")  # read before any test module is imported


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def extensions_dir_at_start() -> str | None:
    """``TORCH_EXTENSIONS_DIR`` as the suite found it, before collection imported the test modules."""
    return _EXTENSIONS_AT_START


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """The tiny model's folder (seed 0)."""
    from pipeline.models.tiny_model import make_tiny_model

    return str(make_tiny_model(tmp_path_factory.mktemp("tiny"), seed=0))


@pytest.fixture(scope="session")
def games(tmp_path_factory) -> list[str]:
    """Two small generated ALFWorld games (seed 0, at most 5 receptacles)."""
    from pipeline.envs import generate_games

    return generate_games(str(tmp_path_factory.mktemp("games")), games=2, seed=0, max_receptacles=5)
