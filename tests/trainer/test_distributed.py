"""Multi-process behaviour: a 2-rank gloo run, and resume after the trainer process is killed."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from tests.child_env import ROOT, child_env
from pipeline.config import from_dict
from trainer.checkpoint import StateMismatchError
from trainer.config import TrainerConfig
from trainer.critic import VALUE_HEAD
from trainer.host import free_port, thread_env
from trainer.updates import train_round

pytestmark = pytest.mark.usefixtures("dist_group")


CRITIC = [None, {"gamma": 0.9, "lam": 0.95}]  # without and with a value head (GAE over each episode's steps)


def _episodes(rows):
    """``rows`` as episodes of 4 steps (a critic's GAE chains them)."""
    import polars as pl

    return rows.with_columns(episode_id=pl.int_range(pl.len()) // 4, step=pl.int_range(pl.len()) % 4)


# ZeRO 0 all-reduces the gradients in the engine's backward (skipped on one rank), ZeRO 2 in its optimizer.
@pytest.mark.parametrize("critic, zero_stage", [(CRITIC[0], 2), (CRITIC[1], 2), (CRITIC[0], 0)])
def test_two_rank_gloo_equals_one_rank_with_twice_the_micro_batch(tiny_model, tmp_path, make_rows, load_weights,
                                                                  critic, zero_stage):
    data = tmp_path / "rows.parquet"
    _episodes(make_rows(16, seed=2)).write_parquet(data)
    common = dict(lr=1e-3, kl_coef=0.01, mini_batch_size=8, ppo_epochs=1, zero_stage=zero_stage, critic=critic)
    port = str(free_port())
    args = [sys.executable, "-m", "trainer", "--policy", str(tiny_model), "--ref", str(tiny_model),
            "--data", str(data), "--out", str(tmp_path / "two"), "--metrics", str(tmp_path / "two.jsonl")]
    args += [f"--set={k}={json.dumps(v)}" for k, v in {**common, "micro_batch_size": 2, "num_threads": 1}.items()]
    procs = [subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=child_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", OMP_NUM_THREADS="1",
                                            MASTER_ADDR="127.0.0.1", MASTER_PORT=port))
             for r in range(2)]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]

    one = train_round(from_dict(TrainerConfig, {"micro_batch_size": 4, **common}), tiny_model, _scan(data),
                      tmp_path / "one", ref_path=tiny_model, progress=False)
    two_metrics = [json.loads(line) for line in (tmp_path / "two.jsonl").read_text().splitlines()]
    assert len(two_metrics) == one.steps == 2
    for a, b in zip(one.metrics, two_metrics):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-6)
        assert (b["tokens"], b["response_tokens"]) == (a["tokens"], a["response_tokens"])
        assert ("vf_loss" in b) == (critic is not None) and b.get("vf_loss") == pytest.approx(a.get("vf_loss"))
    w1, w2, init = load_weights(one.checkpoint), load_weights(tmp_path / "two"), load_weights(tiny_model)
    assert max((w1[k] - init[k]).abs().max().item() for k in init) > 1e-3
    for k in w1:
        assert torch.allclose(w2[k], w1[k], atol=1e-5, rtol=0), k


def _scan(path):
    import polars as pl

    return pl.scan_parquet(path)


CHILD = textwrap.dedent("""
    import json, sys, time
    import polars as pl
    from pipeline.config import from_dict
    from trainer.config import TrainerConfig
    from trainer.updates import train_round

    policy, data, out, state, kill_at, cfg = sys.argv[1:7]
    def on_step(step, total, metrics):
        print(f"step {step}", flush=True)
        if step == int(kill_at):
            time.sleep(600)  # wait here for the parent's SIGKILL
    train_round(from_dict(TrainerConfig, json.loads(cfg)), policy, pl.read_parquet(data), out, ref_path=policy,
                state_dir=state, on_step=on_step, progress=False)
""")


