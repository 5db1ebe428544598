"""Multi-rank entry points: one call per rank, e.g. one Dask task pinned to each GPU worker.

The caller picks the rendezvous (rank 0's host as ``master_addr``, a free port) and
calls ``train_round_rank`` on every rank with the same arguments but ``rank``.
The ``deepspeed`` launcher instead sets the environment and runs ``python -m trainer``.

Example (a Dask client and two GPU workers ``ws``)::

    futures = [client.submit(train_round_rank, r, 2, "10.0.0.5", 29500, cfg=cfg, policy_path=p,
                             rows=df, out_dir=o, workers=[w], resources={"GPU": 1}, pure=False)
               for r, w in enumerate(ws)]
"""
from __future__ import annotations

from trainer.deepspeed_engine import init_distributed
from trainer.updates import TrainResult, train_round


def train_round_rank(rank: int, world_size: int, master_addr: str, master_port: int, *, local_rank: int = 0,
                     shutdown: bool = True, **train_kwargs) -> TrainResult:
    """Join the ``world_size``-rank group as ``rank`` and run ``train_round(**train_kwargs)``.

    ``local_rank``: the GPU index on this host (0 when each worker sees one GPU).
    ``shutdown``: leave the process group afterwards (barrier, then destroy), so the
    worker process can host another group later.
    """
    init_distributed(rank, world_size, master_addr, master_port, local_rank=local_rank)
    try:
        return train_round(**train_kwargs)
    finally:
        if shutdown:
            shutdown_distributed()


def shutdown_distributed() -> None:
    """Barrier, then destroy the default process group (what the deepspeed launcher expects).

    Goes through ``deepspeed.comm`` so DeepSpeed also drops its cached groups and
    the same process can join a new group for the next round.
    """
    import torch.distributed as dist

    from trainer.deepspeed_engine import import_deepspeed

    if dist.is_initialized():
        dist.barrier()
        import_deepspeed().comm.destroy_process_group()
