"""ALFWorld prompts and ``<action>`` parsing, as the paper's trainer (verl-agent) does them.

The first step shows the observation and the admissible actions; later steps
add the task, the step count and the last ``history_length`` (observation,
action) pairs. The model reasons in ``<think></think>`` and answers in
``<action></action>``; a reply without the tags is an invalid action (it
feeds the invalid-action penalty) and is sent to the game as ``""``.

>>> parse_action("<think>the apple is in the fridge</think><action>Go to fridge 1</action>")
('go to fridge 1', True)
>>> parse_action("go to fridge 1")
('', False)
>>> format_response("go to fridge 1")
'<think></think><action>go to fridge 1</action>'
>>> parse_action(format_response("go to fridge 1"))
('go to fridge 1', True)
>>> p = build_prompt("put a apple in fridge.", "You arrive at fridge 1.", ["open fridge 1", "help"],
...                  history=[("obs0", "go to fridge 1")])
>>> "Your task is to: put a apple in fridge." in p, "'help'" in p, "[Observation]: obs0 [Action]: go to fridge 1" in p
(True, False, True)
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

from pipeline.validators import at_least, choice

_INSTRUCTION = (
    "Now it's your turn to take an action.\n"
    "You should first reason step-by-step about the current situation. This reasoning process MUST be "
    "enclosed within <think> </think> tags. \n"
    "Once you've finished your reasoning, you should choose an admissible action for current step and "
    "present it within <action> </action> tags.\n"
)
# Wording of verl-agent's ALFWORLD_TEMPLATE_NO_HIS / ALFWORLD_TEMPLATE (its "observaitons" typo fixed).
_FIRST = (
    "\nYou are an expert agent operating in the ALFRED Embodied Environment.\n"
    "Your current observation is: {current_observation}\n"
    "Your admissible actions of the current situation are: [{admissible_actions}].\n\n" + _INSTRUCTION
)
_LATER = (
    "\nYou are an expert agent operating in the ALFRED Embodied Environment. Your task is to: {task_description}\n"
    "Prior to this step, you have already taken {step_count} step(s). Below are the most recent "
    "{history_length} observations and the corresponding actions you took: {action_history}\n"
    "You are now at step {current_step} and your current observation is: {current_observation}\n"
    "Your admissible actions of the current situation are: [{admissible_actions}].\n\n" + _INSTRUCTION
)

# name -> (template of the first step / no history, template of later steps)
PROMPT_TEMPLATES: dict[str, tuple[str, str]] = {}


def register_template(name: str, first: str, later: str) -> None:
    """Add a prompt template pair; fields as in ``build_prompt``."""
    PROMPT_TEMPLATES[name] = (first, later)


register_template("verl_agent", _FIRST, _LATER)
# For tiny models with a word-level vocabulary: the same fields, a few words of frame (tens of tokens a step).
register_template("compact", "task: {task_description}\nobs: {current_observation}\nactions: {admissible_actions}",
                  "task: {task_description}\nlast: {action_history}\nobs: {current_observation}\n"
                  "actions: {admissible_actions}")
_CJK = re.compile(r"[\u4e00-\u9fff]")


@dataclass(frozen=True)
class PromptConfig:
    """How prompts are written and replies parsed."""

    template: str = "verl_agent"  # key of PROMPT_TEMPLATES
    history_length: int = 2  # past (observation, action) pairs shown; 0 uses the first-step template always
    history_observations: bool = True  # show each past observation with its action (False: past actions only)
    hidden_actions: tuple[str, ...] = ("help",)  # admissible commands left out of the prompt (verl-agent: help)
    require_think: bool = True  # a reply without <think>...</think> is invalid (verl-agent does this)
    reject_cjk: bool = True  # a reply containing CJK characters is invalid (verl-agent does this)
    admissible_only: bool = False  # an action not among the state's admissible commands is invalid (verl-agent: no)

    def __post_init__(self) -> None:
        choice(self, "template", sorted(PROMPT_TEMPLATES))
        at_least(self, "history_length", 0)


def format_history(history: Sequence[tuple[str, str]], observations: bool = True) -> str:
    """``[Observation]: ... [Action]: ...`` lines (``[Action]: ...`` alone without ``observations``), one line each.

    >>> format_history([("You arrive at fridge 1.", "open fridge 1")], observations=False)
    '[Action]: open fridge 1'
    """
    return "\n".join((f"[Observation]: {obs.replace(chr(10), ' ')} " if observations else "")
                     + f"[Action]: {act.replace(chr(10), ' ')}" for obs, act in history)


def build_prompt(task: str, observation: str, admissible: Sequence[str],
                 history: Sequence[tuple[str, str]] = (), config: PromptConfig = PromptConfig()) -> str:
    """The prompt for the next action.

    ``history`` holds every earlier (observation acted on, parsed action) pair of
    the episode, oldest first; its length is the number of steps taken so far.
    """
    first, later = PROMPT_TEMPLATES[config.template]
    actions = "\n ".join(f"'{a}'" for a in admissible if a not in config.hidden_actions)
    if not history or config.history_length == 0:
        return first.format(task_description=task, current_observation=observation, admissible_actions=actions)
    recent = list(history)[-config.history_length:]
    return later.format(task_description=task, step_count=len(history), history_length=len(recent),
                        action_history=format_history(recent, config.history_observations),
                        current_step=len(history) + 1, current_observation=observation,
                        admissible_actions=actions)


def parse_action(reply: str, config: PromptConfig = PromptConfig(),
                 admissible: Sequence[str] | None = None) -> tuple[str, bool]:
    """(action, valid): the lower-cased text of the first ``<action>...</action>``.

    Missing or misordered action tags give ``("", False)``; a missing think block
    (when ``require_think``), CJK text (when ``reject_cjk``) or an action not in
    ``admissible`` (when ``admissible_only`` and the commands are given) keeps the
    action but marks it invalid.

    >>> strict = PromptConfig(require_think=False, admissible_only=True)
    >>> parse_action("<action>take 26 from desk 1</action>", strict, ["look", "go to desk 1"])
    ('take 26 from desk 1', False)
    """
    text = reply.lower()
    start, end = text.find("<action>"), text.find("</action>")
    if start < 0 or end < start:
        return "", False
    action = text[start + len("<action>"):end].strip()
    valid = True
    if config.require_think and (reply.find("<think>") < 0 or reply.find("</think>") < 0):
        valid = False
    if config.reject_cjk and _CJK.search(reply):
        valid = False
    if config.admissible_only and admissible is not None and action not in admissible:
        valid = False
    return action, valid


def format_response(action: str, config: PromptConfig = PromptConfig(), thought: str = "") -> str:
    """A reply in the agent's response format that plays ``action`` (the inverse of ``parse_action``).

    ``<think>{thought}</think><action>{action}</action>`` when ``require_think``, else
    ``<action>{action}</action>``; ``parse_action`` gives back ``(action, True)`` for a
    lower-case, stripped action.

    >>> format_response("open fridge 1", PromptConfig(require_think=False))
    '<action>open fridge 1</action>'
    """
    answer = f"<action>{action}</action>"
    return f"<think>{thought}</think>{answer}" if config.require_think else answer


def chat_prompt(tokenizer: Any, prompt: str, tokenize: bool = False, system: str | None = None):
    """Wrap ``prompt`` as one user turn with the tokenizer's chat template (generation prompt added).

    Works with any object that has Hugging Face's ``apply_chat_template``; with
    ``tokenize`` it returns the token ids (a list, whatever the library version).
    """
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=tokenize)
    return out["input_ids"] if tokenize and hasattr(out, "keys") else out
