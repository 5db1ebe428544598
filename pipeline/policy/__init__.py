"""Policy backends: sample responses with per-token log-probs from a Hugging Face checkpoint.

``hf`` (transformers, any device) and ``vllm`` (GPU; imported only when chosen)
share one interface; see ``pipeline.policy.base``.

>>> sorted(FREE_MODES)
['none', 'restart', 'sleep']
"""
from pipeline.policy.base import (BACKENDS, FREE_MODES, CheckpointError, Generation, PolicyBackend, PolicyConfig,
                                  SamplingConfig, check_checkpoint, load_policy, load_tokenizer, make_backend,
                                  register_backend, release_policy, stop_token_ids, verify_checkpoint)

__all__ = ["BACKENDS", "FREE_MODES", "CheckpointError", "Generation", "PolicyBackend", "PolicyConfig",
           "SamplingConfig", "check_checkpoint", "load_policy", "load_tokenizer", "make_backend",
           "register_backend", "release_policy", "stop_token_ids", "verify_checkpoint"]
