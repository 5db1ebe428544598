"""The special tokens and chat template of the locally built tokenizers (Qwen's, so prompts look as Qwen's do).

Both tokenizers carry them: the tiny model's byte-level BPE (``tiny_model``) and
the ALFWorld word vocabulary (``word_vocab``).
"""
from __future__ import annotations

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [PAD_TOKEN, IM_START, IM_END]
# Tag tokens kept whole and visible in decoded text (not special: never skipped).
TAG_TOKENS = ["<think>", "</think>", "<action>", "</action>"]

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
