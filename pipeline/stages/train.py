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

Each optimizer step's metrics (loss, KL, entropy, grad norm, clip fraction,
response length, tokens/s, MFU on GPU) reach the driver's console as the step
ends (``pipeline.runtime.live``), numbered on the run's global step axis.

No trainer outlives what started it: it dies with its Dask worker (a
parent-death signal), and its rank task kills it once the task is cancelled
(the driver died, or stopped the ranks after losing a worker), so no late
commit can race a new driver. A trainer keeps its temporary files in its rank's
own folder (``TMPDIR``), removed once it ends, even killed.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from urllib.parse import urlparse

import yaml

import storage
from pipeline.config import to_dict
from pipeline.run_config import ClusterConfig
from pipeline.runtime.keys import key_prefix
from pipeline.runtime.workers import able_workers, live_workers, resolve_ranks
from pipeline.runtime.lifeline import tied
from pipeline.runtime.live import TOPIC, LiveSteps, forward
from pipeline.runtime.scratch import scratch
from pipeline.stages.record import read_metrics, step_axis
from trainer.checkpoint import TRAIN_STEPS
from trainer.config import TrainerConfig
from trainer.engine import thread_count, thread_env

STAGE = "checkpoint"
POLL_S = 0.5  # how often a rank checks its task is still wanted, and the driver that its workers live
TRAIN_ATTEMPTS = 3  # attempts of a round's training when pinned workers leave the cluster
WORKER_WAIT_S = 120.0  # how long a new attempt waits for enough workers (a killed one restarting)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _workers_for(client, ranks: int, resources: dict, wait_s: float = 0.0) -> list[str]:
    """``ranks`` workers offering ``resources``, waiting up to ``wait_s`` for enough of them."""
    deadline = time.monotonic() + wait_s
    while len(fit := able_workers(client, resources)) < ranks and time.monotonic() < deadline:
        time.sleep(POLL_S)
    if len(fit) < ranks:
        raise RuntimeError(f"cluster.train_ranks={ranks} with train_resources={resources}: only {len(fit)} "
                           "worker(s) qualify; start more workers or lower train_ranks")
    return fit[:ranks]


def _wanted() -> bool:
    """Whether the Dask task running this is still wanted (not once cancelled: its driver died or gave it up)."""
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:
        return True  # not in a Dask task
    ts = worker.state.tasks.get(worker.get_current_task())
    return ts is not None and ts.state == "executing"


def _supervise(cmd: list[str], env: dict, log, emit) -> int | None:
    """Run ``cmd`` tied to this process and killed once this task is cancelled; its exit code (None: killed).

    Its output goes to ``log``, and its step records to ``emit`` as they come.
    """
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=tied())
    reader = threading.Thread(target=forward, args=(proc.stdout, log, emit), name="trainer-output", daemon=True)
    reader.start()
    try:
        while True:
            try:
                return proc.wait(timeout=POLL_S)
            except subprocess.TimeoutExpired:
                if not _wanted():
                    return None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join()
        proc.stdout.close()


def _emitter(round: int, tag: str, offset: int):
    """Send a step record to the driver as a Dask event (a no-op outside a Dask task)."""
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:
        return lambda m: None
    return lambda m: worker.log_event(TOPIC, m | {"round": round, "tag": tag, "global_step": offset + m["step"]})


def _without_nanny_malloc(env) -> dict[str, str]:
    """The environment without the nanny's ``MALLOC_TRIM_THRESHOLD_``.

    Setting it also fixes glibc's mmap threshold, so every tensor above 128 KiB
    is mmapped and freed back at once: the trainer then spends half its time in
    page faults (measured: 2,903 -> 1,490 tokens/s, 3 -> 40 s of system time).
    """
    return {k: v for k, v in env.items() if k != "MALLOC_TRIM_THRESHOLD_"}


def train_rank(run_uri: str, round: int, policy: str, ref: str | None, trainer: dict, rank: int, world: int,
               master: str, port: int, ranks_on_host: int = 1, tag: str = "", offset: int = 0) -> None:
    """One rank: run the trainer process; raise with its log's tail if it fails or is stopped.

    Its step records go to the driver as events tagged ``tag``, at global steps after ``offset``.
    """
    threads = thread_count(trainer["num_threads"], ranks_on_host)
    with scratch(run_uri) as tmp:
        cfg_path, log_path = os.path.join(tmp, "trainer.yaml"), os.path.join(tmp, "log")
        with open(cfg_path, "w") as fh:
            yaml.safe_dump({"trainer": trainer}, fh)
        cmd = [sys.executable, "-m", "trainer", "--run", run_uri, f"--round={round}", "--policy", policy,
               "--config", cfg_path, f"--threads={threads}", "--live"] + (["--ref", ref] if ref else [])
        rendezvous = {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": "0", "MASTER_ADDR": master,
                      "MASTER_PORT": str(port)}
        env = _without_nanny_malloc(os.environ) | thread_env(threads) | rendezvous | {"TMPDIR": tmp}
        with open(log_path, "w") as log:
            code = _supervise(cmd, env, log, _emitter(round, tag, offset))
        if code != 0:
            tail = open(log_path).read()[-3000:]
            how = "was stopped: its task was cancelled" if code is None else f"exited with {code}"
            raise RuntimeError(f"trainer rank {rank} of round {round} {how}:\n{tail}")


