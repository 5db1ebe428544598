"""PPO clipped policy loss, loss aggregation and KL penalties, as verl computes them; the SFT loss.

All tensors are ``[batch, response_len]`` with a 0/1 ``mask`` over response tokens.
Aggregation takes optional mini-batch-wide normalisers (``num_tokens``,
``num_seqs``): each micro-batch then returns its *share* of the mini-batch loss,
so the shares of all micro-batches and ranks sum to verl's ``agg_loss`` of the
whole mini-batch, however it is cut (verl-agent instead averages per-micro-batch
token means, which differs for ``token-mean`` when micro-batches hold unequal
token counts). Without normalisers the result is exactly verl's ``agg_loss``.

>>> import torch
>>> loss = torch.tensor([[1.0, 3.0, 0.0], [2.0, 0.0, 0.0]])
>>> mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
>>> [round(agg_loss(loss, mask, m).item(), 4) for m in ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean")]
[2.0, 3.0, 2.0]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

AggFn = Callable[[Tensor, Tensor, "float | None", "float | None"], Tensor]
AGG_MODES: dict[str, AggFn] = {}
KL_PENALTIES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {}


def register_agg_mode(name: str):
    """Register ``fn(masked_loss, mask, num_tokens, num_seqs) -> scalar`` under ``name``."""
    def wrap(fn: AggFn) -> AggFn:
        AGG_MODES[name] = fn
        return fn
    return wrap


def register_kl_penalty(name: str):
    """Register ``fn(logprob, ref_logprob) -> per-token penalty`` under ``name``."""
    def wrap(fn):
        KL_PENALTIES[name] = fn
        return fn
    return wrap


@register_agg_mode("token-mean")
def _token_mean(loss: Tensor, mask: Tensor, num_tokens, num_seqs) -> Tensor:
    return loss.sum() / (mask.sum() if num_tokens is None else num_tokens)


@register_agg_mode("seq-mean-token-sum")
def _seq_mean_token_sum(loss: Tensor, mask: Tensor, num_tokens, num_seqs) -> Tensor:
    return loss.sum(-1).sum() / (loss.shape[0] if num_seqs is None else num_seqs)


@register_agg_mode("seq-mean-token-mean")
def _seq_mean_token_mean(loss: Tensor, mask: Tensor, num_tokens, num_seqs) -> Tensor:
    # clamp: padding rows (no tokens) add 0 instead of 0/0
    per_seq = loss.sum(-1) / mask.sum(-1).clamp(min=1)
    return per_seq.sum() / (loss.shape[0] if num_seqs is None else num_seqs)


def agg_loss(loss_mat: Tensor, mask: Tensor, mode: str, num_tokens: float | None = None,
             num_seqs: float | None = None) -> Tensor:
    """Aggregate a per-token loss matrix to a scalar (verl's ``agg_loss``).

    ``num_tokens`` / ``num_seqs``: mini-batch totals when this is one micro-batch of it.
    """
    if mode not in AGG_MODES:
        raise ValueError(f"loss_agg_mode={mode!r}: expected one of {sorted(AGG_MODES)}")
    masked = torch.where(mask > 0, loss_mat, torch.zeros_like(loss_mat))  # never NaN * 0
    return AGG_MODES[mode](masked, mask, num_tokens, num_seqs)


@register_kl_penalty("kl")
def _k1(logprob: Tensor, ref_logprob: Tensor) -> Tensor:
    return logprob - ref_logprob


@register_kl_penalty("abs")
def _abs(logprob: Tensor, ref_logprob: Tensor) -> Tensor:
    return (logprob - ref_logprob).abs()


@register_kl_penalty("mse")
def _k2(logprob: Tensor, ref_logprob: Tensor) -> Tensor:
    return 0.5 * (logprob - ref_logprob).square()


@register_kl_penalty("low_var_kl")
def _k3(logprob: Tensor, ref_logprob: Tensor) -> Tensor:
    """Schulman's k3 estimator of KL(pi || ref), clamped to [-10, 10] as in verl."""
    kl = torch.clamp(ref_logprob - logprob, min=-20.0, max=20.0)
    return torch.clamp(kl.exp() - kl - 1, min=-10.0, max=10.0)


@dataclass
class PolicyLoss:
    """One micro-batch's share of the mini-batch loss and its summable statistics."""

    loss: Tensor  # pg_loss - entropy_coeff * entropy + kl_coef * kl_loss (backpropagate this)
    stats: dict[str, Tensor]  # 0-d: shares (pg_loss, entropy, kl_loss, loss) and token counts (clipped, ...)


def compute_policy_loss(old_logprob: Tensor, logprob: Tensor, advantages: Tensor, mask: Tensor, *,
                        clip_ratio_low: float, clip_ratio_high: float, clip_ratio_c: float,
                        loss_agg_mode: str, num_tokens: float | None = None,
                        num_seqs: float | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped objective with dual clip (verl's ``compute_policy_loss_vanilla``).

    Returns the aggregated loss and token counts as 0-d tensors (no host sync):
    ``clipped`` (the clipped branch is active), ``clipped_lower`` (dual clip active),
    ``approx_kl_sum`` (sum of old - new).

    >>> import torch
    >>> one = torch.ones(1, 1)
    >>> loss, s = compute_policy_loss(torch.zeros(1, 1), torch.log(4 * one), -one, one, clip_ratio_low=0.2,
    ...                               clip_ratio_high=0.2, clip_ratio_c=3.0, loss_agg_mode="token-mean")
    >>> loss.item(), float(s["clipped_lower"])
    (3.0, 1.0)
    """
    log_ratio = torch.clamp(logprob - old_logprob, min=-20.0, max=20.0)
    ratio = torch.exp(log_ratio)
    pg_losses1 = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1 - clip_ratio_low, 1 + clip_ratio_high)
    clip_pg_losses1 = torch.maximum(pg_losses1, pg_losses2)
    pg_losses3 = -advantages * clip_ratio_c
    clip_pg_losses2 = torch.minimum(pg_losses3, clip_pg_losses1)
    pg_losses = torch.where(advantages < 0, clip_pg_losses2, clip_pg_losses1)
    pg_loss = agg_loss(pg_losses, mask, loss_agg_mode, num_tokens, num_seqs)
    on = mask > 0
    with torch.no_grad():
        stats = {
            "clipped": (torch.gt(pg_losses2, pg_losses1) & on).sum(),
            "clipped_lower": (torch.gt(clip_pg_losses1, pg_losses3) & (advantages < 0) & on).sum(),
            "approx_kl_sum": torch.where(on, -log_ratio, 0.0).sum(),
        }
    return pg_loss, stats


def policy_loss(logprob: Tensor, entropy: Tensor, old_logprob: Tensor, advantages: Tensor, mask: Tensor,
                cfg, ref_logprob: Tensor | None = None, num_tokens: float | None = None,
                num_seqs: float | None = None) -> PolicyLoss:
    """Full actor loss of one micro-batch: clipped PG - entropy bonus + KL to the reference.

    ``cfg`` is a ``TrainerConfig``; ``ref_logprob`` is required when ``cfg.kl_coef > 0``.
    """
    mode = cfg.loss_agg_mode
    pg_loss, stats = compute_policy_loss(
        old_logprob, logprob, advantages, mask, clip_ratio_low=cfg.clip_ratio_low,
        clip_ratio_high=cfg.clip_ratio_high, clip_ratio_c=cfg.clip_ratio_c, loss_agg_mode=mode,
        num_tokens=num_tokens, num_seqs=num_seqs)
    entropy_share = agg_loss(entropy, mask, mode, num_tokens, num_seqs)
    loss = pg_loss - cfg.entropy_coeff * entropy_share if cfg.entropy_coeff > 0 else pg_loss
    kl_share = torch.zeros((), dtype=pg_loss.dtype, device=pg_loss.device)
    if cfg.kl_coef > 0:
        if ref_logprob is None:
            raise ValueError("policy_loss: kl_coef > 0 needs ref_logprob (reference policy log-probs)")
        kl_share = agg_loss(KL_PENALTIES[cfg.kl_loss_type](logprob, ref_logprob), mask, mode, num_tokens, num_seqs)
        loss = loss + cfg.kl_coef * kl_share
    stats.update(pg_loss=pg_loss, entropy=entropy_share, kl_loss=kl_share, loss=loss, response_tokens=mask.sum())
    stats = {k: v.detach() for k, v in stats.items()}
    return PolicyLoss(loss=loss, stats=stats)


def sft_loss(logprob: Tensor, entropy: Tensor, mask: Tensor, cfg, num_tokens: float | None = None,
             num_seqs: float | None = None) -> PolicyLoss:
    """Negative log-likelihood of the response tokens, aggregated by ``cfg.loss_agg_mode``.

    With ``token-mean`` (the default) the mini-batch loss is the mean token NLL.

    >>> from trainer.config import TrainerConfig
    >>> lp = torch.tensor([[-1.0, -2.0, -9.0], [-0.5, -9.0, -9.0]])
    >>> mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    >>> round(sft_loss(lp, torch.zeros(2, 3), mask, TrainerConfig(loss="sft", kl_coef=0.0)).loss.item(), 4)
    1.1667
    """
    loss = agg_loss(-logprob, mask, cfg.loss_agg_mode, num_tokens, num_seqs)
    stats = {"loss": loss, "entropy": agg_loss(entropy, mask, cfg.loss_agg_mode, num_tokens, num_seqs),
             "response_tokens": mask.sum()}
    return PolicyLoss(loss=loss, stats={k: v.detach() for k, v in stats.items()})
