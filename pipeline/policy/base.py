"""The policy backend interface: token ids in, sampled token ids and their log-probs out.

Backends (``hf``, ``vllm``, ``expert``) register themselves by name; ``pipeline.policy.process``
keeps one loaded backend per process (a Dask worker loads a checkpoint once per
round, not once per task, into the engine it keeps: ``pipeline.policy.resident``).

Log-prob convention (every backend): the log-prob of each sampled token under
``log_softmax(logits / temperature)`` over the full vocabulary, i.e. the policy
at the sampling temperature *before* top-k/top-p truncation (verl's
``old_log_prob``). A trainer recomputing ``log_softmax(model(ids).logits / T)``
gets the same numbers up to float error. (vLLM can only report this when
``temperature == 1`` or when no top-k/top-p truncation is set; its backend
refuses other settings rather than log a different quantity.)

>>> SamplingConfig(temperature=0.7, max_new_tokens=32).top_p
1.0
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from pipeline.envs.prompts import PromptConfig

import storage
from pipeline.validators import above, at_least, choice, in_range, must

FREE_MODES = ("none", "sleep", "restart")


class CheckpointError(ValueError):
    """A policy checkpoint that cannot be loaded; the message names the path."""


@dataclass(frozen=True)
class SamplingConfig:
    """How responses are sampled."""

    temperature: float = 1.0  # softmax temperature; also the temperature of the logged log-probs (> 0)
    top_p: float = 1.0  # nucleus sampling mass in (0, 1]; 1 disables
    top_k: int = 0  # keep the k most likely tokens; 0 disables
    max_new_tokens: int = 512  # response length limit per turn (verl-agent ALFWorld: 512)
    seed: int = 0  # base seed; each generate call mixes in its own seed
    stop_token_ids: tuple[int, ...] = ()  # extra token ids that end a response, besides the checkpoint's eos

    def __post_init__(self) -> None:
        above(self, "temperature", 0)
        in_range(self, "top_p", 0, 1, open_low=True)
        at_least(self, "top_k", 0, " (0 disables)")
        at_least(self, "max_new_tokens", 1)
        must(self, "stop_token_ids", all(isinstance(t, int) and not isinstance(t, bool) and t >= 0
                                         for t in self.stop_token_ids), "token ids >= 0")


@dataclass(frozen=True)
class PolicyConfig:
    """Which backend runs the policy, and how."""

    backend: str = "hf"  # registered backend name: "hf" (transformers), "vllm" (GPU) or "expert" (ALFWorld's expert)
    device: str = "cpu"  # torch device of the hf backend ("cpu", "cuda", "cuda:1")
    dtype: str = "float32"  # weights dtype: float32, bfloat16 or float16
    max_batch_size: int = 64  # hf: prompts per forward batch (bounds activation memory)
    max_model_len: int = 0  # context limit in tokens; 0 takes the checkpoint's max_position_embeddings
    num_threads: int = 0  # hf on CPU: torch intra-op threads per process (0 keeps torch's default)
    gpu_memory_utilization: float = 0.5  # vllm: share of GPU memory for weights + KV cache (on CPU: of host RAM)
    kv_cache_memory_bytes: int = 0  # vllm: KV cache size in bytes, overriding the share (use it on CPU); 0: by share
    free_between_rounds: str = "sleep"  # after a round: "none" keeps it, "sleep" offloads, "restart" frees it
    resident: bool = True  # keep the engine across checkpoints, each loaded in place (false: a new one per checkpoint)
    vllm_args: dict = field(default_factory=dict)  # extra keyword arguments for vllm.LLM
    expert_epsilon: float = 0.0  # expert: share of turns whose env step plays a random shown action (seeded)

    def __post_init__(self) -> None:
        must(self, "dtype", self.dtype in ("float32", "bfloat16", "float16"), "float32, bfloat16 or float16",
             repr(self.dtype))
        at_least(self, "max_batch_size", 1)
        at_least(self, "num_threads", 0, " (0: torch default)")
        at_least(self, "max_model_len", 0)
        at_least(self, "kv_cache_memory_bytes", 0, " (0: sized by gpu_memory_utilization)")
        in_range(self, "gpu_memory_utilization", 0, 1, open_low=True)
        in_range(self, "expert_epsilon", 0, 1)
        choice(self, "free_between_rounds", FREE_MODES)


@dataclass(frozen=True)
class Generation:
    """One sampled response."""

    token_ids: list[int]  # sampled tokens, the stop token included when one was sampled
    logprobs: list[float]  # log-prob of each sampled token (see the module's convention)
    text: str  # token_ids decoded, special tokens skipped
    finish_reason: str  # "stop" (a stop token was sampled) or "length" (max_new_tokens reached)
    played: str | None = None  # the action the env steps with instead of the response's (expert epsilon draws)


@dataclass(frozen=True)
class Turn:
    """What the env shows one episode at this turn (read by backends that act without a model)."""

    admissible: list[str]  # commands the game accepts now
    expert_plan: list[str] | None  # the env expert's next commands (None without an expert)


class PolicyBackend(ABC):
    """A loaded policy: ``generate`` samples one response per prompt; the rollout loop calls ``act``."""

    tokenizer: object  # a transformers tokenizer with the checkpoint's chat template
    max_model_len: int  # prompt + response tokens the model accepts

    @abstractmethod
    def generate(self, prompts: list[list[int]], seed: int) -> list[Generation]:
        """Sample one response per prompt (token ids); same ``seed`` and prompts give the same output."""

    def act(self, prompts: list[list[int]], seed: int, turns: list[Turn], prompt: "PromptConfig") -> list[Generation]:
        """One response per running episode; model backends sample from the prompt alone (``generate``)."""
        return self.generate(prompts, seed)

    def sleep(self) -> None:
        """Free accelerator memory until the next ``wake`` (default: nothing to free)."""

    def wake(self) -> None:
        """Undo ``sleep``."""

    def close(self) -> None:
        """Release everything; the backend is unusable afterwards."""

    @staticmethod
    def engine_settings(policy: PolicyConfig, sampling: SamplingConfig) -> tuple:
        """What the engine is built with; another ``sampling`` of the same settings is set as ``self.sampling``."""
        return repr(asdict(policy)), repr(asdict(sampling))

    def update(self, path: str) -> bool:
        """Load the checkpoint at ``path`` (of this engine's ``resident.model_identity``) in place; False where
        the backend cannot (then a fresh one is loaded)."""
        return False

    def weight_digests(self, shapes: dict[str, list[int]]) -> list[tuple[str, str, str]]:
        """(name, dtype, digest) of the engine's tensors of these checkpoint tensor shapes
        (``resident.engine_digests``)."""
        return []


BACKENDS: dict[str, Callable[[str, PolicyConfig, SamplingConfig], PolicyBackend]] = {}


def register_backend(name: str):
    """Class decorator: make a backend loadable as ``PolicyConfig(backend=name)``."""
    def deco(cls):
        BACKENDS[name] = cls
        return cls
    return deco


def check_checkpoint(path: str) -> str:
    """Return ``path`` if it holds a model config and a tokenizer, else raise ``CheckpointError``."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: policy checkpoint directory not found")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise CheckpointError(f"{path}: no config.json; expected a Hugging Face checkpoint (save_pretrained)")
    if not any(os.path.isfile(os.path.join(path, f)) for f in ("tokenizer.json", "tokenizer_config.json")):
        raise CheckpointError(f"{path}: no tokenizer (tokenizer.json / tokenizer_config.json) in the checkpoint")
    return path


