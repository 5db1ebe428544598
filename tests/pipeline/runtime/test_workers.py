"""The scheduler's workers: read directly (never the client's racy cache), counted for train ranks, used by collect."""
from __future__ import annotations

import json
import time

import dask
import pytest
from distributed import Client, LocalCluster, Scheduler, SpecCluster, Worker

import storage
from pipeline.config import ConfigError, load
from pipeline.rollout import dispatch
from pipeline.rollout.config import RolloutConfig
from pipeline.rollout.task import BatchResult
from pipeline.rollout.worker import BatchStats
from pipeline.run_config import RunConfig
from pipeline.runtime.workers import able_workers, live_workers, resolve_ranks
from pipeline.stages import collect as collect_stage
from pipeline.stages.setup import check_cluster
from storage.shards import put_atomic

CALLS = 300


def _count_misses(read) -> int:
    # the client refreshes its cached identity (with no workers in it) every millisecond here,
    # as it does every 2 s by default: a read through that cache sees the workers vanish
    with dask.config.set({"distributed.client.scheduler-info-interval": "1ms"}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        expected = set(cluster.scheduler.workers)
        return sum(set(read(client)) != expected for _ in range(CALLS))


def test_live_workers_never_misses_a_worker():
    # (client.scheduler_info(n_workers=-1)["workers"] missed them in 158 of 300 reads here)
    assert _count_misses(live_workers) == 0



@pytest.fixture(scope="module")
def gpu_cluster():
    """In-process workers: three declare a fake GPU resource, one does not."""
    specs = {f"gpu{i}": {"cls": Worker, "options": {"nthreads": 1, "resources": {"GPU": 1}}} for i in range(3)}
    specs["cpu"] = {"cls": Worker, "options": {"nthreads": 1}}
    with SpecCluster(workers=specs, scheduler={"cls": Scheduler, "options": {"dashboard_address": None}}) as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(4)
        yield client


def test_auto_train_ranks_count_the_gpu_workers(gpu_cluster):
    gpus = sorted(a for a, w in live_workers(gpu_cluster).items() if w["resources"])
    assert len(gpus) == 3 and able_workers(gpu_cluster, {"GPU": 1}) == gpus
    assert resolve_ranks(gpu_cluster, "auto", {"GPU": 1}) == 3
    assert resolve_ranks(gpu_cluster, "auto", {}) == 1 and resolve_ranks(gpu_cluster, 2, {"GPU": 1}) == 2
    with pytest.raises(ConfigError, match=r"^cluster.train_ranks=auto: no worker offers "
                                          r"cluster.train_resources=\{'TPU': 1\}; start workers with --resources"):
        resolve_ranks(gpu_cluster, "auto", {"TPU": 1})


def test_batches_the_gpu_workers_cannot_share_are_named_with_working_values(gpu_cluster):
    cfg = load(RunConfig, "configs/alfworld_qwen2.5_1.5b.yaml",
               ["cluster.train_ranks=auto", "trainer.mini_batch_size=256"])
    with pytest.raises(ConfigError) as err:
        check_cluster(gpu_cluster, cfg)
    assert str(err.value) == ("trainer.mini_batch_size=256 is not a multiple of trainer.micro_batch_size x train ranks"
                              " = 8 x 3 (cluster.train_ranks=auto: 3 worker(s) offer {'GPU': 1}); use "
                              "trainer.mini_batch_size=264 or cluster.train_ranks=2")
    assert check_cluster(gpu_cluster, load(RunConfig, "configs/alfworld_qwen2.5_1.5b.yaml",
                                           ["cluster.train_ranks=auto", "trainer.mini_batch_size=264"])) == 3


def _fake_batch(run, round, version, policy, b, groups, config):
    """A rollout task that writes one file per table naming its worker and its groups."""
    from distributed import get_worker

    time.sleep(0.5)
    rels = [f"{table}/batch-{b:06d}" for table in ("steps", "episodes")]
    for rel in rels:
        put_atomic(run.fs, f"{run.stage_dir(round, 'trajectories')}/{rel}",
                   json.dumps([get_worker().address, [g.group_id for g in groups]]).encode())
    infos = [run.describe(round, "trajectories", rel) for rel in rels]
    return BatchResult(b, *infos, BatchStats(episodes=len(groups) * config.group_size, steps=1), 0.5)


def test_collect_spreads_a_round_over_every_gpu_worker(gpu_cluster, tmp_path, monkeypatch):
    monkeypatch.setattr(dispatch, "rollout_batch", _fake_batch)
    monkeypatch.setattr(collect_stage, "verify_checkpoint", lambda path: None)
    run = storage.open_run(str(tmp_path))
    config = RolloutConfig(group_size=2, groups_per_batch=16, resources={"GPU": 1}, progress=False)
    collect_stage.collect(gpu_cluster, run, 0, "policy", [f"/g/task{i}/trial/game.tw-pddl" for i in range(16)], config)
    placed = [json.loads(open(f"{run.stage_dir(0, 'trajectories')}/steps/batch-{b:06d}").read()) for b in range(3)]
    assert [groups for _, groups in placed] == [list(range(0, 6)), list(range(6, 12)), list(range(12, 16))]
    assert sorted(worker for worker, _ in placed) == able_workers(gpu_cluster, {"GPU": 1})  # one task per GPU
