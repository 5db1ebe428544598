"""The collect stage: one round's trajectories, played by Dask tasks, committed as the ``trajectories`` stage.

The groups are played in batches on the cluster (``pipeline.rollout.dispatch``),
each task writing its steps and episodes shards; nothing is visible to readers
until every task is done and the stage is committed. A committed round is not
redone.

    manifest = collect(client, run, round=0, policy_path=ckpt, tasks=games, config=RolloutConfig())
"""
from __future__ import annotations

import storage
from pipeline.config import config_hash
from pipeline.policy.base import verify_checkpoint
from pipeline.records import TRAJECTORIES_STAGE
from pipeline.rollout.config import RolloutConfig
from pipeline.rollout.dispatch import check_workers, make_groups, play_batches
from pipeline.rollout.task import release_resources
from storage import Manifest, Run


def collect(client, run: Run | str, round: int, policy_path: str, tasks: list[str], config: RolloutConfig,
            policy_version: int | None = None) -> Manifest:
    """Collect and commit round ``round``'s trajectories; return the stage manifest.

    ``policy_version`` (default ``round``: round r plays round r-1's checkpoint, round 0 the base model) is written
    to every row.
    Returns the existing manifest, doing nothing, when the stage is committed.
    """
    run = run if isinstance(run, Run) else storage.open_run(run)
    if run.is_committed(round, TRAJECTORIES_STAGE):
        return run.manifest(round, TRAJECTORIES_STAGE)
    if not tasks:
        raise ValueError(f"collect round {round}: no tasks given")
    verify_checkpoint(policy_path)
    check_workers(client, config.resources)
    version = round if policy_version is None else int(policy_version)
    run.begin(round, TRAJECTORIES_STAGE)  # drops a crashed attempt's leftovers
    results = play_batches(client, run, round, version, policy_path, make_groups(tasks), config)
    if not any(r.stats.steps for r in results):  # every game failed: an empty round would be committed for good
        errors = [line for r in results for line in r.stats.errors]
        raise RuntimeError(f"collect round {round}: no episode took a step, nothing committed; "
                           f"{len(errors)} error(s), the first: {errors[0] if errors else 'none'}")
    infos = [info for r in results for info in (r.steps, r.episodes)]
    manifest = run.commit(round, TRAJECTORIES_STAGE, infos, config_hash(config), version)
    client.run(release_resources, config.policy.free_between_rounds)
    return manifest