def _wait_ranks(client, futures: list, workers: list[str]) -> list[str]:
    """Wait for the rank tasks (raising a rank's error); the pinned workers that left the cluster, if any."""
    from distributed import TimeoutError as WaitTimeout
    from distributed import wait

    while True:
        try:
            wait([f for f in futures if not f.done()], timeout=POLL_S, return_when="FIRST_COMPLETED")
        except WaitTimeout:
            pass
        for f in futures:
            if f.status == "error":
                f.result()  # raises the rank's error (the other ranks may wait for it forever)
        if all(f.done() for f in futures):
            client.gather(futures)  # raises if one was cancelled
            return []
        live = set(live_workers(client))
        if lost := [w for w in workers if w not in live]:
            return lost


def _stop(client, futures: list, timeout_s: float = 60.0) -> None:
    """Cancel the rank tasks and wait until no worker runs one (their trainers are killed)."""
    keys = [f.key for f in futures]
    client.cancel(futures)
    deadline = time.monotonic() + timeout_s
    while any(client.run(_held, keys).values()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"train tasks {keys} still run {timeout_s:.0f} s after they were cancelled")
        time.sleep(POLL_S)


def _held(keys: list, dask_worker=None) -> list:
    return [k for k in keys if k in dask_worker.state.tasks]


def train(client, run: storage.Run, round: int, policy: str, ref: str | None, cfg: TrainerConfig,
          cluster: ClusterConfig) -> None:
    """Train round ``round`` on the cluster (a no-op when its checkpoint is committed).

    A committed checkpoint it starts from is checked against its manifest here
    first (each rank checks again before loading), so a bad file is named
    before any rank starts.

    Each rank is pinned to a worker. A pinned worker that leaves the cluster
    (killed, restarted by its nanny under a new address) would leave its task
    waiting forever: the other ranks are stopped and the round is trained again
    on the live workers (resuming from the trainer's saved state), up to
    ``TRAIN_ATTEMPTS`` times.
    """
    if run.is_committed(round, STAGE):
        return
    storage.verify_stage_dir(policy)
    offset = sum(steps for r, (_, steps) in step_axis(run, read_metrics(run)).items() if r < round)
    ranks = resolve_ranks(client, cluster.train_ranks, cluster.train_resources)  # every attempt: the same world
    for attempt in range(TRAIN_ATTEMPTS):
        if run.is_committed(round, STAGE):
            return
        tag = uuid.uuid4().hex[:8]  # a key of its own: never the cancelled task of a dead driver or attempt
        workers = _workers_for(client, ranks, cluster.train_resources,
                               wait_s=WORKER_WAIT_S if attempt else 0.0)
        hosts = [urlparse(w).hostname for w in workers]
        port = client.run(_free_port, workers=[workers[0]])[workers[0]]
        futures = [client.submit(train_rank, run.uri, round, policy, ref if cfg.kl_coef > 0 else None, to_dict(cfg),
                                 rank, len(workers), hosts[0], port, hosts.count(hosts[rank]), tag, offset, workers=[w],
                                 allow_other_workers=False,
                                 resources=cluster.train_resources or None, pure=False,
                                 key=f"{key_prefix('train', run.id, round, tag)}-rank{rank}")
                   for rank, w in enumerate(workers)]
        with LiveSteps(client, tag):
            lost = _wait_ranks(client, futures, workers)
        if not lost:
            return
        print(f"warning: round {round}: train worker(s) {lost} left the cluster; stopping the other ranks and "
              "training again on the live workers", file=sys.stderr, flush=True)
        _stop(client, futures)
    raise RuntimeError(f"round {round}: train workers left the cluster during {TRAIN_ATTEMPTS} attempts in a row")


def read_train_steps(run: storage.Run, round: int) -> list[dict]:
    """The per-step trainer metrics committed with round ``round``'s checkpoint ([] if none), checked against its
    manifest."""
    manifest = run.manifest(round, STAGE)
    if manifest is None or TRAIN_STEPS not in {f.path for f in manifest.files}:
        return []
    return [json.loads(line) for line in run.read_bytes(round, STAGE, TRAIN_STEPS).decode().splitlines()]
