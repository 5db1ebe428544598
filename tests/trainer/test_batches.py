"""Advantage rows -> validated flat arrays -> packed or padded micro-batches and step plans."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pipeline.config import from_dict
from trainer.batches import PAD_ROW, BadRoundError, collate, load_rows, make_plan
from trainer.config import TrainerConfig


def _frame(**over) -> pl.DataFrame:
    base = {"episode_id": [10, 11, 12], "step": [0, 1, 2], "prompt_ids": [[5, 6], [7], [1, 2, 3]],
            "response_ids": [[8], [9, 10], [4, 4, 4]], "response_logprobs": [[-0.5], [-1.0, -2.0], [-1.0] * 3],
            "advantage": [1.0, -1.0, 0.5]}
    base.update(over)
    return pl.DataFrame(base)


def test_collate_pads_right_and_masks_responses():
    data = load_rows(_frame(), vocab_size=16, max_seq_len=8)
    mb = collate(data, np.array([1, 0, PAD_ROW]), pad_id=0, old_logprobs=data.rollout_logprobs)
    assert mb.input_ids.tolist() == [[7, 9, 10], [5, 6, 8], [0, 0, 0]]
    assert mb.attention_mask.tolist() == [[1, 1, 1], [1, 1, 1], [1, 0, 0]]
    # logits at flat position row * T + p - 1 + j predict response token j; padding points at position 0
    assert mb.resp_index.tolist() == [[0, 1], [4, 0], [0, 0]]
    assert mb.response_ids.tolist() == [[9, 10], [8, 0], [0, 0]]
    assert mb.mask.tolist() == [[1, 1], [1, 0], [0, 0]]
    assert mb.advantages.tolist() == [[-1, -1], [1, 0], [0, 0]]
    assert mb.old_logprobs.tolist() == [[-1, -2], [-0.5, 0], [0, 0]]
    assert mb.seq_lens.tolist() == [3, 3, 0]
    assert mb.ref_logprobs is None and mb.position_ids is None
    assert mb.padding_share == pytest.approx(3 / 9, abs=1e-15)


def test_collate_packs_without_padding():
    data = load_rows(_frame(), vocab_size=16, max_seq_len=8)
    mb = collate(data, np.array([2, PAD_ROW, 1, 0]), pad_id=0, old_logprobs=data.rollout_logprobs, packed=True)
    assert mb.input_ids.tolist() == [[1, 2, 3, 4, 4, 4, 7, 9, 10, 5, 6, 8]]
    assert mb.position_ids.tolist() == [[0, 1, 2, 3, 4, 5, 0, 1, 2, 0, 1, 2]]
    assert mb.attention_mask is None and mb.padding_share == 0.0
    assert mb.resp_index.tolist() == [[2, 3, 4], [0, 0, 0], [6, 7, 0], [10, 0, 0]]
    assert mb.response_ids.tolist() == [[4, 4, 4], [0, 0, 0], [9, 10, 0], [8, 0, 0]]
    assert mb.mask.tolist() == [[1, 1, 1], [0, 0, 0], [1, 1, 0], [1, 0, 0]]
    assert mb.old_logprobs.tolist() == [[-1, -1, -1], [0, 0, 0], [-1, -2, 0], [-0.5, 0, 0]]
    assert mb.seq_lens.tolist() == [6, 0, 3, 3]


def test_load_rows_projects_only_needed_columns_and_keeps_order():
    df = _frame(observation=["a", "b", "c"])
    data = load_rows(df.lazy(), vocab_size=16, max_seq_len=8)
    assert data.tokens.tolist() == [5, 6, 8, 7, 9, 10, 1, 2, 3, 4, 4, 4]
    assert data.seq_start.tolist() == [0, 3, 6]
    assert data.resp_start.tolist() == [0, 1, 3]
    assert data.advantage.tolist() == [1.0, -1.0, 0.5]


@pytest.mark.parametrize("over, match", [
    ({"advantage": [1.0, float("nan"), 0.5]}, r"'advantage' of row 1 \(episode_id=11, step=1\) is nan"),
    ({"advantage": [1.0, 0.5, float("inf")]}, r"'advantage' of row 2 .* is inf"),
    ({"advantage": [1.0, None, 0.5]}, r"'advantage' of row 1 .* is null"),
    ({"response_ids": [[8], [9, 16], [4, 4, 4]]},
     r"'response_ids' of row 1 .* token id 16 outside the vocabulary \[0, 16\)"),
    ({"prompt_ids": [[5, 6], [7], [1, -2, 3]]}, r"'prompt_ids' of row 2 .* token id -2"),
    ({"prompt_ids": [[5, 6], [7], [1] * 6]}, r"'prompt_ids' of row 2 .* hold 9 tokens; longer than max_seq_len=8"),
    ({"response_logprobs": [[-0.5], [-1.0], [-1.0] * 3]}, r"'response_logprobs' of row 1 .* has 1 values for 2"),
    ({"response_logprobs": [[-0.5], [-1.0, float("nan")], [-1.0] * 3]}, r"'response_logprobs' of row 1 .* is nan"),
    ({"prompt_ids": [[5, 6], [], [1, 2, 3]]}, r"'prompt_ids' of row 1 .* is empty"),
])
def test_bad_rows_name_column_and_row(over, match):
    with pytest.raises(BadRoundError, match=match):
        load_rows(_frame(**over), vocab_size=16, max_seq_len=8)


def test_missing_column_is_named():
    with pytest.raises(BadRoundError, match=r"lack column\(s\) \['advantage'\]"):
        load_rows(_frame().drop("advantage"), vocab_size=16, max_seq_len=8)


def test_logprobs_not_checked_when_recomputed():
    df = _frame(response_logprobs=[[-0.5], [-1.0, float("nan")], [-1.0] * 3])
    assert load_rows(df, 16, 8, check_logprobs=False).n_rows == 3


def test_empty_responses_dropped_and_counted():
    df = _frame(response_ids=[[8], [], [4, 4, 4]], response_logprobs=[[-0.5], [], [-1.0] * 3])
    data = load_rows(df, vocab_size=16, max_seq_len=8)
    assert (data.n_rows, data.dropped_empty) == (2, 1)
    assert data.tokens.tolist() == [5, 6, 8, 1, 2, 3, 4, 4, 4]
    assert data.advantage.tolist() == [1.0, 0.5]
    empty = load_rows(_frame().head(0), vocab_size=16, max_seq_len=8)
    assert (empty.n_rows, empty.dropped_empty) == (0, 0)


def test_plan_covers_each_row_once_per_epoch(make_rows):
    data = load_rows(make_rows(11), vocab_size=500, max_seq_len=64)
    cfg = TrainerConfig(mini_batch_size=4, micro_batch_size=2, ppo_epochs=2, seed=3)
    plan = make_plan(data, cfg, world_size=1)
    assert plan.shape == (6, 2, 1, 2)  # ceil(11 / 4) = 3 steps per epoch
    for epoch in plan.reshape(2, -1):
        assert sorted(epoch[epoch != PAD_ROW].tolist()) == list(range(11))
        assert (epoch == PAD_ROW).sum() == 1
    lens = data.prompt_len + data.resp_len
    for step in plan.reshape(6, -1):  # each mini-batch sorted by length, longest first
        real = step[step != PAD_ROW]
        assert np.all(np.diff(lens[real]) <= 0)
    assert not np.array_equal(plan[:3], plan[3:])  # epochs reshuffle
    assert np.array_equal(plan, make_plan(data, cfg, world_size=1))  # seeded


def test_plan_spreads_rows_evenly_over_mini_batches(make_rows):
    """1,410 rows in mini-batches of 128: 12 steps of 117-118 rows, not 11 full ones and a step of 2 rows."""
    data = load_rows(make_rows(1410), vocab_size=500, max_seq_len=64)
    plan = make_plan(data, TrainerConfig(mini_batch_size=128, micro_batch_size=32), world_size=1)
    real = (plan.reshape(12, 128) != PAD_ROW).sum(1)
    assert real.tolist() == [118] * 6 + [117] * 6


def test_plan_same_rows_per_accumulation_step_across_world_sizes(make_rows):
    data = load_rows(make_rows(16), vocab_size=500, max_seq_len=64)
    one = make_plan(data, TrainerConfig(mini_batch_size=8, micro_batch_size=4), world_size=1)
    two = make_plan(data, TrainerConfig(mini_batch_size=8, micro_batch_size=2), world_size=2)
    assert one.shape == (2, 2, 1, 4) and two.shape == (2, 2, 2, 2)
    assert np.array_equal(one.reshape(2, 2, 4), two.reshape(2, 2, 4))


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match=r"TrainerConfig.clip_ratio_c=1.0: expected > 1"):
        TrainerConfig(clip_ratio_c=1.0)
    with pytest.raises(ValueError, match=r"mini_batch_size=10: expected a multiple of micro_batch_size=4"):
        TrainerConfig(mini_batch_size=10, micro_batch_size=4)
    with pytest.raises(ValueError, match=r"micro_batch_size \* world_size = 4 \* 3"):
        TrainerConfig(mini_batch_size=8, micro_batch_size=4).grad_accum_steps(3)
    with pytest.raises(ValueError, match=r"trainer.lr_rate: unknown key"):
        from_dict(TrainerConfig, {"lr_rate": 1.0}, "trainer")
    assert from_dict(TrainerConfig, {"betas": [0.9, 0.95]}).betas == (0.9, 0.95)


@pytest.mark.parametrize("packed", [False, True])
def test_collate_all_padding_micro_batch(packed):
    data = load_rows(_frame(), vocab_size=16, max_seq_len=8)
    mb = collate(data, np.array([PAD_ROW, PAD_ROW]), pad_id=0, old_logprobs=data.rollout_logprobs, packed=packed)
    assert mb.input_ids.tolist() == ([[0]] if packed else [[0], [0]]) and mb.resp_index.tolist() == [[0], [0]]
    assert mb.mask.sum().item() == 0 and mb.padding_share == 1.0
