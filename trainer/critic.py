"""PPO's critic: a value head on the policy's backbone, its clipped value loss, and its file in a checkpoint.

The head is one linear layer on the last hidden state at a step's last prompt token
(the position whose logits predict the first response token), so V(s_t) comes from
the forward pass that gives the step's log-probs. It shares the backbone and the
AdamW of the policy (a shared actor-critic, as in the PPO paper): the value loss,
weighted by ``critic.vf_coef``, reaches the backbone too, and one copy of the model
serves both, whatever its size. The head starts at zero (V = 0: the first round's
advantages are the discounted reward-to-go). Its weights go into the DeepSpeed
state with the policy's, and beside the Hugging Face export as ``value_head.pt``,
which a causal-LM loader (transformers, vLLM) never reads: the rollout loads the
checkpoint as a plain causal LM.

>>> import torch
>>> one = torch.ones(1)
>>> loss, stats = value_loss(3 * one, one, 0 * one, one, cliprange_value=0.5)
>>> loss.item(), stats["vf_clipped"].item()  # 0.5 * max(3^2, 1.5^2): the unclipped error is larger
(4.5, 0)
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from trainer.loss import PolicyLoss
from trainer.model import LogProbModel

VALUE_HEAD = "value_head.pt"


class CriticModel(LogProbModel):
    """``LogProbModel`` with a value head; ``forward(..., with_values=True)`` also returns ``values [B]``."""

    def __init__(self, lm: nn.Module, temperature: float = 1.0, chunk_tokens: int = 0):
        super().__init__(lm, temperature, chunk_tokens)
        self.value_head = nn.Linear(lm.config.hidden_size, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None, position_ids: Tensor | None,
                resp_index: Tensor, response_ids: Tensor, mask: Tensor, with_entropy: bool = True,
                entropy_grad: bool = True, with_values: bool = False):
        hidden = self.hidden(input_ids, attention_mask, position_ids)
        lp, ent = self.response_logprobs(hidden, resp_index, response_ids, mask, with_entropy, entropy_grad)
        if not with_values:
            return lp, ent
        return lp, ent, self.value_head(hidden.flatten(0, 1)[resp_index[:, 0]]).squeeze(-1).float()


def value_loss(values: Tensor, old_values: Tensor, returns: Tensor, row_mask: Tensor, cliprange_value: float,
               num_seqs: float | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """verl's clipped value loss, one value per row: ``0.5 * max((V - R)^2, (clip(V, V_old +- c) - R)^2)``.

    Averaged over the rows of ``row_mask`` (a mini-batch's ``num_seqs`` rows when this is one
    micro-batch of it: the shares then sum to the mini-batch mean). Statistics are 0-d sums:
    ``vf_clipped`` (rows where the clipped error is the larger), the rows, and sums of the
    returns and of the errors ``R - V`` and their squares (explained variance).
    """
    on = row_mask > 0
    clipped = old_values + (values - old_values).clamp(-cliprange_value, cliprange_value)
    unclipped_sq, clipped_sq = (values - returns).square(), (clipped - returns).square()
    per_row = torch.where(on, torch.maximum(unclipped_sq, clipped_sq), torch.zeros_like(values))
    loss = 0.5 * per_row.sum() / (on.sum().clamp(min=1) if num_seqs is None else num_seqs)
    with torch.no_grad():
        err, ret = torch.where(on, returns - values, 0.0), torch.where(on, returns, 0.0)
        stats = {"vf_loss": loss.detach(), "vf_clipped": (torch.gt(clipped_sq, unclipped_sq) & on).sum(),
                 "value_rows": on.sum(), "value_ret_sum": ret.sum(), "value_ret_sq": ret.square().sum(),
                 "value_err_sum": err.sum(), "value_err_sq": err.square().sum()}
    return loss, stats


def with_value_loss(out: PolicyLoss, values: Tensor, mb, critic, num_seqs: float) -> PolicyLoss:
    """``out`` (the policy loss of micro-batch ``mb``) plus ``critic.vf_coef`` x its value loss, with its stats."""
    vf, stats = value_loss(values, mb.old_values, mb.returns, mb.mask[:, 0], critic.cliprange_value, num_seqs)
    loss = out.loss + critic.vf_coef * vf
    return PolicyLoss(loss=loss, stats={**out.stats, **stats, "loss": loss.detach()})


def save_value_head(module: nn.Module, out_dir: str | Path) -> None:
    """Write ``module``'s value head (fp32) into the checkpoint folder ``out_dir``, if it has one."""
    if hasattr(module, "value_head"):
        weights = {k: v.detach().float().cpu().clone() for k, v in module.value_head.state_dict().items()}
        torch.save(weights, Path(out_dir) / VALUE_HEAD)


def load_value_head(module: CriticModel, policy_path: str | Path) -> bool:
    """Load the value head saved with the checkpoint ``policy_path``; False (the head stays at zero) when none."""
    path = Path(policy_path) / VALUE_HEAD
    if not path.is_file():
        return False
    module.value_head.load_state_dict(torch.load(path, weights_only=True))
    return True
