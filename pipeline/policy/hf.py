"""Hugging Face transformers backend: batched, left-padded ``generate`` with sampling.

Runs on any torch device (the CPU default of tests and the local config).
Per-token log-probs are recorded during decoding by a logits processor that
keeps one step of log-probs at a time, so memory does not grow with
``max_new_tokens x vocab``. The checkpoint's own sampling defaults
(``generation_config.json``: temperature, top_p, repetition_penalty ...) are
ignored: only ``SamplingConfig`` decides.

>>> import tempfile
>>> from pipeline.models.tiny_model import make_tiny_model
>>> from pipeline.policy.base import PolicyConfig, SamplingConfig
>>> policy = HFBackend(str(make_tiny_model(tempfile.mkdtemp())), PolicyConfig(), SamplingConfig(max_new_tokens=4))
>>> out = policy.generate([policy.tokenizer("look")["input_ids"]], seed=0)
>>> len(out[0].token_ids) == len(out[0].logprobs) <= 4
True
"""
from __future__ import annotations

import gc
from dataclasses import asdict

import torch
from transformers import AutoModelForCausalLM, GenerationConfig, LogitsProcessor

from pipeline.policy.base import (
    CheckpointError,
    Generation,
    PolicyBackend,
    PolicyConfig,
    SamplingConfig,
    load_tokenizer,
    register_backend,
    stop_token_ids,
)
from pipeline.policy.resident import engine_digests, weight_files
from trainer.model import bars_once


MAX_PADDING = 0.25  # most left-padding a generate batch may add, as a share of its real prompt tokens


class _LogprobRecorder(LogitsProcessor):
    """Records log_softmax(logits / T) of each sampled token (placed before HF's warpers)."""

    def __init__(self, temperature: float):
        self.temperature, self.prev, self.taken = temperature, None, []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.prev is not None:  # input_ids now ends with the token sampled from self.prev
            self.taken.append(self.prev.gather(1, input_ids[:, -1:]))
        self.prev = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        return scores

    def result(self, sequences: torch.Tensor) -> torch.Tensor:
        self.taken.append(self.prev.gather(1, sequences[:, -1:]))
        return torch.cat(self.taken, dim=1)


def length_batches(lengths: list[int], max_size: int, max_padding: float = MAX_PADDING) -> list[list[int]]:
    """Indices sorted by length, cut into batches of at most ``max_size`` whose left padding stays
    at most ``max_padding`` of their real tokens (one long prompt would otherwise pad the whole batch
    to its length: a collect's 64 prompts of 66-124 tokens and one of 235 ran 3.4 s, 2.6x the real work).

    >>> length_batches([90, 10, 12, 11, 300], max_size=3)
    [[1, 3, 2], [0], [4]]
    """
    batches: list[list[int]] = []
    real = 0
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        n = lengths[i]
        if batches and len(batches[-1]) < max_size and (len(batches[-1]) + 1) * n <= (1 + max_padding) * (real + n):
            batches[-1].append(i)
            real += n
        else:
            batches.append([i])
            real = n
    return batches


