"""The tiny-model factory: loadable, deterministic, Qwen-style chat format."""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from pipeline.models.tiny_model import make_tiny_model
from pipeline.models.tokens import IM_END, IM_START, PAD_TOKEN, TAG_TOKENS

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny"), seed=0)


def _digests(path: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(path.iterdir())}


def test_loads_with_hf_classes(tiny):
    tok = PreTrainedTokenizerFast.from_pretrained(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny)
    cfg = model.config
    assert cfg.model_type == "qwen2"
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (64, 2, 2)
    assert cfg.hidden_size // cfg.num_attention_heads == 32
    assert cfg.vocab_size == len(tok) <= 1024
    assert tok.eos_token == IM_END and tok.pad_token == PAD_TOKEN
    assert cfg.eos_token_id == tok.convert_tokens_to_ids(IM_END)
    assert cfg.pad_token_id == tok.convert_tokens_to_ids(PAD_TOKEN)


def test_chat_template_is_qwen_style(tiny):
    tok = PreTrainedTokenizerFast.from_pretrained(tiny)
    msgs = [{"role": "system", "content": "You are an agent."}, {"role": "user", "content": "go to fridge 1"}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are an agent.<|im_end|>\n"
        "<|im_start|>user\ngo to fridge 1<|im_end|>\n<|im_start|>assistant\n"
    )
    ids = tok(text)["input_ids"]
    assert ids.count(tok.convert_tokens_to_ids(IM_START)) == 3
    assert ids.count(tok.convert_tokens_to_ids(IM_END)) == 2


def test_byte_level_round_trip_and_tags(tiny):
    tok = PreTrainedTokenizerFast.from_pretrained(tiny)
    text = "<think>the mug is cold</think><action>heat mug 1 with microwave 1</action> café ☃"
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text
    for tag in TAG_TOKENS:  # tags are single tokens that survive skip_special_tokens
        assert len(tok(tag)["input_ids"]) == 1
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.convert_ids_to_tokens(tok("take apple 1 from countertop 2")["input_ids"]) == [
        "take", "Ġapple", "Ġ1", "Ġfrom", "Ġcountertop", "Ġ2"
    ]


def test_deterministic_per_seed(tiny, tmp_path):
    same = make_tiny_model(tmp_path / "same", seed=0)
    other = make_tiny_model(tmp_path / "other", seed=1)
    assert _digests(same) == _digests(tiny)
    a, b = _digests(tiny), _digests(other)
    assert a["tokenizer.json"] == b["tokenizer.json"]
    assert a["model.safetensors"] != b["model.safetensors"]


def test_forward_and_generate(tiny):
    tok = PreTrainedTokenizerFast.from_pretrained(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny)
    enc = tok.apply_chat_template([{"role": "user", "content": "look"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    torch.manual_seed(0)
    out = model.generate(**enc, max_new_tokens=4, do_sample=True, pad_token_id=tok.pad_token_id)
    assert out.shape[1] <= enc["input_ids"].shape[1] + 4
    assert int(out.max()) < len(tok)
    logits = model(**enc).logits
    assert logits.shape == (1, enc["input_ids"].shape[1], len(tok))


def test_shape_overrides_and_bad_shape(tmp_path):
    p = make_tiny_model(tmp_path / "wide", hidden_size=128, num_attention_heads=4, num_hidden_layers=1)
    cfg = AutoModelForCausalLM.from_pretrained(p).config
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.num_hidden_layers) == (128, 4, 1)
    with pytest.raises(ValueError, match="head_dim >= 32"):
        make_tiny_model(tmp_path / "bad", hidden_size=64, num_attention_heads=4)
    with pytest.raises(ValueError, match="unknown shape field"):
        make_tiny_model(tmp_path / "bad2", hidden_sise=64)


def test_cli_writes_model(tmp_path):
    out = tmp_path / "cli"
    res = subprocess.run([sys.executable, "-m", "pipeline.models.tiny_model", str(out), "--seed", "0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert (out / "model.safetensors").exists() and (out / "chat_template.jinja").exists()
