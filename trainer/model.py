"""The policy as a module that returns log-probs and entropies of response tokens only.

The LM head runs on the gathered response positions, not on the whole padded
sequence, so a long prompt never materialises ``[B, T, vocab]`` logits.

>>> import torch
>>> from transformers import AutoModelForCausalLM, Qwen2Config
>>> lm = AutoModelForCausalLM.from_config(Qwen2Config(vocab_size=16, hidden_size=32, intermediate_size=64,
...     num_hidden_layers=1, num_attention_heads=1, num_key_value_heads=1))
>>> lp, ent = LogProbModel(lm)(torch.tensor([[5, 6, 7]]), torch.ones(1, 3, dtype=torch.long),
...                             torch.tensor([[1]]), torch.tensor([[7]]))
>>> lp.shape, bool(lp[0, 0] < 0), bool(ent[0, 0] > 0)
(torch.Size([1, 1]), True, True)
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def load_causal_lm(path: str | Path, dtype: torch.dtype, gradient_checkpointing: bool = False) -> nn.Module:
    """Load a Hugging Face causal LM from a checkpoint directory (never from a hub)."""
    from transformers import AutoModelForCausalLM

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"policy checkpoint {str(path)!r} has no config.json; expected a HF checkpoint dir")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
    bars_once()
    model.config.use_cache = False
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model


def bars_once() -> None:
    """Call after each model load: transformers' ``Loading weights`` bar shows at a process's first load only.

    A rollout worker loads each round's checkpoint, a trainer its policy and reference: one bar per process.
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


class LogProbModel(nn.Module):
    """Wraps a HF causal LM: ``forward(...) -> (logprobs [B, R], entropy [B, R])``.

    ``resp_index[b, j]`` is the position whose hidden state predicts ``response_ids[b, j]``.
    Logits are divided by ``temperature`` (the rollout's sampling temperature).
    """

    def __init__(self, lm: nn.Module, temperature: float = 1.0):
        super().__init__()
        self.lm = lm
        self.temperature = temperature

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, resp_index: torch.Tensor,
                response_ids: torch.Tensor, with_entropy: bool = True, entropy_grad: bool = True):
        hidden = self.lm.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        hidden = torch.gather(hidden, 1, resp_index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
        logits = self.lm.get_output_embeddings()(hidden).float()
        if self.temperature != 1.0:
            logits = logits / self.temperature
        logz = torch.logsumexp(logits, dim=-1)
        logprobs = logits.gather(-1, response_ids.unsqueeze(-1)).squeeze(-1) - logz
        if not with_entropy:
            return logprobs, None
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = logz - (torch.softmax(logits, dim=-1) * logits).sum(-1)
        return logprobs, entropy


def count_params(lm: nn.Module) -> tuple[int, int]:
    """(all parameters, parameters that do matmul work per token: all minus the input embedding).

    Counts full sizes under ZeRO-3 too (``ds_numel`` of partitioned parameters).
    """
    def numel(p) -> int:
        return getattr(p, "ds_numel", p.numel())

    total = sum(numel(p) for p in lm.parameters())
    emb = lm.get_input_embeddings().weight
    tied = emb is lm.get_output_embeddings().weight
    return total, total if tied else total - numel(emb)
