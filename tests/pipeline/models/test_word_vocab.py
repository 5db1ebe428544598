"""The word-level tokenizer: ALFWorld text in one token per word, exact round trips of agent replies."""
from __future__ import annotations

from transformers import PreTrainedTokenizerFast

from pipeline.envs.prompts import PromptConfig, build_prompt, chat_prompt, parse_action
from pipeline.models.tiny_model import IM_END, make_tiny_model
from pipeline.models.word_vocab import UNK_TOKEN, build_word_tokenizer, vocabulary

OBSERVATION = ("-= Welcome to TextWorld, ALFRED! =-\n\nYou are in the middle of a room. Looking quickly around you, "
               "you see a cabinet 2, a countertop 1, a fridge 1, and a sinkbasin 1.\n\nYour task is to: put a "
               "clean mug in coffeemachine.")


def test_engine_text_has_no_unknown_word():
    tok = build_word_tokenizer()
    prompt = chat_prompt(tok, build_prompt("put a clean mug in coffeemachine.", OBSERVATION,
                                           ["go to cabinet 2", "examine countertop 1", "inventory"],
                                           config=PromptConfig(template="compact")))
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    assert tok.convert_tokens_to_ids(UNK_TOKEN) not in ids
    assert len(ids) == 87  # one per word or mark (the byte-level tokenizer needs 127 for this prompt)


def test_reply_round_trips_through_parse_action():
    tok = build_word_tokenizer()
    ids = tok("<action>move mug 1 to coffeemachine 1</action>" + IM_END, add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["<action>", "move", "mug", "1", "to", "coffeemachine", "1",
                                              "</action>", IM_END]
    text = tok.decode(ids, skip_special_tokens=True)
    assert parse_action(text, PromptConfig(require_think=False)) == ("move mug 1 to coffeemachine 1", True)


def test_unseen_word_is_unk_and_vocabulary_is_stable():
    tok = build_word_tokenizer()
    assert tok.convert_ids_to_tokens(tok("zyzzyva apple")["input_ids"]) == [UNK_TOKEN, "apple"]
    assert vocabulary() == vocabulary() and len(tok) == 439


def test_tiny_model_with_word_tokenizer(tmp_path):
    path = make_tiny_model(tmp_path, seed=0, tokenizer="word", hidden_size=64)
    tok = PreTrainedTokenizerFast.from_pretrained(path)
    assert len(tok) == 439 and tok("fridge 1.")["input_ids"] == build_word_tokenizer()("fridge 1.")["input_ids"]
