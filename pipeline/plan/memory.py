"""GPU memory of a training rank and of a vLLM engine, from the model's shape and the config: an estimate.

Trainer, per rank (DeepSpeed with a torch AdamW, ``trainer.deepspeed_engine.ds_config``), for P parameters:

- weights: P x 2 bytes in bf16 (``trainer.precision`` bf16, or auto: bf16 on a GPU), P x 4 in fp32;
- gradients: the same bytes per parameter as the weights;
- AdamW state: two fp32 moments (8 bytes) plus, in bf16, the fp32 master weights DeepSpeed keeps (4 bytes);
- ZeRO (``trainer.zero_stage``) divides them by the ranks: stage 1 the AdamW state, 2 also the gradients,
  3 also the weights;
- activations of one micro-batch of b = ``trainer.micro_batch_size`` sequences of s tokens (the sequence
  bound, ``sequence_bound``) and width h, per layer (Korthikanti et al., 2022, "Reducing Activation
  Recomputation in Large Transformer Models", 16-bit): s*b*h*(34 + 5*a*s/h) bytes without recomputation. The
  5*a*s/h term is the a heads' s x s attention scores; the trainer's attention on a GPU (flash-attention 2, or
  causal SDPA per sequence: ``trainer.attention``) never stores them, so it is left out: 34*s*b*h per layer.
  With ``trainer.gradient_checkpointing`` only each layer's input stays (2*s*b*h) and one layer's
  activations are rebuilt at a time in the backward: L*2*s*b*h + 34*s*b*h. fp32 doubles both;
- one chunk of fp32 logits: ``trainer.logit_chunk_tokens`` (0: a micro-batch's response tokens) x vocab x 4;
- the KL reference model (``trainer.kl_coef`` > 0): P x 2 bytes (bf16) or 4, whole on every rank.

The total adds them all, an upper bound there: the reference is loaded for the round's first log-probs and
freed before the updates. Not counted: DeepSpeed's communication buckets, the fp32 copy of the gradients at
the optimizer step, the no-grad log-prob forwards, the CUDA context and allocator fragmentation (a few GiB
on a large model).

vLLM, per GPU: weights P x dtype bytes / tensor_parallel_size; the KV cache takes
``kv_cache_memory_bytes``, else ``gpu_memory_utilization`` x the GPU's memory less the weights (an upper
bound: vLLM also reserves its activation peak and CUDA graphs there); a token of context costs
2 (K and V) x layers x KV heads per GPU x head_dim x dtype bytes.

>>> from pipeline.plan.shape import ModelShape
>>> s = ModelShape(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
...                num_key_value_heads=1, vocab_size=100)
>>> model_states(1000, "bf16", zero_stage=2, ranks=4), model_states(1000, "fp32", zero_stage=0, ranks=4)
((2000, 500, 3000), (4000, 4000, 8000))
>>> activations(s, tokens=10, precision="bf16", checkpointing=False), kv_bytes_per_token(s, 2, 1)
(43520, 256)
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.plan.shape import ModelShape
from pipeline.rollout.config import RolloutConfig
from trainer.config import TrainerConfig

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
LOGIT_BYTES = 4  # the LM head's chunk of logits is cast to fp32


def weight_bytes(precision: str) -> int:
    """Bytes of a weight (and of a gradient) in ``trainer.precision`` on a GPU (auto: bf16)."""
    return 4 if precision == "fp32" else 2


def adam_bytes(precision: str) -> int:
    """AdamW state bytes per parameter: two fp32 moments, and the fp32 master weights of 16-bit training."""
    return 8 + (4 if weight_bytes(precision) == 2 else 0)


def _share(nbytes: int, ranks: int, sharded: bool) -> int:
    return -(-nbytes // ranks) if sharded else nbytes


def model_states(params: int, precision: str, zero_stage: int, ranks: int) -> tuple[int, int, int]:
    """(weights, gradients, AdamW state) bytes on one rank."""
    w = weight_bytes(precision)
    return (_share(params * w, ranks, zero_stage >= 3), _share(params * w, ranks, zero_stage >= 2),
            _share(params * adam_bytes(precision), ranks, zero_stage >= 1))


def activations(shape: ModelShape, tokens: int, precision: str, checkpointing: bool) -> int:
    """Activation bytes of a micro-batch of ``tokens`` = b x s tokens (see the module's formula)."""
    sbh = tokens * shape.hidden_size * weight_bytes(precision) // 2
    layer = 34 * sbh
    return shape.num_hidden_layers * 2 * sbh + layer if checkpointing else shape.num_hidden_layers * layer


@dataclass(frozen=True)
class TrainerMemory:
    """Bytes on one training rank's GPU."""

    weights: int
    gradients: int
    optimizer: int  # AdamW moments (+ fp32 master weights)
    activations: int  # one micro-batch
    logits: int  # one chunk of fp32 logits
    reference: int  # the KL reference model (0 without KL)

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.logits + self.reference


def trainer_memory(shape: ModelShape, cfg: TrainerConfig, ranks: int, seq_len: int, response_len: int) \
        -> TrainerMemory:
    """A rank's memory for ``cfg`` on ``ranks`` ranks, sequences of ``seq_len`` tokens, responses of
    ``response_len``."""
    p, b = shape.params, cfg.micro_batch_size
    chunk = min(cfg.logit_chunk_tokens or b * response_len, b * response_len)
    return TrainerMemory(*model_states(p, cfg.precision, cfg.zero_stage, ranks),
                         activations(shape, b * seq_len, cfg.precision, cfg.gradient_checkpointing),
                         chunk * shape.vocab_size * LOGIT_BYTES,
                         p * weight_bytes(cfg.precision) if cfg.kl_coef > 0 else 0)


def kv_bytes_per_token(shape: ModelShape, value_bytes: int, tensor_parallel: int) -> int:
    """KV cache bytes of one token on one GPU (KV heads are split over the GPUs, replicated past their count)."""
    heads = max(1, shape.num_key_value_heads // tensor_parallel)
    return 2 * shape.num_hidden_layers * heads * shape.head_dim * value_bytes


@dataclass(frozen=True)
class VllmMemory:
    """Bytes of a vLLM engine on one of its GPUs, and what its KV cache holds."""

    weights: int
    kv_cache: int  # the KV cache budget (<= 0: none left)
    kv_bytes_per_token: int
    max_model_len: int  # tokens of one sequence
    utilization: float  # gpu_memory_utilization (vllm_args win over the policy's field)
    kv_cache_memory_bytes: int  # a fixed KV cache size (0: by utilization)

    @property
    def tokens(self) -> int:
        return max(self.kv_cache, 0) // self.kv_bytes_per_token

    @property
    def sequences(self) -> int:
        return self.tokens // self.max_model_len

    @property
    def reserved(self) -> int:
        """What the engine holds of its GPU while awake."""
        return self.weights + max(self.kv_cache, 0)


def vllm_setting(rollout: RolloutConfig, name: str):
    """A ``vllm.LLM`` argument as the backend passes it: ``rollout.policy.vllm_args`` over the policy's field."""
    return rollout.policy.vllm_args.get(name, getattr(rollout.policy, name, None))


def vllm_memory(shape: ModelShape, rollout: RolloutConfig, gpu_memory: int) -> VllmMemory:
    """The engine ``pipeline.policy.vllm`` starts for ``rollout`` on a GPU of ``gpu_memory`` bytes."""
    tp = int(rollout.policy.vllm_args.get("tensor_parallel_size", 1))
    dtype = vllm_setting(rollout, "dtype")
    fp8 = str(rollout.policy.vllm_args.get("kv_cache_dtype", "auto")).startswith("fp8")
    weights = -(-shape.params * DTYPE_BYTES[dtype] // tp)
    per_token = kv_bytes_per_token(shape, 1 if fp8 else DTYPE_BYTES[dtype], tp)
    util = float(vllm_setting(rollout, "gpu_memory_utilization"))
    fixed = int(vllm_setting(rollout, "kv_cache_memory_bytes"))
    budget = fixed or int(util * gpu_memory) - weights
    length = int(vllm_setting(rollout, "max_model_len")) or shape.max_position_embeddings
    return VllmMemory(weights, budget, per_token, length, util, fixed)
