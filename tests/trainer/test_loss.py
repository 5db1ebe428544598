"""Policy loss, aggregation and KL penalties against hand-computed values."""
from __future__ import annotations

import math

import pytest
import torch

from trainer.config import TrainerConfig
from trainer.loss import KL_PENALTIES, agg_loss, compute_policy_loss, policy_loss, sft_loss

# Two sequences: A (2 tokens, advantage +1, ratios 1.5 and 1.0) and B (3 tokens,
# advantage -1, ratios 0.5, 4.0, 2.0), right-padded to 3 tokens.
#   A: -min(r, 1.2) * 1            -> [-1.2, -1.0]            (1.5 clipped)
#   B: max(r, clip(r)) = [0.8, 4.0, 2.0]; dual clip min(., 3) -> [0.8, 3.0, 2.0]  (0.5 clipped, 4.0 dual)
RATIOS = torch.tensor([[1.5, 1.0, 1.0], [0.5, 4.0, 2.0]])
ADV = torch.tensor([[1.0, 1.0, 0.0], [-1.0, -1.0, -1.0]])
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
HAND = {
    "token-mean": (-1.2 - 1.0 + 0.8 + 3.0 + 2.0) / 5,  # 0.72
    "seq-mean-token-sum": ((-1.2 - 1.0) + (0.8 + 3.0 + 2.0)) / 2,  # 1.8
    "seq-mean-token-mean": ((-1.2 - 1.0) / 2 + (0.8 + 3.0 + 2.0) / 3) / 2,  # 0.41667
}


def _pg(ratios=RATIOS, adv=ADV, mask=MASK, mode="token-mean", low=0.2, high=0.2, c=3.0, **norms):
    old = torch.zeros_like(ratios)
    return compute_policy_loss(old, torch.log(ratios), adv, mask, clip_ratio_low=low, clip_ratio_high=high,
                               clip_ratio_c=c, loss_agg_mode=mode, **norms)


@pytest.mark.parametrize("mode", sorted(HAND))
def test_two_sequence_loss_each_mode(mode):
    loss, stats = _pg(mode=mode)
    assert loss.item() == pytest.approx(HAND[mode], abs=1e-6)
    assert float(stats["clipped"]) == 2.0  # ratio 1.5 (A > 0) and 0.5 (A < 0)
    assert float(stats["clipped_lower"]) == 1.0  # ratio 4.0 with A < 0
    assert float(stats["approx_kl_sum"]) == pytest.approx(-math.log(1.5 * 0.5 * 4.0 * 2.0), abs=1e-6)


def test_dual_clip_caps_negative_advantage_only():
    loss, stats = _pg(ratios=torch.tensor([[4.0]]), adv=torch.tensor([[-2.0]]), mask=torch.ones(1, 1))
    assert loss.item() == pytest.approx(6.0)  # -A * c = 2 * 3, not 2 * 4
    assert float(stats["clipped_lower"]) == 1.0
    loss, stats = _pg(ratios=torch.tensor([[4.0]]), adv=torch.tensor([[2.0]]), mask=torch.ones(1, 1))
    assert loss.item() == pytest.approx(-2.4)  # -A * (1 + 0.2)
    assert float(stats["clipped_lower"]) == 0.0
    loss, _ = _pg(ratios=torch.tensor([[4.0]]), adv=torch.tensor([[-2.0]]), mask=torch.ones(1, 1), c=10.0)
    assert loss.item() == pytest.approx(8.0)  # bound not reached: -A * r


def test_clip_higher_and_asymmetric_low():
    loss, _ = _pg(ratios=torch.tensor([[1.5]]), adv=torch.ones(1, 1), mask=torch.ones(1, 1), high=0.28)
    assert loss.item() == pytest.approx(-1.28)
    loss, _ = _pg(ratios=torch.tensor([[0.5]]), adv=-torch.ones(1, 1), mask=torch.ones(1, 1), low=0.3)
    assert loss.item() == pytest.approx(0.7)


@pytest.mark.parametrize("mode", sorted(HAND))
def test_micro_batch_shares_sum_to_whole_batch(mode):
    norms = {"num_tokens": 5.0, "num_seqs": 2.0}
    parts = [_pg(RATIOS[i:i + 1], ADV[i:i + 1], MASK[i:i + 1], mode=mode, **norms)[0].item() for i in range(2)]
    assert sum(parts) == pytest.approx(HAND[mode], abs=1e-6)


def test_token_mean_per_micro_batch_differs_from_global():
    # verl-agent's per-micro-batch token mean, averaged: ((-2.2 / 2) + (5.8 / 3)) / 2 = 0.41667, not 0.72
    local = [_pg(RATIOS[i:i + 1], ADV[i:i + 1], MASK[i:i + 1])[0].item() for i in range(2)]
    assert sum(local) / 2 == pytest.approx(HAND["seq-mean-token-mean"], abs=1e-6)
    assert sum(local) / 2 != pytest.approx(HAND["token-mean"], abs=1e-3)


def test_masked_positions_never_leak_nan():
    loss_mat = torch.tensor([[1.0, float("inf")], [2.0, float("nan")]])
    mask = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    for mode in HAND:
        assert torch.isfinite(agg_loss(loss_mat, mask, mode))
    with pytest.raises(ValueError, match="loss_agg_mode='mean'"):
        agg_loss(loss_mat, mask, "mean")


