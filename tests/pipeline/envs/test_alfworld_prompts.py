"""ALFWorld prompts (verl-agent's wording), <action> parsing and the chat template."""
from __future__ import annotations

import pytest

from pipeline.envs.prompts import (
    PROMPT_TEMPLATES,
    PromptConfig,
    build_prompt,
    chat_prompt,
    format_response,
    parse_action,
    register_template,
)

INSTRUCTION = (
    "Now it's your turn to take an action.\n"
    "You should first reason step-by-step about the current situation. This reasoning process MUST be "
    "enclosed within <think> </think> tags. \n"
    "Once you've finished your reasoning, you should choose an admissible action for current step and "
    "present it within <action> </action> tags.\n"
)


def test_first_step_prompt():
    got = build_prompt("put a mug in desk.", "You are in the middle of a room.\n\nYour task is to: put a mug in desk.",
                       ["go to desk 1", "help", "look"])
    assert got == (
        "\nYou are an expert agent operating in the ALFRED Embodied Environment.\n"
        "Your current observation is: You are in the middle of a room.\n\nYour task is to: put a mug in desk.\n"
        "Your admissible actions of the current situation are: ['go to desk 1'\n 'look'].\n\n" + INSTRUCTION
    )


def test_later_prompt_shows_the_last_two_pairs_and_the_step_count():
    history = [("obs A", "go to desk 1"), ("obs\nB", "open drawer 1"), ("obs C", "")]
    got = build_prompt("put a mug in desk.", "You arrive at shelf 1.", ["take mug 1 from shelf 1"], history)
    assert got == (
        "\nYou are an expert agent operating in the ALFRED Embodied Environment. Your task is to: put a mug in desk.\n"
        "Prior to this step, you have already taken 3 step(s). Below are the most recent 2 observations and the "
        "corresponding actions you took: [Observation]: obs B [Action]: open drawer 1\n"
        "[Observation]: obs C [Action]: \n"
        "You are now at step 4 and your current observation is: You arrive at shelf 1.\n"
        "Your admissible actions of the current situation are: ['take mug 1 from shelf 1'].\n\n" + INSTRUCTION
    )


def test_history_length_and_hidden_actions_are_configurable():
    history = [("obs A", "look"), ("obs B", "inventory")]
    one = build_prompt("t.", "now", ["help", "look"], history, PromptConfig(history_length=1, hidden_actions=()))
    assert "most recent 1 observations" in one and "[Observation]: obs A" not in one
    assert "['help'\n 'look']" in one
    none = build_prompt("t.", "now", ["look"], history, PromptConfig(history_length=0))
    assert none == build_prompt("t.", "now", ["look"])


def test_registered_template_is_used(monkeypatch):
    monkeypatch.setitem(PROMPT_TEMPLATES, "terse", ("", ""))  # restored after the test
    register_template("terse", "{current_observation}|{admissible_actions}",
                      "{task_description}|{step_count}|{action_history}|{current_observation}")
    config = PromptConfig(template="terse")
    assert build_prompt("t.", "now", ["a", "b"], config=config) == "now|'a'\n 'b'"
    assert build_prompt("t.", "now", ["a"], [("o", "x")], config) == "t.|1|[Observation]: o [Action]: x|now"


@pytest.mark.parametrize(("reply", "expected"), [
    ("<think>apple is on the table</think>\n<action>take apple 1 from diningtable 1</action>",
     ("take apple 1 from diningtable 1", True)),
    ("<think>x</think><ACTION>  Go To Fridge 1 </ACTION>", ("go to fridge 1", True)),
    ("<think>x</think> go to fridge 1", ("", False)),  # no action tags
    ("<think>x</think><action>go to fridge 1", ("", False)),  # unclosed
    ("<think>x</think></action>go<action>", ("", False)),  # misordered
    ("<action>look</action>", ("look", False)),  # no think block
    ("<think>x</think><action>look</action><action>inventory</action>", ("look", True)),  # first one wins
    ("<think>冰箱</think><action>look</action>", ("look", False)),  # CJK text
])
def test_parse_action(reply, expected):
    assert parse_action(reply) == expected


def test_parse_action_checks_are_configurable():
    lenient = PromptConfig(require_think=False, reject_cjk=False)
    assert parse_action("<action>look</action> 冰箱", lenient) == ("look", True)
    with pytest.raises(ValueError, match="PromptConfig.history_length"):
        PromptConfig(history_length=-1)
    with pytest.raises(ValueError, match="PromptConfig.template must be one of"):
        PromptConfig(template="nope")


@pytest.mark.parametrize("config", [PromptConfig(), PromptConfig(require_think=False)], ids=["think", "no-think"])
@pytest.mark.parametrize("action", ["look", "go to fridge 1", "move apple 2 to countertop 1",
                                    "heat mug 1 with microwave 1"])
def test_format_response_is_the_inverse_of_parse_action(action, config):
    reply = format_response(action, config)
    assert parse_action(reply, config) == (action, True)
    assert reply == ("<think></think>" if config.require_think else "") + f"<action>{action}</action>"
    assert format_response(action, config, thought="the fridge is closed").count("the fridge is closed") \
        == int(config.require_think)


def test_chat_prompt_with_a_real_tokenizer_and_any_template_object():
    from pipeline.models.tiny_model import build_tokenizer

    tok = build_tokenizer()
    assert chat_prompt(tok, "go?") == "<|im_start|>user\ngo?<|im_end|>\n<|im_start|>assistant\n"
    ids = chat_prompt(tok, "go?", tokenize=True)
    assert isinstance(ids, list) and tok.decode(ids) == "<|im_start|>user\ngo?<|im_end|>\n<|im_start|>assistant\n"

    class Recorder:
        def apply_chat_template(self, messages, add_generation_prompt, tokenize):
            return messages, add_generation_prompt, tokenize

    assert chat_prompt(Recorder(), "p", system="s") == (
        [{"role": "system", "content": "s"}, {"role": "user", "content": "p"}], True, False)
