"""HF policy backend on CPU with the tiny model: sampling, log-probs, stops, errors, the process cache."""
from __future__ import annotations

import json
import shutil

import pytest

from pipeline.models.tiny_model import IM_END, PAD_TOKEN, make_tiny_model
from pipeline.policy import CheckpointError, PolicyConfig, SamplingConfig, load_policy, make_backend, release_policy
from pipeline.policy.hf import HFBackend
from pipeline.policy.vllm import logprobs_mode


def _prompts(tok, n: int = 5) -> list[list[int]]:
    texts = [tok.apply_chat_template([{"role": "user", "content": "go to cabinet 1" + " and look" * i}],
                                     add_generation_prompt=True, tokenize=False) for i in range(n)]
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


@pytest.mark.parametrize("temperature,top_p,top_k", [(1.0, 1.0, 0), (0.7, 0.9, 50)])
def test_logprobs_match_unpadded_recomputation(tiny_model, temperature, top_p, top_k):
    sampling = SamplingConfig(temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=12)
    policy = make_backend(tiny_model, PolicyConfig(max_batch_size=2), sampling)  # 3 left-padded batches
    prompts = _prompts(policy.tokenizer)
    assert len({len(p) for p in prompts}) == 5
    out = policy.generate(prompts, seed=3)
    for prompt, gen in zip(prompts, out):
        assert len(gen.token_ids) == len(gen.logprobs) >= 1
        assert gen.text == policy.tokenizer.decode(gen.token_ids, skip_special_tokens=True)
        ref = policy.score(prompt, gen.token_ids)
        assert max(abs(a - b) for a, b in zip(ref, gen.logprobs)) < 1e-4
        assert all(lp <= 0 for lp in gen.logprobs)


def test_same_seed_same_sample_other_seed_differs(tiny_model):
    policy = make_backend(tiny_model, PolicyConfig(), SamplingConfig(max_new_tokens=8))
    prompts = _prompts(policy.tokenizer, 3)
    first, again, other = (policy.generate(prompts, seed=s) for s in (5, 5, 6))
    assert first == again
    assert [g.token_ids for g in first] != [g.token_ids for g in other]


def test_responses_end_at_the_first_stop_token(tiny_model):
    base = make_backend(tiny_model, PolicyConfig(), SamplingConfig(max_new_tokens=8))
    # Half the vocabulary as extra stops: every response stops after a few tokens.
    extra = tuple(range(0, len(base.tokenizer), 2))
    policy = make_backend(tiny_model, PolicyConfig(), SamplingConfig(max_new_tokens=8, stop_token_ids=extra))
    stops = set(extra) | set(base.tokenizer.convert_tokens_to_ids([IM_END, PAD_TOKEN]))
    assert set(policy.stop_ids) == stops
    out = policy.generate(_prompts(policy.tokenizer, 4) * 2, seed=0)
    for gen in out:
        if gen.finish_reason == "stop":
            assert gen.token_ids[-1] in stops
        else:
            assert gen.finish_reason == "length" and len(gen.token_ids) == 8
        assert not stops & set(gen.token_ids[:-1])
        assert len(gen.logprobs) == len(gen.token_ids)
    assert sum(g.finish_reason == "stop" for g in out) >= 6  # P(no stop in 8 draws) ~ 2**-8 per prompt


def test_length_limit_without_stop(tiny_model):
    policy = make_backend(tiny_model, PolicyConfig(), SamplingConfig(max_new_tokens=5))
    for gen in policy.generate(_prompts(policy.tokenizer, 3), seed=1):
        stopped = gen.token_ids[-1] in policy.stop_ids
        assert gen.finish_reason == ("stop" if stopped else "length")
        assert stopped or len(gen.token_ids) == 5


def test_prompt_longer_than_context_is_refused(tiny_model):
    policy = make_backend(tiny_model, PolicyConfig(max_model_len=40), SamplingConfig(max_new_tokens=8))
    assert policy.max_model_len == 40
    with pytest.raises(ValueError, match=r"prompt 1 has 33 tokens; it must have 1\.\.32 \(max_model_len 40"):
        policy.generate([[5] * 32, [5] * 33], seed=0)


