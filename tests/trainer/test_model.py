"""LogProbModel: packed micro-batches equal padded ones, chunked LM-head log-probs equal a full pass (fp32);
loading the policy shows the Loading-weights bar once per process."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.batches import PAD_ROW, collate, load_rows
from trainer.config import TrainerConfig
from trainer.loss import policy_loss
from trainer.model import LogProbModel, attention_backend, load_causal_lm, token_logprobs

TOL = 1e-5


def _lm(attn: str):
    """The same random tiny Qwen2 (GQA: 2 query heads, 1 key/value head) with attention ``attn``."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=500, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                         attn_implementation=attn, use_cache=False)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def lm():
    return _lm("sdpa")


def _forward(model: LogProbModel, data, rows: np.ndarray, packed: bool):
    """Log-probs, entropies, PPO loss and gradients of one micro-batch."""
    mb = collate(data, rows, 0, data.rollout_logprobs, packed=packed)
    model.zero_grad()
    lp, ent = model(mb.input_ids, mb.attention_mask, mb.position_ids, mb.resp_index, mb.response_ids, mb.mask)
    cfg = TrainerConfig(kl_coef=0.0, entropy_coeff=0.01)
    loss = policy_loss(lp, ent, mb.old_logprobs, mb.advantages, mb.mask, cfg).loss
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return lp.detach(), ent.detach(), loss.detach(), grads, mb.mask


@pytest.mark.parametrize("attn, packed", [
    (attention_backend(), True),  # the trainer's CPU path: SDPA per packed sequence
    ("sdpa", True),  # transformers' block-diagonal mask over the packed row
    (attention_backend(), False),  # padded rows through the trainer's attention (causal, no mask)
])
def test_packed_equals_padded(lm, make_rows, attn, packed):
    """Against the reference: right-padded rows, transformers' SDPA with the padding mask."""
    data = load_rows(make_rows(6, seed=1, prompt=(3, 30)), vocab_size=500, max_seq_len=128)
    rows = np.array([4, 0, PAD_ROW, 5, 2, 1])
    lp_pad, ent_pad, loss_pad, grad_pad, mask = _forward(LogProbModel(lm), data, rows, packed=False)
    lp, ent, loss, grad, _ = _forward(LogProbModel(_lm(attn)), data, rows, packed=packed)
    assert mask.sum() == data.resp_len[rows[rows != PAD_ROW]].sum()
    assert lp_pad[mask > 0].abs().min() > 0.1 and (lp_pad[mask == 0] == 0).all()  # real log-probs on tokens only
    torch.testing.assert_close(lp, lp_pad, rtol=0, atol=TOL)
    torch.testing.assert_close(ent, ent_pad, rtol=0, atol=TOL)
    torch.testing.assert_close(loss, loss_pad, rtol=0, atol=TOL)
    torch.testing.assert_close(grad, grad_pad, rtol=0, atol=TOL)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunked_logprobs_equal_one_full_pass(lm, temperature):
    torch.manual_seed(1)
    hidden = torch.randn(11, 64, requires_grad=True)
    ids = torch.randint(0, 500, (11,))
    head = lm.get_output_embeddings()
    results = []
    for chunk in (0, 4):  # 0: one pass over all 11 tokens; 4: chunks of 4, 4, 3, recomputed in backward
        hidden.grad, head.weight.grad = None, None
        lp, ent = token_logprobs(head, hidden, ids, temperature, chunk)
        (lp.sum() + 0.3 * ent.sum()).backward()
        results.append((lp.detach(), ent.detach(), hidden.grad.clone(), head.weight.grad.clone()))
    full = torch.log_softmax(head(hidden).detach() / temperature, -1)
    torch.testing.assert_close(results[0][0], full.gather(-1, ids[:, None])[:, 0], rtol=0, atol=TOL)
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got, want, rtol=0, atol=TOL)


def test_chunks_hold_one_chunk_of_logits(lm):
    """With gradients and several chunks, autograd saves no chunk's logits for backward (they are recomputed)."""
    hidden, ids = torch.randn(12, 64, requires_grad=True), torch.randint(0, 500, (12,))
    saved = {}
    for chunk in (0, 3):
        logits = []  # elements of saved tensors with a vocabulary dimension

        def pack(t: torch.Tensor) -> torch.Tensor:
            logits.append(t.numel() if t.shape[-1:] == (500,) else 0)
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            token_logprobs(lm.get_output_embeddings(), hidden, ids, 1.0, chunk)
        saved[chunk] = sum(logits)
    assert saved[0] >= 12 * 500 and saved[3] == 0


def test_loading_weights_bar_shows_at_the_first_load_only(tiny_model, capsys):
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()  # as in a fresh trainer process: policy, then reference
    load_causal_lm(tiny_model, torch.float32)
    assert "Loading weights" in capsys.readouterr().err
    load_causal_lm(tiny_model, torch.float32)
    assert "Loading weights" not in capsys.readouterr().err