@register_backend("hf")
class HFBackend(PolicyBackend):
    """A transformers causal LM on one device."""

    def __init__(self, path: str, policy: PolicyConfig, sampling: SamplingConfig):
        self.path, self.policy, self.sampling = path, policy, sampling
        self.tokenizer = load_tokenizer(path)
        if policy.num_threads:
            torch.set_num_threads(policy.num_threads)
        try:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, policy.dtype))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: cannot load the model weights ({exc})") from exc
        bars_once()
        self.model = model.to(policy.device).eval()
        self.stop_ids = stop_token_ids(self.tokenizer, model.generation_config, sampling.stop_token_ids)
        pad = self.tokenizer.pad_token_id
        self.pad_id = self.stop_ids[0] if pad is None else pad
        # A clean config: nothing of the checkpoint's sampling defaults leaks into generate().
        self.model.generation_config = GenerationConfig(eos_token_id=self.stop_ids, pad_token_id=self.pad_id)
        self.max_model_len = policy.max_model_len or int(model.config.max_position_embeddings)

    def _config(self, max_new_tokens: int) -> GenerationConfig:
        s = self.sampling
        return GenerationConfig(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k,
                                max_new_tokens=max_new_tokens, eos_token_id=self.stop_ids,
                                pad_token_id=self.pad_id, return_dict_in_generate=True, repetition_penalty=1.0)

    def generate(self, prompts: list[list[int]], seed: int) -> list[Generation]:
        """Sample one response per prompt, a batch of similar lengths at a time (``length_batches``)."""
        limit = self.max_model_len - self.sampling.max_new_tokens
        for i, p in enumerate(prompts):
            if not 0 < len(p) <= limit:
                raise ValueError(f"{self.path}: prompt {i} has {len(p)} tokens; it must have 1..{limit} "
                                 f"(max_model_len {self.max_model_len} - max_new_tokens "
                                 f"{self.sampling.max_new_tokens})")
        out: list[Generation | None] = [None] * len(prompts)
        for k, chunk in enumerate(length_batches([len(p) for p in prompts], self.policy.max_batch_size)):
            for i, gen in zip(chunk, self._generate_batch([prompts[i] for i in chunk], seed + k)):
                out[i] = gen
        return out

    @torch.inference_mode()
    def _generate_batch(self, prompts: list[list[int]], seed: int) -> list[Generation]:
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, p in enumerate(prompts):  # left padding
            ids[row, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[row, width - len(p):] = 1
        recorder = _LogprobRecorder(self.sampling.temperature)
        device = torch.device(self.policy.device)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            out = self.model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                      generation_config=self._config(self.sampling.max_new_tokens),
                                      logits_processor=[recorder])
        tokens = out.sequences[:, width:].cpu()
        logprobs = recorder.result(out.sequences).cpu()
        is_stop = torch.isin(tokens, torch.tensor(self.stop_ids))
        stopped = is_stop.any(dim=1)
        lengths = torch.where(stopped, is_stop.int().argmax(dim=1) + 1, tokens.shape[1]).tolist()
        token_rows, lp_rows = tokens.tolist(), logprobs.tolist()
        return [Generation(token_ids=t[:n], logprobs=lp[:n],
                           text=self.tokenizer.decode(t[:n], skip_special_tokens=True),
                           finish_reason="stop" if s else "length")
                for t, lp, n, s in zip(token_rows, lp_rows, lengths, stopped.tolist())]

    @torch.inference_mode()
    def score(self, prompt_ids: list[int], response_ids: list[int]) -> list[float]:
        """Log-probs of ``response_ids`` after ``prompt_ids`` by one unpadded forward pass (the reference
        that sampled log-probs must match)."""
        ids = torch.tensor([list(prompt_ids) + list(response_ids)], device=self.policy.device)
        logits = self.model(ids).logits[0, len(prompt_ids) - 1:-1].float() / self.sampling.temperature
        taken = torch.tensor(response_ids, device=logits.device)[:, None]
        return torch.log_softmax(logits, dim=-1).gather(1, taken)[:, 0].cpu().tolist()

    @staticmethod
    def engine_settings(policy: PolicyConfig, sampling: SamplingConfig) -> tuple:
        return repr(asdict(policy)), sampling.stop_token_ids  # the rest of sampling is read at each generate

    @torch.no_grad()
    def update(self, path: str) -> bool:
        """Copy the checkpoint's safetensors into the model's parameters (``load_state_dict``, file by file)."""
        from safetensors.torch import load_file

        loaded: set[str] = set()
        for file in weight_files(path):
            state = load_file(file)
            if unexpected := self.model.load_state_dict(state, strict=False).unexpected_keys:
                raise CheckpointError(f"{file}: tensors the model does not have: {unexpected[:3]}")
            loaded |= state.keys()
        params = self.model.state_dict()
        filled = {params[n].data_ptr() for n in loaded}  # tied weights share one tensor
        if missing := [n for n, t in params.items() if t.data_ptr() not in filled]:
            raise CheckpointError(f"{path}: no tensor for {missing[:3]} in the safetensors files")
        self.path = path
        return True

    def weight_digests(self, shapes: dict[str, list[int]]) -> list[tuple[str, str, str]]:
        return engine_digests(self.model.state_dict(), shapes)

    def sleep(self) -> None:
        if torch.device(self.policy.device).type != "cpu":
            self.model.to("cpu")
            torch.cuda.empty_cache()

    def wake(self) -> None:
        self.model.to(self.policy.device)

    def close(self) -> None:
        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