def test_checkpoint_errors_name_the_path(tiny_model, tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(CheckpointError, match=f"{missing}: policy checkpoint directory not found"):
        make_backend(str(missing), PolicyConfig(), SamplingConfig())
    no_tok = tmp_path / "no_tok"
    shutil.copytree(tiny_model, no_tok,
                    ignore=shutil.ignore_patterns("tokenizer*", "special_tokens*", "chat_template*"))
    with pytest.raises(CheckpointError, match=f"{no_tok}: no tokenizer"):
        make_backend(str(no_tok), PolicyConfig(), SamplingConfig())
    no_template = tmp_path / "no_template"
    shutil.copytree(tiny_model, no_template, ignore=shutil.ignore_patterns("chat_template*"))
    cfg = json.loads((no_template / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (no_template / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=f"{no_template}: the tokenizer has no chat template"):
        make_backend(str(no_template), PolicyConfig(), SamplingConfig())
    with pytest.raises(ValueError, match=r"SamplingConfig.stop_token_ids \[5000\] are outside the vocabulary"):
        make_backend(tiny_model, PolicyConfig(), SamplingConfig(stop_token_ids=(3, 5000)))
    with pytest.raises(ValueError, match="PolicyConfig.backend 'sglang' is not registered"):
        make_backend(tiny_model, PolicyConfig(backend="sglang"), SamplingConfig())


def test_load_policy_reuses_then_replaces(tiny_model, tmp_path):
    other = str(make_tiny_model(tmp_path / "other", seed=1, num_hidden_layers=1))
    cfg, sampling = PolicyConfig(), SamplingConfig(max_new_tokens=4)
    first = load_policy(tiny_model, cfg, sampling)
    assert isinstance(first, HFBackend) and load_policy(tiny_model, cfg, sampling) is first
    second = load_policy(other, cfg, sampling)
    assert second is not first and first.model is None  # the old one was closed
    assert second.model.config.num_hidden_layers == 1
    assert release_policy("sleep") == "sleep" and load_policy(other, cfg, sampling) is second
    release_policy("restart")
    assert second.model is None and load_policy(other, cfg, sampling) is not second
    release_policy("restart")


@pytest.mark.parametrize("field,value,message", [
    ("temperature", 0.0, "SamplingConfig.temperature must be > 0"),
    ("top_p", 1.5, r"SamplingConfig.top_p must be in \(0, 1\]"),
    ("max_new_tokens", 0, "SamplingConfig.max_new_tokens must be >= 1"),
    ("stop_token_ids", (-1,), "SamplingConfig.stop_token_ids must be token ids >= 0"),
])
def test_sampling_config_errors_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        SamplingConfig(**{field: value})


def test_policy_config_errors_name_the_field():
    with pytest.raises(ValueError, match="PolicyConfig.free_between_rounds must be one of"):
        PolicyConfig(free_between_rounds="drop")
    with pytest.raises(ValueError, match="PolicyConfig.dtype must be float32, bfloat16 or float16"):
        PolicyConfig(dtype="int8")


def test_vllm_logprobs_mode_matches_the_convention_or_refuses():
    assert logprobs_mode(SamplingConfig(temperature=1.0, top_p=0.8, top_k=20)) == "raw_logprobs"
    assert logprobs_mode(SamplingConfig(temperature=0.5)) == "processed_logprobs"
    with pytest.raises(ValueError, match="use temperature=1.0 or top_p=1.0 and top_k=0"):
        logprobs_mode(SamplingConfig(temperature=0.5, top_p=0.9))


def test_loading_weights_bar_shows_at_a_process_first_load_only(tiny_model, capsys):
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()  # as in a fresh process
    cfg = PolicyConfig(backend="hf", device="cpu")
    HFBackend(tiny_model, cfg, SamplingConfig())
    assert "Loading weights" in capsys.readouterr().err
    HFBackend(tiny_model, cfg, SamplingConfig())
    assert "Loading weights" not in capsys.readouterr().err