@pytest.mark.parametrize("critic", CRITIC)
def test_resume_after_kill_matches_uninterrupted_run(tiny_model, tmp_path, make_rows, load_weights, critic):
    data = tmp_path / "rows.parquet"
    _episodes(make_rows(12, seed=3)).write_parquet(data)
    cfg = dict(lr=1e-3, kl_coef=0.01, old_logprobs="recompute", mini_batch_size=4, micro_batch_size=2,
               ppo_epochs=2, save_every=1, critic=critic)
    state, kill_at = tmp_path / "state", 2
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    # The child sums as this process does, whatever thread variables the environment holds here (a LocalCluster
    # started in this process leaves MKL_NUM_THREADS=1 in it).
    proc = subprocess.Popen([sys.executable, str(script), str(tiny_model), str(data), str(tmp_path / "killed"),
                             str(state), str(kill_at), json.dumps(cfg)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=child_env(**thread_env(torch.get_num_threads())))
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.strip() == f"step {kill_at}":
            proc.kill()  # SIGKILL: no cleanup, no export
            break
    proc.wait(timeout=60)
    assert proc.returncode == -9, "".join(seen)[-3000:]
    assert (state / "latest").read_text().strip() == f"step{kill_at}"
    assert not (tmp_path / "killed").exists()

    with pytest.raises(StateMismatchError, match="saved for other data, config or world size"):
        train_round(from_dict(TrainerConfig, {**cfg, "lr": 2e-3}), tiny_model, _scan(data), tmp_path / "x",
                    ref_path=tiny_model, state_dir=state, progress=False)
    resumed = train_round(from_dict(TrainerConfig, cfg), tiny_model, _scan(data), tmp_path / "resumed",
                          ref_path=tiny_model, state_dir=state, progress=False)
    straight = train_round(from_dict(TrainerConfig, cfg), tiny_model, _scan(data), tmp_path / "straight",
                           ref_path=tiny_model, state_dir=tmp_path / "state2", progress=False)
    assert (resumed.resumed_from, len(resumed.metrics), straight.steps) == (kill_at, 6 - kill_at, 6)
    for a, b in zip(straight.metrics[kill_at:], resumed.metrics):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-6)
    w_r, w_s = load_weights(resumed.checkpoint), load_weights(straight.checkpoint)
    for k in w_s:
        assert torch.equal(w_r[k], w_s[k]), (k, (w_r[k] - w_s[k]).abs().max().item())
    if critic is not None:  # the value head resumed too
        heads = [torch.load(r.checkpoint / VALUE_HEAD, weights_only=True) for r in (resumed, straight)]
        assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[1])


def test_trainer_process_sizes_its_threads_not_from_an_inherited_omp_setting(tiny_model, tmp_path, make_rows):
    """A Dask nanny starts workers with OMP_NUM_THREADS=1 and a trainer they start inherits it."""
    from trainer.host import host_cores

    data = tmp_path / "rows.parquet"
    make_rows(4).write_parquet(data)
    cmd = [sys.executable, "-m", "trainer", "--policy", str(tiny_model), "--data", str(data), "--out",
           str(tmp_path / "out"), "--set=kl_coef=0", "--set=mini_batch_size=4", "--set=micro_batch_size=4"]
    env = child_env(OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert f"tokens/s per core ({host_cores()} threads)" in res.stdout, res.stdout[-1000:]


@pytest.mark.gpu
def test_gpu_bf16_round_reports_mfu(tiny_model, tmp_path, make_rows):
    """On a GPU (DS_ACCELERATOR left to DeepSpeed): bf16 training, nccl, MFU metric, bf16 export."""
    data = tmp_path / "rows.parquet"
    make_rows(16, seed=5).write_parquet(data)
    env = child_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1",
                    LOCAL_RANK="0")
    env.pop("DS_ACCELERATOR", None)
    res = subprocess.run([sys.executable, "-m", "trainer", "--policy", str(tiny_model), "--ref", str(tiny_model),
                          "--data", str(data), "--out", str(tmp_path / "out"), "--metrics", str(tmp_path / "m.jsonl"),
                          "--set", "mini_batch_size=8", "--set", "micro_batch_size=4", "--set", "zero_stage=2",
                          "--set", "peak_flops=1e15"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    metrics = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and all(0 < m["mfu"] < 1 and m["grad_norm"] > 0 for m in metrics)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["dtype"] == "bfloat16"
