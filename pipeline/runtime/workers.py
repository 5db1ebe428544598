"""What the scheduler knows about its workers, asked directly, and how many each stage can use.

``train_ranks: auto`` is the number of workers offering ``train_resources``
(e.g. every ``dask cuda worker --resources GPU=1``; 1 without train
resources, as on a CPU LocalCluster), and a round's collect is cut into at
least one task per worker offering the rollout resources (``spread``), so no
GPU idles while another plays every group.
"""
from __future__ import annotations

import math

from distributed import Client

from pipeline.config import ConfigError


def live_workers(client: Client) -> dict[str, dict]:
    """The scheduler's workers now (address -> identity), fetched directly.

    Not ``client.scheduler_info()``: it returns a cache that the client's own
    periodic refresh overwrites with an empty worker list every few seconds, so a
    worker could read as gone from the cluster while it was not.
    """
    return client.sync(client.scheduler.identity, n_workers=-1)["workers"]


def able_workers(client: Client, resources: dict) -> list[str]:
    """Addresses of the live workers offering every resource in ``resources`` (all workers for ``{}``), sorted."""
    return sorted(a for a, w in live_workers(client).items()
                  if all(w.get("resources", {}).get(k, 0) >= v for k, v in resources.items()))


def resolve_ranks(client: Client, ranks: int | str, resources: dict) -> int:
    """``cluster.train_ranks``: a number as it is, ``auto`` as the workers offering ``resources`` (1 for ``{}``)."""
    if ranks != "auto":
        return int(ranks)
    if not resources:
        return 1
    if not (n := len(able_workers(client, resources))):
        raise ConfigError(f"cluster.train_ranks=auto: no worker offers cluster.train_resources={resources}; start "
                          "workers with --resources (e.g. `dask cuda worker --resources GPU=1`)")
    return n


def check_batches(sections: dict[str, tuple[int, int]], ranks: int, how: str = "") -> None:
    """Refuse mini-batches that ``ranks`` ranks cannot share, naming the keys and values that work.

    ``sections``: ``name -> (mini_batch_size, micro_batch_size)``; ``how`` says where ``ranks`` came from.

    >>> check_batches({"trainer": (256, 8)}, 12,
    ...               " (cluster.train_ranks=auto: 12 workers)")  # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    pipeline.config.ConfigError: trainer.mini_batch_size=256 is not a multiple of trainer.micro_batch_size x train
    ranks = 8 x 12 (cluster.train_ranks=auto: 12 workers); use trainer.mini_batch_size=288 or cluster.train_ranks=8
    """
    for name, (mini, micro) in sections.items():
        if mini % (micro * ranks):
            up = math.ceil(mini / (micro * ranks)) * micro * ranks
            fit = max(r for r in range(1, ranks + 1) if mini % (micro * r) == 0)
            raise ConfigError(f"{name}.mini_batch_size={mini} is not a multiple of {name}.micro_batch_size x train "
                              f"ranks = {micro} x {ranks}{how}; use {name}.mini_batch_size={up} or "
                              f"cluster.train_ranks={fit}")


def spread(n_groups: int, groups_per_batch: int, workers: int) -> int:
    """Groups per collect task: at most ``groups_per_batch``, and few enough that every worker gets one.

    >>> spread(16, 16, 8), spread(16, 4, 2), spread(3, 16, 8)
    (2, 4, 1)
    """
    return max(1, min(groups_per_batch, math.ceil(n_groups / max(workers, 1))))
