"""Trainer test fixtures: CPU DeepSpeed (gloo), synthetic advantage rows (the tiny model: ``tests/conftest.py``)."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def dist_group():
    """A 1-rank gloo group in the test process (DeepSpeed needs one)."""
    from trainer.deepspeed_engine import init_distributed

    return init_distributed()


def _make_rows(n: int, seed: int = 0, vocab: int = 500, prompt=(4, 24), response=(1, 8)) -> pl.DataFrame:
    """``n`` advantage rows with random tokens, lengths, advantages and rollout log-probs."""
    rng = np.random.default_rng(seed)
    p_len = rng.integers(*prompt, size=n)
    r_len = rng.integers(*response, size=n)
    return pl.DataFrame({
        "episode_id": np.arange(n, dtype=np.int64),
        "step": np.zeros(n, dtype=np.int32),
        "prompt_ids": [rng.integers(3, vocab, k).astype(np.int32).tolist() for k in p_len],
        "response_ids": [rng.integers(3, vocab, k).astype(np.int32).tolist() for k in r_len],
        "response_logprobs": [(-rng.random(k) * 3 - 3).astype(np.float32).tolist() for k in r_len],
        "advantage": rng.normal(size=n),
    }, schema_overrides={"prompt_ids": pl.List(pl.Int32), "response_ids": pl.List(pl.Int32),
                         "response_logprobs": pl.List(pl.Float32)})


def _load_weights(path) -> dict:
    """Exported HF weights as a name -> tensor dict."""
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "model.safetensors"))


@pytest.fixture(scope="session")
def make_rows():
    return _make_rows


@pytest.fixture(scope="session")
def load_weights():
    return _load_weights
