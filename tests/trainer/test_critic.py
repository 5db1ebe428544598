"""PPO with a critic: GAE over an episode's steps, the clipped value loss, the value head in training and in
checkpoints."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from trainer.config import CriticConfig, TrainerConfig
from trainer.critic import VALUE_HEAD, CriticModel, load_value_head, save_value_head, value_loss
from trainer.deepspeed_engine import build_engine
from trainer.gae import gae, whiten
from trainer.updates import train_round

QUIET = dict(progress=False)
CRITIC = TrainerConfig(kl_coef=0.0, old_logprobs="rollout", lr=1e-2, mini_batch_size=8, micro_batch_size=4,
                       shuffle=False, save_every=0, critic=CriticConfig(gamma=0.9, lam=0.5, cliprange_value=100.0))


def test_gae_of_a_three_step_episode_by_hand():
    # episode 7: rewards 0, 0, 10 with V = 1, 2, 4; gamma 0.9, lam 0.5 (gamma * lam = 0.45)
    # delta_2 = 10 - 4 = 6 (no bootstrap after the last step); A_2 = 6
    # delta_1 = 0 + 0.9 * 4 - 2 = 1.6;  A_1 = 1.6 + 0.45 * 6 = 4.3
    # delta_0 = 0 + 0.9 * 2 - 1 = 0.8;  A_0 = 0.8 + 0.45 * 4.3 = 2.735
    # episode 3 (one step, reward 1, V = 0.5): A = 0.5, never bootstrapped from episode 7
    # rows in shuffled order: (7, 2), (3, 0), (7, 0), (7, 1)
    reward = np.array([10.0, 1.0, 0.0, 0.0])
    value = np.array([4.0, 0.5, 1.0, 2.0])
    adv, ret = gae(reward, value, np.array([7, 3, 7, 7]), np.array([2, 0, 0, 1]), 0.9, 0.5)
    assert adv == pytest.approx([6.0, 0.5, 2.735, 4.3], abs=1e-12)
    assert ret == pytest.approx([10.0, 1.0, 3.735, 6.3], abs=1e-12)  # R_t = A_t + V(s_t)


def test_gae_with_lam_one_is_the_discounted_return_minus_the_value():
    adv, _ = gae(np.array([0.0, 0.0, 10.0]), np.array([1.0, 2.0, 4.0]), np.zeros(3, int), np.arange(3), 0.9, 1.0)
    assert adv == pytest.approx([8.1 - 1.0, 9.0 - 2.0, 10.0 - 4.0], abs=1e-12)


def test_whitening_is_over_steps_with_the_unbiased_std():
    out = whiten(np.array([1.0, 2.0, 6.0]))  # mean 3, unbiased var (4 + 1 + 9) / 2 = 7
    assert out == pytest.approx(np.array([-2.0, -1.0, 3.0]) / np.sqrt(7 + 1e-8), abs=1e-12)


def test_clipped_value_loss_by_hand():
    # row 0: V moves 2 away from V_old = 1 towards R = 4; clipped to 1.5: max(1^2, 2.5^2) = 6.25 (clip binds)
    # row 1: V = 0.2 from V_old = 0, R = -1: clip is inactive, (1.2)^2 = 1.44 both ways
    # row 2: V overshoots past R: V = 3, V_old = 1, R = 1.2; clipped 1.5: max(1.8^2, 0.3^2) = 3.24
    # row 3: masked out (a padding row)
    values = torch.tensor([3.0, 0.2, 3.0, 50.0])
    old = torch.tensor([1.0, 0.0, 1.0, 0.0])
    ret = torch.tensor([4.0, -1.0, 1.2, 0.0])
    loss, stats = value_loss(values, old, ret, torch.tensor([1.0, 1.0, 1.0, 0.0]), cliprange_value=0.5)
    assert loss.item() == pytest.approx(0.5 * (6.25 + 1.44 + 3.24) / 3, abs=1e-6)
    assert stats["vf_clipped"].item() == 1 and stats["value_rows"].item() == 3
    half, _ = value_loss(values, old, ret, torch.tensor([1.0, 1.0, 1.0, 0.0]), cliprange_value=0.5, num_seqs=6)
    assert half.item() == pytest.approx(loss.item() / 2, abs=1e-6)  # a micro-batch's share of 6 rows


def test_value_loss_falls_while_training_on_one_batch(tiny_model, tmp_path, make_rows, dist_group):
    rows = make_rows(8, seed=5)  # one step per episode: the targets are the rows' rewards ("advantage")
    cfg = dataclasses.replace(CRITIC, ppo_epochs=10, lr=3e-3)
    res = train_round(cfg, tiny_model, rows, tmp_path / "out", **QUIET)
    vf = [m["vf_loss"] for m in res.metrics]
    rewards = rows["advantage"].to_numpy()
    assert vf[0] == pytest.approx(0.5 * np.mean(rewards ** 2), rel=1e-4)  # the head starts at V = 0
    assert vf[-1] < 0.5 * vf[0] and all(b < a for a, b in zip(vf, vf[1:]))
    assert res.metrics[-1]["explained_var"] > res.metrics[0]["explained_var"]
    assert all(m["loss"] == pytest.approx(m["pg_loss"] + 0.1 * m["vf_loss"], abs=1e-6) for m in res.metrics)


def test_value_head_save_load_round_trip(tmp_path):
    from transformers import Qwen2Config

    lm = AutoModelForCausalLM.from_config(Qwen2Config(vocab_size=16, hidden_size=32, intermediate_size=64,
                                                      num_hidden_layers=1, num_attention_heads=1,
                                                      num_key_value_heads=1))
    trained = CriticModel(lm)
    torch.nn.init.normal_(trained.value_head.weight)
    torch.nn.init.normal_(trained.value_head.bias)
    save_value_head(trained, tmp_path)
    fresh = CriticModel(lm)
    assert not fresh.value_head.weight.any()  # a new head starts at zero
    assert load_value_head(fresh, tmp_path) and not load_value_head(CriticModel(lm), tmp_path / "none")
    for name, p in trained.value_head.state_dict().items():
        assert torch.equal(fresh.value_head.state_dict()[name], p)


def test_checkpoint_carries_the_value_head_to_the_next_round(tiny_model, tmp_path, make_rows, dist_group):
    rows = make_rows(8, seed=6)
    keep = dataclasses.replace(CRITIC, optimizer_state="keep")
    first = train_round(keep, tiny_model, rows, tmp_path / "r0", state_dir=tmp_path / "s0", **QUIET)
    saved = torch.load(first.checkpoint / VALUE_HEAD, weights_only=True)
    assert saved["weight"].abs().sum() > 0  # trained away from zero
    lm, info = AutoModelForCausalLM.from_pretrained(first.checkpoint, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]  # still a plain causal LM
    engine, _ = build_engine(keep, first.checkpoint, 1)
    assert torch.equal(engine.module.value_head.weight.detach().cpu(), saved["weight"])
    second = train_round(keep, first.checkpoint, rows, tmp_path / "r1", state_dir=tmp_path / "s1",
                         optimizer_from=tmp_path / "s0", **QUIET)
    assert second.continued  # the value head's AdamW moments came along with the policy's


def test_a_state_without_value_head_is_not_continued_by_a_critic(tiny_model, tmp_path, make_rows, dist_group):
    rows = make_rows(8, seed=7)
    plain = dataclasses.replace(CRITIC, critic=None, optimizer_state="keep")
    warm = train_round(plain, tiny_model, rows, tmp_path / "w", state_dir=tmp_path / "sw", **QUIET)
    assert not (warm.checkpoint / VALUE_HEAD).exists()
    critic = train_round(dataclasses.replace(plain, critic=CRITIC.critic), warm.checkpoint, rows, tmp_path / "r0",
                         state_dir=tmp_path / "s0", optimizer_from=tmp_path / "sw", **QUIET)
    assert not critic.continued and critic.steps == 1  # AdamW starts fresh; the head starts at zero
    assert critic.metrics[0]["vf_loss"] == pytest.approx(0.5 * np.mean(rows["advantage"].to_numpy() ** 2), rel=1e-4)
