"""Models and tokenizers built locally (no hub): the tiny Qwen2 model and the ALFWorld word vocabulary."""