def test_kl_penalties_hand_values():
    logp, ref = torch.tensor([0.0, 0.0, -1.0]), torch.tensor([math.log(2.0), -20.0, 30.0])
    k3 = KL_PENALTIES["low_var_kl"](logp, ref)
    # ref - logp = ln 2: 2 - ln 2 - 1; = -20: e^-20 + 20 - 1 = 19 -> clamped to 10; = 31 -> kl clamped to 20 first
    assert k3.tolist() == pytest.approx([1 - math.log(2.0), 10.0, 10.0], abs=1e-6)
    assert KL_PENALTIES["kl"](logp, ref).tolist() == pytest.approx([-math.log(2.0), 20.0, -31.0])
    assert KL_PENALTIES["abs"](logp, ref).tolist() == pytest.approx([math.log(2.0), 20.0, 31.0])
    assert KL_PENALTIES["mse"](logp, ref).tolist() == pytest.approx([0.5 * math.log(2.0) ** 2, 200.0, 480.5])


def test_policy_loss_adds_entropy_bonus_and_kl():
    cfg = TrainerConfig(entropy_coeff=0.1, kl_coef=0.5, loss_agg_mode="token-mean")
    mask = torch.ones(1, 2)
    logp = torch.log(torch.tensor([[0.5, 0.25]]))
    entropy = torch.tensor([[1.0, 3.0]])
    ref = logp + math.log(2.0)  # k3 per token: 2 - ln 2 - 1
    out = policy_loss(logp, entropy, logp.clone(), torch.ones(1, 2), mask, cfg, ref)
    pg, ent, kl = -1.0, 2.0, 1 - math.log(2.0)  # ratio 1: -A per token
    assert out.loss.item() == pytest.approx(pg - 0.1 * ent + 0.5 * kl, abs=1e-6)
    assert float(out.stats["entropy"]) == pytest.approx(ent)
    assert float(out.stats["kl_loss"]) == pytest.approx(kl, abs=1e-6)
    with pytest.raises(ValueError, match="needs ref_logprob"):
        policy_loss(logp, entropy, logp, torch.ones(1, 2), mask, cfg, None)


def test_loss_gradient_flows_only_through_unclipped_tokens():
    logp = torch.log(RATIOS).clone().requires_grad_(True)
    loss, _ = compute_policy_loss(torch.zeros_like(RATIOS), logp, ADV, MASK, clip_ratio_low=0.2,
                                  clip_ratio_high=0.2, clip_ratio_c=3.0, loss_agg_mode="token-mean")
    loss.backward()
    # d/dlogp of -A*r/5 = -A*r/5 where unclipped; 0 where clipped (1.5, 0.5), dual-clipped (4.0) or masked
    expected = torch.tensor([[0.0, -1.0 / 5, 0.0], [0.0, 0.0, 2.0 / 5]])
    assert torch.allclose(logp.grad, expected, atol=1e-6)


# SFT: token probabilities A = [1/2, 1/4], B = [1/8, 1, 1/2]; the padding position holds junk.
SFT_LOGP = torch.log(torch.tensor([[0.5, 0.25, 1e-30], [0.125, 1.0, 0.5]]))
LN2 = math.log(2.0)
SFT_HAND = {
    "token-mean": (1 + 2 + 3 + 0 + 1) * LN2 / 5,  # mean token NLL: 7 ln 2 / 5
    "seq-mean-token-sum": ((1 + 2) + (3 + 0 + 1)) * LN2 / 2,
    "seq-mean-token-mean": ((1 + 2) / 2 + (3 + 0 + 1) / 3) * LN2 / 2,
}


@pytest.mark.parametrize("mode", sorted(SFT_HAND))
def test_sft_loss_is_the_response_token_nll(mode):
    cfg = TrainerConfig(loss="sft", kl_coef=0.0, loss_agg_mode=mode)
    out = sft_loss(SFT_LOGP, torch.ones(2, 3), MASK, cfg)
    assert out.loss.item() == pytest.approx(SFT_HAND[mode], abs=1e-6)
    assert float(out.stats["entropy"]) == pytest.approx({"token-mean": 1.0, "seq-mean-token-sum": 2.5,
                                                         "seq-mean-token-mean": 1.0}[mode])
    norms = {"num_tokens": 5.0, "num_seqs": 2.0}  # micro-batch shares add up to the mini-batch loss
    parts = [sft_loss(SFT_LOGP[i:i + 1], torch.ones(1, 3), MASK[i:i + 1], cfg, **norms).loss.item() for i in range(2)]
    assert sum(parts) == pytest.approx(SFT_HAND[mode], abs=1e-6)


def test_sft_gradient_is_minus_one_over_tokens():
    logp = SFT_LOGP.clone().requires_grad_(True)
    sft_loss(logp, torch.zeros(2, 3), MASK, TrainerConfig(loss="sft", kl_coef=0.0)).loss.backward()
    assert torch.allclose(logp.grad, -MASK / 5)


def test_sft_has_no_reference_policy():
    with pytest.raises(ValueError, match=r"TrainerConfig.kl_coef=0.01: expected 0 with loss='sft'"):
        TrainerConfig(loss="sft")
    with pytest.raises(ValueError, match=r"TrainerConfig.loss='dpo': expected one of \['ppo', 'sft'\]"):
        TrainerConfig(loss="dpo")
