"""The train stage on the Dask cluster: one ``python -m trainer`` process per rank.

Each rank is a Dask task pinned to its own worker (with ``train_resources``,
e.g. ``GPU=1``); it starts the trainer as a child process with the
torch.distributed rendezvous set from the worker list (rank 0's host is
``MASTER_ADDR``), so every round trains in fresh processes that free their
memory when done. The trainer commits the round's ``checkpoint`` stage itself
(rank 0) and keeps DeepSpeed state for resume until then. Each rank's torch
threads are sized explicitly (``trainer.num_threads``, else the host's cores
shared by the ranks on it): a process a Dask task starts would otherwise inherit
the nanny's ``OMP_NUM_THREADS=1``.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from urllib.parse import urlparse

import storage
import yaml
from pipeline.config import to_dict
from pipeline.run_config import ClusterConfig
from trainer.config import TrainerConfig
from trainer.checkpoint import TRAIN_STEPS
from trainer.engine import thread_count, thread_env

STAGE = "checkpoint"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _workers_for(client, ranks: int, resources: dict) -> list[str]:
    info = client.scheduler_info(n_workers=-1)["workers"]
    fit = sorted(a for a, w in info.items() if all(w.get("resources", {}).get(k, 0) >= v for k, v in resources.items()))
    if len(fit) < ranks:
        raise RuntimeError(f"cluster.train_ranks={ranks} with train_resources={resources}: only {len(fit)} "
                           "worker(s) qualify; start more workers or lower train_ranks")
    return fit[:ranks]


def train_rank(run_uri: str, round: int, policy: str, ref: str | None, trainer: dict, rank: int, world: int,
               master: str, port: int, ranks_on_host: int = 1) -> None:
    """One rank: run the trainer process; raise with its log's tail if it fails."""
    threads = thread_count(trainer["num_threads"], ranks_on_host)
    with tempfile.TemporaryDirectory(prefix="gigpo-train-") as tmp:
        cfg_path, log_path = os.path.join(tmp, "trainer.yaml"), os.path.join(tmp, "log")
        with open(cfg_path, "w") as fh:
            yaml.safe_dump({"trainer": trainer}, fh)
        cmd = [sys.executable, "-m", "trainer", "--run", run_uri, f"--round={round}", "--policy", policy,
               "--config", cfg_path, f"--threads={threads}"] + (["--ref", ref] if ref else [])
        env = os.environ | thread_env(threads) | {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": "0",
                                                  "MASTER_ADDR": master, "MASTER_PORT": str(port)}
        with open(log_path, "w") as log:
            code = subprocess.call(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        if code != 0:
            tail = open(log_path).read()[-3000:]
            raise RuntimeError(f"trainer rank {rank} of round {round} exited with {code}:\n{tail}")


def train(client, run: storage.Run, round: int, policy: str, ref: str | None, cfg: TrainerConfig,
          cluster: ClusterConfig) -> None:
    """Train round ``round`` on the cluster (a no-op when its checkpoint is committed).

    A committed checkpoint it starts from is checked against its manifest here
    first (each rank checks again before loading), so a bad file is named
    before any rank starts.
    """
    if run.is_committed(round, STAGE):
        return
    storage.verify_stage_dir(policy)
    workers = _workers_for(client, cluster.train_ranks, cluster.train_resources)
    hosts = [urlparse(w).hostname for w in workers]
    port = client.submit(_free_port, workers=[workers[0]], pure=False).result()
    futures = [client.submit(train_rank, run.uri, round, policy, ref if cfg.kl_coef > 0 else None, to_dict(cfg),
                             rank, len(workers), hosts[0], port, hosts.count(hosts[rank]), workers=[w],
                             allow_other_workers=False,
                             resources=cluster.train_resources or None, pure=False, key=f"train-r{round}-rank{rank}")
               for rank, w in enumerate(workers)]
    client.gather(futures)


def read_train_steps(run: storage.Run, round: int) -> list[dict]:
    """The per-step trainer metrics committed with round ``round``'s checkpoint ([] if none), checked against its manifest."""
    manifest = run.manifest(round, STAGE)
    if manifest is None or TRAIN_STEPS not in {f.path for f in manifest.files}:
        return []
    return [json.loads(line) for line in run.read_bytes(round, STAGE, TRAIN_STEPS).decode().splitlines()]
