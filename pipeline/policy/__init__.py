"""Policy backends: sample responses with per-token log-probs from a Hugging Face checkpoint.

``hf`` (transformers, any device), ``vllm`` (GPU) and ``expert`` (ALFWorld's own
expert, for demonstrations) share one interface, each imported only when chosen;
see ``pipeline.policy.base``.

>>> sorted(FREE_MODES)
['none', 'restart', 'sleep']
"""
from pipeline.policy.base import (BACKENDS, FREE_MODES, CheckpointError, Generation, PolicyBackend, PolicyConfig,
                                  SamplingConfig, Turn, check_checkpoint, load_tokenizer, make_backend,
                                  register_backend, stop_token_ids, verify_checkpoint)
from pipeline.policy.process import acquire_policy, load_policy, release_policy

__all__ = ["BACKENDS", "FREE_MODES", "CheckpointError", "Generation", "PolicyBackend", "PolicyConfig",
           "SamplingConfig", "Turn", "acquire_policy", "check_checkpoint", "load_policy", "load_tokenizer",
           "make_backend", "register_backend", "release_policy", "stop_token_ids", "verify_checkpoint"]