def verify_checkpoint(path: str) -> str:
    """``check_checkpoint``; for a round's committed checkpoint stage, also every file against its manifest.

    Run before a process loads a checkpoint (rollout and evaluation workers, the
    driver before collect): a changed byte raises ``storage.CorruptShard``
    naming the file. A directory without a stage manifest (a base model) is not hashed.
    """
    storage.verify_stage_dir(check_checkpoint(path))
    return path


def make_backend(path: str, policy: PolicyConfig, sampling: SamplingConfig) -> PolicyBackend:
    """Load a fresh backend for the checkpoint at ``path`` (verified first: ``verify_checkpoint``)."""
    return build_backend(verify_checkpoint(path), policy, sampling)


def build_backend(path: str, policy: PolicyConfig, sampling: SamplingConfig) -> PolicyBackend:
    """``make_backend`` for a checkpoint already verified."""
    return backend_class(policy.backend)(path, policy, sampling)


def backend_class(name: str) -> type[PolicyBackend]:
    """The backend registered as ``name`` (a built-in one is imported on first use)."""
    if name not in BACKENDS:
        _import_builtin(name)
    if name not in BACKENDS:
        raise ValueError(f"PolicyConfig.backend {name!r} is not registered; expected one of {sorted(BACKENDS)}")
    return BACKENDS[name]


def _import_builtin(name: str) -> None:
    if name == "hf":
        import pipeline.policy.hf  # noqa: F401
    elif name == "vllm":
        import pipeline.policy.vllm  # noqa: F401
    elif name == "expert":
        import pipeline.policy.expert  # noqa: F401


def load_tokenizer(path: str):
    """The checkpoint's tokenizer, left-padding; ``tokenizer.json`` loads as ``PreTrainedTokenizerFast``.

    (``AutoTokenizer`` would swap in the model family's own pre-tokenizer for
    a locally trained tokenizer.)
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    check_checkpoint(path)
    try:
        if os.path.isfile(os.path.join(path, "tokenizer.json")):
            tok = PreTrainedTokenizerFast.from_pretrained(path)
        else:
            tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot load the tokenizer ({exc})") from exc
    if tok.chat_template is None:
        raise CheckpointError(f"{path}: the tokenizer has no chat template (tokenizer_config.json chat_template)")
    tok.padding_side = "left"
    return tok


def stop_token_ids(tokenizer, generation_config=None, extra: tuple[int, ...] = ()) -> list[int]:
    """Token ids that end a response: the checkpoint's ``eos_token_id``(s), the tokenizer's eos, ``extra``."""
    ids = getattr(generation_config, "eos_token_id", None)
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    outside = [t for t in extra if t >= len(tokenizer)]
    if outside:
        raise ValueError(f"SamplingConfig.stop_token_ids {outside} are outside the vocabulary of "
                         f"{tokenizer.name_or_path} ({len(tokenizer)} tokens)")
    ids += list(extra)
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    if not ids:
        raise CheckpointError(f"{tokenizer.name_or_path}: neither the tokenizer nor generation_config.json "
                              "names an eos token, so responses could never stop")
    return sorted(set(ids))
