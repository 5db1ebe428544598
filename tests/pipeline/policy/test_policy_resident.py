"""Resident HF engines: a new checkpoint loads in place, bit-identical to a cold engine; a bad update falls back."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from pipeline.models.tiny_model import make_tiny_model
from pipeline.policy import PolicyConfig, SamplingConfig, acquire_policy, make_backend, release_policy
from pipeline.policy.hf import HFBackend
from pipeline.policy.resident import checkpoint_shapes, checked_names

SAMPLING = SamplingConfig(temperature=0.7, top_p=0.9, max_new_tokens=12)
POLICY = PolicyConfig(max_batch_size=2)  # several left-padded batches


@pytest.fixture(autouse=True)
def _fresh_process_policy():
    release_policy("restart")
    yield
    release_policy("restart")


def _export(src: Path | str, dest: Path, **config) -> str:
    """A copy of ``src`` with ``config`` fields written into its config.json (as a trainer's export differs)."""
    shutil.copytree(src, dest)
    cfg = json.loads((dest / "config.json").read_text())
    (dest / "config.json").write_text(json.dumps(cfg | config))
    return str(dest)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> str:
    """Other weights of the tiny model's shape and tokenizer, exported as the trainer does (use_cache false)."""
    base = make_tiny_model(tmp_path_factory.mktemp("seed1") / "m", seed=1)
    return _export(base, tmp_path_factory.mktemp("trained") / "ckpt", use_cache=False, transformers_version="0.0")


def _prompts(tok, n: int = 5) -> list[list[int]]:
    texts = [tok.apply_chat_template([{"role": "user", "content": "go to fridge 1" + " and open it" * i}],
                                     add_generation_prompt=True, tokenize=False) for i in range(n)]
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_an_update_in_place_samples_exactly_as_a_cold_engine(tiny_model, trained):
    policy, how = acquire_policy(tiny_model, POLICY, SAMPLING)
    prompts = _prompts(policy.tokenizer)
    before = policy.generate(prompts, seed=7)
    again, how_again = acquire_policy(trained, POLICY, SAMPLING)
    assert (how, how_again, again is policy) == ("loaded", "updated", True)
    resident = policy.generate(prompts, seed=7)
    cold = make_backend(trained, POLICY, SAMPLING).generate(prompts, seed=7)
    assert resident == cold  # token ids, log-probs (exact floats) and texts
    assert resident != before
    assert acquire_policy(tiny_model, POLICY, SAMPLING) == (policy, "updated")  # and back
    assert policy.generate(prompts, seed=7) == before


def test_resident_false_loads_a_fresh_engine_per_checkpoint_and_setting(tiny_model, trained):
    cold = PolicyConfig(resident=False)
    first, how = acquire_policy(tiny_model, cold, SAMPLING)
    second, how_second = acquire_policy(trained, cold, SAMPLING)
    assert (how, how_second, second is first, first.model) == ("loaded", "loaded", False, None)
    third, how_third = acquire_policy(trained, cold, SamplingConfig(temperature=0.4))
    assert (how_third, third is second, second.model) == ("loaded", False, None)


def test_other_sampling_settings_keep_the_engine_and_sample_as_a_cold_one(tiny_model, trained):
    policy, _ = acquire_policy(tiny_model, POLICY, SAMPLING)
    evaluation = SamplingConfig(temperature=0.4, max_new_tokens=6, seed=3)  # as evaluation and collect alternate
    assert acquire_policy(tiny_model, POLICY, evaluation) == (policy, "kept")
    assert acquire_policy(trained, POLICY, SAMPLING) == (policy, "updated")
    assert acquire_policy(trained, POLICY, evaluation) == (policy, "kept")
    prompts = _prompts(policy.tokenizer)
    assert policy.generate(prompts, seed=1) == make_backend(trained, POLICY, evaluation).generate(prompts, seed=1)


def test_a_new_engine_when_the_architecture_tokenizer_or_settings_change(tiny_model, trained, tmp_path):
    policy, _ = acquire_policy(tiny_model, POLICY, SAMPLING)
    renamed = _export(trained, tmp_path / "renamed", _name_or_path="elsewhere", dtype="bfloat16")
    assert acquire_policy(renamed, POLICY, SAMPLING) == (policy, "updated")  # fields that shape no weight
    assert acquire_policy(renamed, POLICY, SAMPLING) == (policy, "kept")
    deeper = str(make_tiny_model(tmp_path / "deeper", seed=0, num_hidden_layers=3))
    template = _export(trained, tmp_path / "template")
    chat = Path(template) / "chat_template.jinja"
    chat.write_text(chat.read_text() + "{#- another template -#}")
    stops = SamplingConfig(max_new_tokens=3, stop_token_ids=(5,))
    for path, policy_cfg, sampling in [(deeper, POLICY, SAMPLING), (trained, POLICY, SAMPLING),
                                       (trained, PolicyConfig(max_batch_size=3), SAMPLING),
                                       (trained, PolicyConfig(max_batch_size=3), stops),
                                       (template, PolicyConfig(max_batch_size=3), stops)]:
        fresh, how = acquire_policy(path, policy_cfg, sampling)
        assert (how, fresh is policy, policy.model) == ("loaded", False, None), (path, policy_cfg, sampling)
        policy = fresh


@pytest.mark.parametrize("fault, problem", [
    ("drop", "CheckpointError: {trained}: no tensor for ['model.layers.0.mlp.down_proj.weight'] in the "
             "safetensors files"),
    ("perturb", "model.layers.0.self_attn.q_proj.weight differs"),
])
def test_an_update_that_does_not_match_the_checkpoint_warns_and_loads_a_fresh_engine(
        tiny_model, trained, monkeypatch, caplog, fault, problem):
    import safetensors.torch
    import torch

    policy, _ = acquire_policy(tiny_model, POLICY, SAMPLING)
    if fault == "drop":  # the in-place loader misses one tensor
        load_file = safetensors.torch.load_file
        monkeypatch.setattr(safetensors.torch, "load_file", lambda f: {
            k: v for k, v in load_file(f).items() if k != "model.layers.0.mlp.down_proj.weight"})
    else:  # the engine ends up with other values than the checkpoint's
        update = HFBackend.update

        def perturbed(self, path):
            update(self, path)
            with torch.no_grad():
                self.model.model.layers[0].self_attn.q_proj.weight[0, 0] += 1.0
            return True
        monkeypatch.setattr(HFBackend, "update", perturbed)
    with caplog.at_level(logging.WARNING, logger="pipeline.policy.process"):
        fallback, how = acquire_policy(trained, POLICY, SAMPLING)
    assert [r.getMessage() for r in caplog.records] == [
        f"resident policy: {trained}: in-place update failed ({problem.format(trained=trained)}); "
        "loading a fresh engine"]
    assert how == "loaded" and fallback is not policy and policy.model is None
    prompts = _prompts(fallback.tokenizer)
    assert fallback.generate(prompts, seed=3) == make_backend(trained, POLICY, SAMPLING).generate(prompts, seed=3)


def test_the_checked_tensors_are_the_ends_of_the_model(trained):
    shapes = checkpoint_shapes(trained)
    assert list(shapes) == checked_names(list(shapes))
    assert [n for n in shapes if ".layers." not in n] == ["lm_head.weight", "model.embed_tokens.weight",
                                                          "model.norm.weight"]
    assert {n.split(".")[2] for n in shapes if ".layers." in n} == {"0", "1"}
    vocab = json.loads((Path(trained) / "config.json").read_text())["vocab_size"]
    assert shapes["model.embed_tokens.weight"] == [vocab, 64]
