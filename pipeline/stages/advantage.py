"""The advantage stage: GiGPO advantages of a round's steps, committed as the ``advantages`` stage.

The advantage job (``pipeline.advantage.dask_job``) reads the round's committed
``steps`` shards and writes one slim ``advantages`` shard (step keys and
advantage columns) and one ``anchor_groups`` shard per partition (from the
workers, through ``storage.write_shard``); the stage writes the
``anchor_stats`` table, then commits the ``advantages`` stage with the
trajectories' policy version. A committed stage is left alone (a rerun is a
no-op); a crashed attempt's leftovers are cleared first.
"""
from __future__ import annotations

import storage
from pipeline.advantage.config import AdvantageConfig
from pipeline.advantage.dask_job import JobResult, run_advantage_job
from pipeline.config import config_hash as pipeline_config_hash
from pipeline.records import ADVANTAGES_STAGE, TRAJECTORIES_STAGE
from pipeline.runtime.keys import key_prefix


class StorageSink:
    """Job sink writing a partition's table into the run directory (pickled to the workers as the run's URI)."""

    PREFIX = {"advantages": "a", "anchor_groups": "g"}  # shard names: a00000, g00000, ...

    def __init__(self, run: storage.Run, round: int) -> None:
        self.run, self.round = run, round

    def __call__(self, name: str, table, index: int, source: str) -> storage.ShardInfo:
        return storage.write_shard(self.run, self.round, name, table, f"{self.PREFIX[name]}{index:05d}")


def advantage(
    client,
    run: storage.Run,
    round: int,
    cfg: AdvantageConfig | None = None,
    *,
    groups_whole: bool | None = None,
    config_hash: str | None = None,
    progress: bool = True,
) -> JobResult | None:
    """Compute and commit round ``round``'s advantages, anchor statistics and anchor groups; None if committed.

    ``client``: a Dask client, or None to compute in this process. ``config_hash`` is recorded in the manifest
    (default: the hash of ``cfg``).

    >>> result = advantage(client, storage.open_run("runs/x"), 0, AdvantageConfig())  # doctest: +SKIP
    """
    cfg = cfg or AdvantageConfig()
    if run.is_committed(round, ADVANTAGES_STAGE):
        return None
    paths = run.shard_paths("steps", round)  # raises StageNotCommitted when the round has no trajectories
    policy_version = run.manifest(round, TRAJECTORIES_STAGE).policy_version
    run.begin(round, ADVANTAGES_STAGE)
    sink = StorageSink(run, round)
    result = run_advantage_job(
        paths, sink, cfg, client=client, groups_whole=groups_whole, progress=progress, filesystem=run.fs,
        key=key_prefix("advantage", run.id, round),
    )
    stats = storage.write_shard(run, round, "anchor_stats", result.anchor_stats, "anchor_stats")
    files = [*result.outputs, *result.group_outputs, stats]
    run.commit(round, ADVANTAGES_STAGE, files, config_hash or pipeline_config_hash(cfg), policy_version)
    return result
