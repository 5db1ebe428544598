"""Shared inputs of the rollout tests: the tiny model and two small generated ALFWorld games."""
from __future__ import annotations

import pytest

from pipeline.envs import generate_games
from pipeline.models.tiny_model import make_tiny_model


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> str:
    return str(make_tiny_model(tmp_path_factory.mktemp("tiny"), seed=0))


@pytest.fixture(scope="session")
def games(tmp_path_factory) -> list[str]:
    return generate_games(str(tmp_path_factory.mktemp("games")), games=2, seed=0, max_receptacles=5)
