"""``python -m pipeline.plan``: figures checked against hand-computed integers, the refusals, and its cost."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import load
from pipeline.plan.build import make_plan
from pipeline.plan.layout import Cluster
from pipeline.plan.memory import TrainerMemory
from pipeline.plan.shape import from_config_json, model_shape
from pipeline.run_config import RunConfig
from tests.child_env import ROOT, child_env

GiB = 2**30
QWEN_1_5B = ROOT / "configs" / "models" / "qwen2.5-1.5b-instruct.json"
PAPER = ROOT / "configs" / "alfworld_qwen2.5_1.5b.yaml"

# A small Qwen2 shape: head_dim 256 / 4 = 64, KV width 2 x 64 = 128.
SMALL = dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_size=256, intermediate_size=512,
             num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, vocab_size=1000,
             max_position_embeddings=1024, tie_word_embeddings=False, torch_dtype="bfloat16")
LAYER = ((256 * 256 + 256)  # q_proj with bias
         + 2 * (256 * 128 + 128)  # k_proj, v_proj with biases
         + 256 * 256  # o_proj, no bias
         + 3 * 256 * 512  # gate, up, down
         + 2 * 256)  # input and post-attention RMSNorm
P = 1000 * 256 + 3 * LAYER + 256 + 1000 * 256  # embedding, layers, final norm, untied LM head
assert (LAYER, P) == (590_848, 2_284_800)

# trainer.* of the small plans: 4 ranks x 2 rows x 1 accumulation step, sequences of 512, responses of 64.
TRAIN = ["cluster.train_ranks=4", "trainer.mini_batch_size=8", "trainer.micro_batch_size=2",
         "trainer.max_seq_len=512", "trainer.logit_chunk_tokens=128", "trainer.precision=bf16",
         "rollout.sampling.max_new_tokens=64", "rollout.group_size=2"]
SBH = 512 * 2 * 256  # s x b x h of a micro-batch
LOGITS = 128 * 1000 * 4  # one chunk of 128 response tokens (<= 2 rows x 64) of fp32 logits
REF = 2 * P  # the KL reference in bf16


@pytest.fixture
def small(tmp_path) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(SMALL))
    return path


def plan_of(model: Path, *overrides: str, workers: int = 4, gpu_memory: int = 80 * GiB):
    cfg = load(RunConfig, None, list(overrides))
    return make_plan(cfg, from_config_json(str(model)), str(model), Cluster(workers, 1, gpu_memory))


def test_parameters_of_a_small_qwen2_and_of_qwen2_5_1_5b(small):
    assert from_config_json(str(small)).params == 2_284_800
    tied = json.loads(QWEN_1_5B.read_text())
    assert from_config_json(str(QWEN_1_5B)).params == 1_543_714_304  # the published 1.54 B
    tied["tie_word_embeddings"] = False
    small.write_text(json.dumps(tied))
    assert from_config_json(str(small)).params == 1_543_714_304 + 151936 * 1536


@pytest.mark.timeout(120)
def test_the_parameter_count_is_the_one_transformers_builds(small):
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, Qwen2Config

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(Qwen2Config(**{k: v for k, v in SMALL.items()
                                                                if k not in ("architectures", "torch_dtype")}))
    assert sum(p.numel() for p in model.parameters()) == P


@pytest.mark.parametrize("stage, states", [
    (0, (2 * P, 2 * P, 12 * P)),
    (1, (2 * P, 2 * P, 12 * P // 4)),  # AdamW moments and fp32 master weights sharded over 4 ranks
    (2, (2 * P, 2 * P // 4, 12 * P // 4)),  # ... and the gradients
    (3, (2 * P // 4, 2 * P // 4, 12 * P // 4)),  # ... and the weights
])
def test_zero_stages_shard_optimizer_state_then_gradients_then_weights(small, stage, states):
    p = plan_of(small, *TRAIN, f"trainer.zero_stage={stage}", "trainer.gradient_checkpointing=true")
    activations = 3 * 2 * SBH + 34 * SBH  # each layer's input, plus one layer rebuilt in the backward
    assert p.trainer == TrainerMemory(*states, activations, LOGITS, REF)
    assert p.trainer.total == sum(states) + activations + LOGITS + REF


def test_fp32_without_checkpointing_and_without_kl(small):
    p = plan_of(small, *TRAIN, "trainer.precision=fp32", "trainer.kl_coef=0", "trainer.reference=none")
    assert p.trainer == TrainerMemory(4 * P, 4 * P, 8 * P, 3 * 34 * SBH * 2, LOGITS, 0)


def test_batches_tasks_and_ranks(small):
    p = plan_of(small, *TRAIN, "tasks_per_round=6", "rollout.groups_per_batch=4", "rollout.env.max_steps=50",
                "trainer.ppo_epochs=2")
    assert (p.rollout_workers, p.collect.per_task, p.collect.count, p.collect.episodes_per_task) == (4, 2, 3, 4)
    assert (p.ranks, p.batches.grad_accum, p.batches.rows) == (4, 1, (12, 600))
    assert p.batches.optimizer_steps == (2 * 2, 2 * 75)  # ppo_epochs x ceil(rows / 8)
    assert (p.seq_len, p.response_len) == (512, 64)


def test_vllm_weights_and_kv_cache(small):
    p = plan_of(small, *TRAIN, "rollout.policy.backend=vllm", "rollout.policy.dtype=bfloat16",
                "rollout.policy.gpu_memory_utilization=0.5", gpu_memory=GiB)
    v = p.vllm
    per_token = 2 * 3 * 2 * 64 * 2  # K and V x layers x KV heads x head_dim x bf16
    assert (v.weights, v.kv_bytes_per_token, v.kv_cache) == (2 * P, per_token, GiB // 2 - 2 * P)
    assert (v.tokens, v.max_model_len, v.sequences) == (346_550, 1024, 338)


def test_a_round_writes_the_export_and_every_state_save(small):
    p = plan_of(small, *TRAIN, "trainer.zero_stage=2", "trainer.save_every=4", "tasks_per_round=4",
                "rollout.env.max_steps=50", "evaluation.tasks=2")
    f = p.traffic
    rows = 4 * 2 * 50
    row = 4 * 512 + 4 * 64 + 56  # int32 tokens, float32 log-probs, the advantages' fixed-width columns
    assert p.batches.optimizer_steps == (1, 50)
    assert (f.checkpoint, f.state, f.saves, f.rows) == (2 * P, 14 * P, (1, 13), rows * row)  # 12 saves + the end
    assert f.written == 2 * P + 13 * 14 * P + rows * row
    # policy by 4 collect and 2 evaluate workers, policy and reference by 4 ranks; the state: each rank its weights
    assert f.read == 2 * P * (4 + 2 + 4 * 2) + (4 * 2 * P + 12 * P) + 4 * rows * row


def run_plan(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.plan", *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env=env or child_env())


@pytest.mark.timeout(180)
def test_refusals_name_the_keys_to_change(small):
    out = run_plan("--model-config", str(small), "--workers", "3", "--gpu-memory", "40MiB", *TRAIN[1:],
                   "trainer.zero_stage=1", "trainer.gradient_checkpointing=false", "rollout.policy.backend=vllm",
                   "rollout.policy.dtype=bfloat16", "rollout.policy.gpu_memory_utilization=0.1",
                   "cluster.train_resources={GPU: 1}")
    total = 2 * P + 2 * P + 12 * P // 3 + 3 * 34 * SBH + LOGITS + REF  # 3 ranks
    assert total == 50_098_688  # 47.78 MiB
    assert out.returncode == 2, out.stderr
    assert out.stderr.splitlines() == [
        "cannot run: trainer.mini_batch_size=8 is not a multiple of trainer.micro_batch_size x train ranks = 2 x 3 "
        "(cluster.train_ranks=auto: 3 worker(s) offer {'GPU': 1}); use trainer.mini_batch_size=12 or "
        "cluster.train_ranks=2",
        "cannot run: trainer: 47.78 MiB per GPU is more than the 40.00 MiB of a GPU; raise trainer.zero_stage "
        "(now 1), set trainer.gradient_checkpointing=true or lower trainer.micro_batch_size (now 2)",
        "cannot run: vLLM: its weights (4.36 MiB) fill rollout.policy.gpu_memory_utilization=0.1 of a GPU "
        "(4.00 MiB), leaving no KV cache; raise rollout.policy.gpu_memory_utilization or "
        "rollout.policy.vllm_args.tensor_parallel_size"]
    assert "plan of the default config on 3 worker(s) x 1 GPU(s) of 40.00 MiB" in out.stdout


@pytest.mark.timeout(180)
def test_the_paper_config_fits_8_gpus_and_the_cli_imports_no_torch():
    code = ("import sys, time; t = time.perf_counter(); from pipeline.plan import main; "
            f"rc = main(['--config', {str(PAPER)!r}, '--workers', '8', '--model-config', {str(QWEN_1_5B)!r}]); "
            "print(rc, time.perf_counter() - t, [m for m in ('torch', 'vllm', 'deepspeed', 'transformers') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env=child_env())
    assert out.returncode == 0, out.stderr
    rc, _, loaded = out.stdout.splitlines()[-1].split(" ", 2)
    assert (rc, loaded, out.stderr) == ("0", "[]", "")
    assert "  total             11.19 GiB  14.0% of 80.00 GiB" in out.stdout


def test_the_driver_prints_the_plan_and_starts_nothing(tmp_path):
    out = subprocess.run([sys.executable, "pipeline/round.py", "--config", str(PAPER), "--plan", "--plan-workers", "16",
                          "--plan-gpu-memory", "141GiB", "--plan-model-config", str(QWEN_1_5B),
                          f"run_dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env=child_env())
    assert (out.returncode, out.stderr) == (0, "")
    assert "  total              9.94 GiB  7.0% of 141.00 GiB" in out.stdout
    assert not (tmp_path / "run").exists()


def hub_cache(root: Path, repo: str, config: dict) -> None:
    """A Hugging Face cache holding ``repo``'s config.json at ``main`` (the layout huggingface_hub writes)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    base = root / "hub" / f"models--{repo.replace('/', '--')}"
    (base / "snapshots" / commit).mkdir(parents=True)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(commit)
    (base / "snapshots" / commit / "config.json").write_text(json.dumps(config))


@pytest.mark.timeout(180)
def test_a_hub_base_model_is_read_from_the_cache_only(tmp_path):
    hub_cache(tmp_path, "acme/small-qwen", SMALL)
    env = child_env(HF_HOME=str(tmp_path), HF_HUB_OFFLINE="0")
    cached = run_plan("--workers", "4", "base_model=acme/small-qwen", *TRAIN, env=env)
    assert cached.returncode == 0, cached.stderr
    assert "model: 2,284,800 parameters (2.28 M) from " in cached.stdout
    missing = run_plan("base_model=acme/absent", env=env)
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: base_model: acme/absent (revision main): not in the local Hugging "
                                     "Face cache")
    assert missing.stderr.rstrip().endswith("or pass --model-config CONFIG_JSON")


def test_the_tiny_model_shape_follows_tiny_model():
    cfg = load(RunConfig, None, ["tiny_model.hidden_size=128", "tiny_model.num_attention_heads=4"])
    shape, source = model_shape(cfg)
    assert (shape.hidden_size, shape.head_dim, shape.num_hidden_layers, shape.vocab_size, source) == \
        (128, 32, 2, 1024, "tiny_model")
