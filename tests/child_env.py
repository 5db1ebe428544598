"""The environment of a child Python process started by a test."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RENDEZVOUS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")  # init_distributed sets them


def child_env(**extra) -> dict:
    """This process's environment without its torch.distributed rendezvous (its 1-rank group holds that
    port), with the project on ``PYTHONPATH``, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in RENDEZVOUS}
    path = [str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]  # keep what the env needs
    env.update(PYTHONPATH=os.pathsep.join(path), **extra)
    return env
