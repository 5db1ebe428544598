"""A word-level tokenizer whose vocabulary is ALFWorld's own words: one token per word.

Built from the game engine's text (the ``alfred.twl2`` grammar, ALFRED's object
and receptacle classes, the goal templates), the prompt templates, numbers and
punctuation, so a step is tens of tokens, not hundreds as with bytes. Text is
lower-cased; an unseen word becomes ``<unk>``. Decoding joins words with spaces,
which ``parse_action`` reads back.

>>> tok = build_word_tokenizer()
>>> tok.convert_ids_to_tokens(tok("Go to fridge 1.")["input_ids"])
['go', 'to', 'fridge', '1', '.']
>>> tok.decode(tok("<action>take apple 1 from countertop 2</action>")["input_ids"])
'<action> take apple 1 from countertop 2 </action>'
"""
from __future__ import annotations

import re

from pipeline.models.tokens import CHAT_TEMPLATE, IM_END, PAD_TOKEN, SPECIAL_TOKENS, TAG_TOKENS

UNK_TOKEN = "<unk>"
_WORD = re.compile(r"[a-z]+")
_PUNCTUATION = list(".,:;!?'\"()[]-|/=")


def _engine_words() -> set[str]:
    """Words of ALFWorld's grammar, ALFRED's classes and goal templates."""
    from alfworld.gen import constants, goal_library
    from alfworld.info import ALFRED_TWL2_PATH

    with open(ALFRED_TWL2_PATH) as fh:
        text = fh.read().lower()
    templates = " ".join(t for g in goal_library.gdict.values() for t in g["templates"])
    classes = " ".join(list(constants.OBJECTS) + list(constants.RECEPTACLES) + list(constants.MOVABLE_RECEPTACLES))
    return set(_WORD.findall(text)) | set(_WORD.findall(templates.lower())) | {c.lower() for c in classes.split()}


def _prompt_words() -> set[str]:
    from pipeline.envs.prompts import PROMPT_TEMPLATES

    text = " ".join(t for pair in PROMPT_TEMPLATES.values() for t in pair).lower()
    return set(_WORD.findall(text)) | {"user", "assistant", "system", "think", "action"}


def vocabulary() -> list[str]:
    """The word list, sorted (deterministic): engine and prompt words, numbers 0-99, punctuation."""
    words = _engine_words() | _prompt_words() | {str(i) for i in range(100)}
    return sorted(words) + _PUNCTUATION


def build_word_tokenizer():
    """A ``PreTrainedTokenizerFast`` over ``vocabulary()`` with the tiny model's special tokens and chat template."""
    from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate([*SPECIAL_TOKENS, UNK_TOKEN, *vocabulary()])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK_TOKEN))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Punctuation("isolated"),
                                                 pre_tokenizers.Digits(individual_digits=False)])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAG_TOKENS])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=IM_END, pad_token=PAD_TOKEN,
                                   unk_token=UNK_TOKEN, model_max_length=4096, padding_side="left",
                                   clean_up_tokenization_spaces=False)
    fast.chat_template = CHAT_TEMPLATE
    return fast
