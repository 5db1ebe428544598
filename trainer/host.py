"""What this machine offers a trainer: a CUDA device, CPU cores for its thread pools, a free TCP port.

>>> thread_count(3), thread_env(2)["OMP_NUM_THREADS"]
(3, '2')
"""
from __future__ import annotations

import os
import socket

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def has_cuda() -> bool:
    """Train on CUDA: a GPU is visible and DeepSpeed's accelerator is not forced elsewhere.

    ``DS_ACCELERATOR=cpu`` (DeepSpeed's own switch) keeps training on CPU even on a GPU host.
    """
    import torch

    return torch.cuda.is_available() and os.environ.get("DS_ACCELERATOR", "cuda") == "cuda"


def host_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def thread_count(configured: int, ranks_on_host: int = 1) -> int:
    """Torch threads of one trainer rank: ``configured``, else the host's cores shared by its ranks.

    Explicit, because a process a Dask task starts inherits the nanny's ``OMP_NUM_THREADS=1``.
    """
    return configured or max(1, host_cores() // ranks_on_host)


def thread_env(threads: int) -> dict[str, str]:
    """Environment variables that size OpenMP/MKL/OpenBLAS pools (read when a library loads)."""
    return {name: str(threads) for name in THREAD_VARS}


def set_threads(threads: int) -> int:
    """Size this process's thread pools to ``threads`` (0: ``thread_count(0)``); returns the count."""
    import torch

    threads = thread_count(threads)
    os.environ.update(thread_env(threads))
    torch.set_num_threads(threads)
    return threads


def free_port() -> int:
    """A TCP port no process of this host listens on now (a torch.distributed rendezvous port)."""
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]
