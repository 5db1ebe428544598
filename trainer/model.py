"""The policy as a module that returns log-probs and entropies of response tokens only.

The LM head runs on the gathered response positions only, in chunks of
tokens, so neither a long prompt nor a large micro-batch materialises
``[tokens x vocab]`` logits.

>>> import torch
>>> from transformers import AutoModelForCausalLM, Qwen2Config
>>> lm = AutoModelForCausalLM.from_config(Qwen2Config(vocab_size=16, hidden_size=32, intermediate_size=64,
...     num_hidden_layers=1, num_attention_heads=1, num_key_value_heads=1))
>>> lp, ent = LogProbModel(lm)(torch.tensor([[5, 6, 7]]), torch.ones(1, 3, dtype=torch.long), None,
...                             torch.tensor([[1]]), torch.tensor([[7]]), torch.ones(1, 1))
>>> lp.shape, bool(lp[0, 0] < 0), bool(ent[0, 0] > 0)
(torch.Size([1, 1]), True, True)
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from trainer import attention
from trainer.host import has_cuda


def attention_backend() -> str:
    """flash_attention_2 (varlen kernels for packed sequences) on CUDA when flash-attn is installed, else
    ``packed_sdpa`` (``trainer.attention``: SDPA per packed sequence, exact, no [N x N] mask)."""
    import importlib.util

    return "flash_attention_2" if has_cuda() and importlib.util.find_spec("flash_attn") else attention.NAME


def load_causal_lm(path: str | Path, dtype: torch.dtype, gradient_checkpointing: bool = False) -> nn.Module:
    """Load a Hugging Face causal LM from a checkpoint directory (never from a hub)."""
    from transformers import AutoModelForCausalLM

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"policy checkpoint {str(path)!r} has no config.json; expected a HF checkpoint dir")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True,
                                                 attn_implementation=attention_backend())
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
    """Wraps a HF causal LM: ``forward(...) -> (logprobs [B, R], entropy [B, R])`` of the masked response tokens.

    ``resp_index[b, j]`` indexes the flattened input (``[B * T]`` padded, ``[N]`` packed):
    the position whose hidden state predicts ``response_ids[b, j]``. ``position_ids``
    restarting at 0 mark packed sequences (no ``attention_mask``): attention stays
    inside each. Logits are divided by ``temperature`` (the rollout's sampling
    temperature) and computed ``chunk_tokens`` response tokens at a time (0: all at
    once); with gradients, each chunk's logits are recomputed in backward, so no
    more than one chunk of ``[tokens x vocab]`` fp32 logits is ever held.
    """

    def __init__(self, lm: nn.Module, temperature: float = 1.0, chunk_tokens: int = 0):
        super().__init__()
        self.lm = lm
        self.temperature = temperature
        self.chunk_tokens = chunk_tokens

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, position_ids: torch.Tensor | None,
                resp_index: torch.Tensor, response_ids: torch.Tensor, mask: torch.Tensor, with_entropy: bool = True,
                entropy_grad: bool = True):
        hidden = self.hidden(input_ids, attention_mask, position_ids)
        return self.response_logprobs(hidden, resp_index, response_ids, mask, with_entropy, entropy_grad)

    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
               position_ids: torch.Tensor | None) -> torch.Tensor:
        """The backbone's last hidden states ``[B, T, H]``."""
        return self.lm.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                                     position_ids=position_ids).last_hidden_state

    def response_logprobs(self, hidden: torch.Tensor, resp_index: torch.Tensor, response_ids: torch.Tensor,
                          mask: torch.Tensor, with_entropy: bool = True, entropy_grad: bool = True):
        """``(logprobs [B, R], entropy [B, R] | None)`` of the response tokens from the hidden states."""
        valid = mask > 0
        if not valid.any():  # keep a graph to the weights: one masked-out token (the loss ignores it)
            valid = torch.zeros_like(valid)
            valid[0, 0] = True
        picked = hidden.flatten(0, 1)[resp_index[valid]]
        lp, ent = token_logprobs(self.lm.get_output_embeddings(), picked, response_ids[valid], self.temperature,
                                 self.chunk_tokens, with_entropy, entropy_grad)
        scatter = lambda v: torch.zeros(mask.shape, dtype=v.dtype, device=v.device).masked_scatter(valid, v)  # noqa: E731
        return scatter(lp), None if ent is None else scatter(ent)


def token_logprobs(head: nn.Module, hidden: torch.Tensor, ids: torch.Tensor, temperature: float, chunk_tokens: int,
                   with_entropy: bool = True, entropy_grad: bool = True):
    """Log-probs (and entropies) of ``ids`` [M] given ``hidden`` [M, H], ``chunk_tokens`` rows of logits at a time."""
    size = chunk_tokens or max(len(hidden), 1)
    recompute = torch.is_grad_enabled() and len(hidden) > size  # several chunks: keep none of their logits
    parts = []
    for a in range(0, len(hidden), size):
        args = (head, hidden[a:a + size], ids[a:a + size], temperature, with_entropy, entropy_grad)
        parts.append(checkpoint(_chunk, *args, use_reentrant=False) if recompute else _chunk(*args))
    lp = torch.cat([p[0] for p in parts])
    return lp, torch.cat([p[1] for p in parts]) if with_entropy else None


def _chunk(head: nn.Module, hidden: torch.Tensor, ids: torch.Tensor, temperature: float, with_entropy: bool,
           entropy_grad: bool):
    logits = head(hidden).float()
    if temperature != 1.0:
        logits = logits / temperature
    logz = torch.logsumexp(logits, dim=-1)
    logprobs = logits.gather(-1, ids.unsqueeze(-1)).squeeze(-1) - logz
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
