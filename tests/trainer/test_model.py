"""Loading the policy for training: the Loading-weights bar once per process."""
from __future__ import annotations

import torch

from trainer.model import load_causal_lm


def test_loading_weights_bar_shows_at_the_first_load_only(tiny_model, capsys):
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()  # as in a fresh trainer process: policy, then reference
    load_causal_lm(tiny_model, torch.float32)
    assert "Loading weights" in capsys.readouterr().err
    load_causal_lm(tiny_model, torch.float32)
    assert "Loading weights" not in capsys.readouterr().err
