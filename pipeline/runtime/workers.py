"""What the scheduler knows about its workers, asked directly."""
from __future__ import annotations

from distributed import Client


def live_workers(client: Client) -> dict[str, dict]:
    """The scheduler's workers now (address -> identity), fetched directly.

    Not ``client.scheduler_info()``: it returns a cache that the client's own
    periodic refresh overwrites with an empty worker list every few seconds, so a
    worker could read as gone from the cluster while it was not.
    """
    return client.sync(client.scheduler.identity, n_workers=-1)["workers"]
