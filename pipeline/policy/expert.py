"""The ``expert`` backend: ALFWorld's own expert plays, written as the agent's responses (demonstrations).

It loads no model weights. Each turn it plays the env expert's next command
(``expert_plan[0]`` of the episode's last reset/step result; the env needs
``rollout.env.expert``; an empty plan plays ``look``, as ALFWorld's handcoded
expert does when lost), written in the agent's response format
(``format_response``), tokenized with the checkpoint's tokenizer and ended with
its eos token, as a model response that stopped is. Every response token is
logged with log-prob 0.0: the expert's choice is deterministic.

With probability ``policy.expert_epsilon`` (seeded by the rollout seed) the env
is stepped with a uniformly drawn action of those the prompt shows instead
(``Generation.played``; the steps table's ``action`` column records it, and the
next prompt's history shows it). The response stays the expert's choice, so the
demonstrations visit states off the expert's path and label each with the
expert's way back (DAgger-style labels); SFT imitates the responses only.

>>> import tempfile
>>> from pipeline.envs.prompts import PromptConfig
>>> from pipeline.policy.base import PolicyConfig, SamplingConfig, Turn
>>> from pipeline.models.tiny_model import make_tiny_model
>>> expert = ExpertBackend(str(make_tiny_model(tempfile.mkdtemp())), PolicyConfig(backend="expert"), SamplingConfig())
>>> gen = expert.act([[1]], seed=0, turns=[Turn(["look", "go to fridge 1"], ["go to fridge 1"])], prompt=PromptConfig())
>>> gen[0].text, gen[0].finish_reason, set(gen[0].logprobs)
('<think></think><action>go to fridge 1</action>', 'stop', {0.0})
"""
from __future__ import annotations

import json
import os

import numpy as np

from pipeline.envs.prompts import PromptConfig, format_response, parse_action
from pipeline.policy.base import (
    CheckpointError,
    Generation,
    PolicyBackend,
    PolicyConfig,
    SamplingConfig,
    Turn,
    load_tokenizer,
    register_backend,
    stop_token_ids,
)

LOST = "look"  # what the expert plays when its plan is empty


@register_backend("expert")
class ExpertBackend(PolicyBackend):
    """ALFWorld's expert (chosen by ``rollout.env.expert``) in the agent's response format."""

    def __init__(self, path: str, policy: PolicyConfig, sampling: SamplingConfig):
        from transformers import GenerationConfig

        self.path, self.policy, self.sampling = path, policy, sampling
        self.tokenizer = load_tokenizer(path)
        with open(os.path.join(path, "config.json")) as fh:
            model_len = json.load(fh).get("max_position_embeddings")
        self.max_model_len = policy.max_model_len or model_len
        if not self.max_model_len:
            raise CheckpointError(f"{path}: config.json has no max_position_embeddings; set policy.max_model_len")
        gen_cfg = (GenerationConfig.from_pretrained(path)
                   if os.path.isfile(os.path.join(path, "generation_config.json")) else None)
        eos = self.tokenizer.eos_token_id
        self.stop_id = eos if eos is not None else stop_token_ids(self.tokenizer, gen_cfg, sampling.stop_token_ids)[0]

    def generate(self, prompts: list[list[int]], seed: int) -> list[Generation]:
        raise TypeError("the expert backend acts on the env's state (act), not on prompts alone")

    def act(self, prompts: list[list[int]], seed: int, turns: list[Turn], prompt: PromptConfig) -> list[Generation]:
        """The expert's (or an epsilon draw's) response for each running episode."""
        rng = np.random.default_rng(seed)
        eps = self.policy.expert_epsilon
        actions, played = [], []
        for turn in turns:
            if turn.expert_plan is None:
                raise ValueError("the expert backend needs an env expert: set rollout.env.expert to "
                                 "'handcoded' or 'planner'")
            actions.append(turn.expert_plan[0] if turn.expert_plan else LOST)
            shown = [a for a in turn.admissible if a not in prompt.hidden_actions]
            draw = eps and rng.random() < eps and shown
            played.append(shown[int(rng.integers(len(shown)))] if draw else None)
        texts = [format_response(a, prompt) for a in actions]
        ids = [row + [self.stop_id] for row in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        return [self._generation(a, row, prompt, p) for a, row, p in zip(actions, ids, played)]

    def _generation(self, action: str, ids: list[int], prompt: PromptConfig, played: str | None) -> Generation:
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        if parse_action(text, prompt) != (action, True):
            raise ValueError(f"{self.path}: the tokenizer does not give back the expert's response: "
                             f"{action!r} decodes to {text!r}")
        if len(ids) > self.sampling.max_new_tokens:
            raise ValueError(f"the expert's response for {action!r} has {len(ids)} tokens, more than "
                             f"rollout.sampling.max_new_tokens={self.sampling.max_new_tokens}: a policy could "
                             "never answer it; raise max_new_tokens")
        return Generation(token_ids=ids, logprobs=[0.0] * len(ids), text=text, finish_reason="stop",
                          played=None if played == action else played)
