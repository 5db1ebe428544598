"""Models: the tiny Qwen2 model and the ALFWorld word vocabulary built locally; hub models resolved into the cache."""
