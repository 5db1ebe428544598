"""Rollout benchmark: generated tokens/s of a policy backend and env steps/s of the full rollout loop.

    python -m bench.rollout                                  # HF backend, tiny model, CPU
    python -m bench.rollout --dask-workers 2                 # + a collect on a LocalCluster
    python -m bench.rollout --backend vllm --device cuda --shape qwen2.5-1.5b --dtype bfloat16 \\
        --batch 128 --max-new-tokens 512 --groups 16 --group-size 8 --env-workers 16     # GPU machine

Without ``--model`` it writes a random-init checkpoint (the tiny model, or a
larger Qwen2 shape with the tiny tokenizer: speed does not depend on the
weights; random weights rarely sample a stop token, so responses run to
``--max-new-tokens``, the worst case). Sections:

1. generation: one ``generate`` call on ``--batch`` real first-step ALFWorld
   prompts: generated tokens/s (and per core on CPU);
2. rollout loop: ``play_batch`` in this process, ``--groups x --group-size``
   episodes of generated games on the real engine, ``--env-workers`` env
   processes: env steps/s, generated tokens/s, time split generate / env, and
   the generation calls saved by dropping finished episodes;
3. optional: ``collect`` on a LocalCluster of ``--dask-workers`` workers:
   wall time, steps/s and the overhead over the slowest task.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

SHAPES = {
    "tiny": {},
    # Qwen2.5-1.5B-Instruct's transformer (vocab: the tiny tokenizer's ~1k instead of 152k).
    "qwen2.5-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, max_position_embeddings=32768, tie_word_embeddings=True),
}


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _config(args):
    from pipeline.envs import AlfworldEnvConfig, PoolConfig
    from pipeline.policy import PolicyConfig, SamplingConfig
    from pipeline.rollout import RolloutConfig

    policy = PolicyConfig(backend=args.backend, device=args.device, dtype=args.dtype, max_batch_size=args.batch,
                          gpu_memory_utilization=args.gpu_memory_utilization, free_between_rounds="restart")
    return RolloutConfig(group_size=args.group_size, groups_per_batch=args.groups, policy=policy,
                         sampling=SamplingConfig(max_new_tokens=args.max_new_tokens),
                         env=AlfworldEnvConfig(max_steps=args.max_steps), pool=PoolConfig(workers=args.env_workers),
                         progress=False)


def bench_generation(policy, cfg, games: list[str], batch: int, repeat: int) -> None:
    from pipeline.envs import AlfworldEnv, build_prompt, chat_prompt

    starts = [AlfworldEnv().reset(g) for g in games]
    texts = [chat_prompt(policy.tokenizer, build_prompt(s.task, s.observation, s.admissible_commands))
             for s in starts]
    prompts = [policy.tokenizer(texts[i % len(texts)], add_special_tokens=False)["input_ids"] for i in range(batch)]
    policy.generate(prompts[:2], seed=0)  # warm-up
    rates = []
    for k in range(repeat):
        t = time.perf_counter()
        out = policy.generate(prompts, seed=1 + k)
        rates.append((sum(len(g.token_ids) for g in out), time.perf_counter() - t))
    tokens, wall = sorted(rates, key=lambda r: r[0] / r[1])[len(rates) // 2]  # the median call
    prompt_tokens = sum(len(p) for p in prompts)
    print(f"[generation] {cfg.policy.backend} on {cfg.policy.device}: {batch} prompts of "
          f"{prompt_tokens / batch:.0f} tokens, median of {repeat} calls: {tokens} tokens generated in "
          f"{wall:.2f} s: {tokens / wall:.1f} generated tokens/s ({tokens / wall / _cores():.1f} per core of "
          f"{_cores()}); {(prompt_tokens + tokens) / wall:.1f} tokens/s prompt + generated "
          f"(all calls: {', '.join(f'{n / w:.0f}' for n, w in rates)} generated tokens/s)")


def bench_loop(policy, cfg, games: list[str]) -> None:
    from pipeline.envs import EnvPool
    from pipeline.rollout import make_groups, play_batch

    groups = make_groups([games[i % len(games)] for i in range(cfg.groups_per_batch)])
    with EnvPool(cfg.env, cfg.pool) as pool:
        t = time.perf_counter()
        steps, episodes, stats = play_batch(policy, pool, groups, cfg, round=0, policy_version=0, seed=0)
        wall = time.perf_counter() - t
    padded = episodes["length"].max() * episodes.height  # calls if every episode ran as long as the longest
    print(f"[rollout loop] {stats.episodes} episodes, {stats.steps} steps, {stats.generated_tokens} tokens in "
          f"{wall:.2f} s: {stats.steps / wall:.2f} env steps/s ({stats.steps / wall / _cores():.2f} per core), "
          f"{stats.generated_tokens / wall:.1f} generated tokens/s; time in generate {stats.generate_s:.2f} s "
          f"({100 * stats.generate_s / wall:.0f}%), in env calls {stats.env_s:.2f} s "
          f"({100 * stats.env_s / wall:.0f}%, {stats.steps / max(stats.env_s, 1e-9):.1f} steps/s); "
          f"generation slots used {stats.steps} of {padded} a wait-for-the-slowest batch would use "
          f"({padded / max(stats.steps, 1):.2f}x)")


def bench_collect(path: str, cfg, games: list[str], workers: int, run_dir: str) -> None:
    import dask
    from distributed import Client, LocalCluster

    import storage
    from pipeline.stages.collect import collect

    tasks = [games[i % len(games)] for i in range(cfg.groups_per_batch * workers)]
    with dask.config.set({"distributed.worker.daemon": False}), \
            LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        run = storage.open_run(run_dir)
        t = time.perf_counter()
        manifest = collect(client, run, 0, path, tasks, cfg)
        wall = time.perf_counter() - t
    steps = manifest.rows("steps")
    print(f"[collect] {workers} Dask workers, {len(tasks)} groups: {manifest.rows('episodes')} episodes, "
          f"{steps} steps in {wall:.2f} s (model loads, env pools and commit included): {steps / wall:.2f} "
          f"env steps/s")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backend", default="hf", choices=["hf", "vllm"])
    p.add_argument("--model", help="HF checkpoint directory (default: write a random-init one of --shape)")
    p.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.5, help="vllm (on CPU: share of RAM)")
    p.add_argument("--batch", type=int, default=16, help="prompts in the generation section")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--repeat", type=int, default=5, help="timed generate calls (the median is reported)")
    p.add_argument("--groups", type=int, default=2, help="groups in the rollout loop")
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument("--max-steps", type=int, default=5)
    p.add_argument("--env-workers", type=int, default=2)
    p.add_argument("--dask-workers", type=int, default=0, help="also run collect on a LocalCluster")
    args = p.parse_args(argv)

    from pipeline.envs import generate_games
    from pipeline.models.tiny_model import make_tiny_model
    from pipeline.policy import make_backend

    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as tmp:
        path = args.model or str(make_tiny_model(os.path.join(tmp, "model"), **SHAPES[args.shape]))
        games = generate_games(os.path.join(tmp, "games"), games=4, seed=0, max_receptacles=8)
        cfg = _config(args)
        t = time.perf_counter()
        policy = make_backend(path, cfg.policy, cfg.sampling)
        print(f"[load] {args.backend} backend, {path} ({args.shape}), {time.perf_counter() - t:.2f} s")
        bench_generation(policy, cfg, games, args.batch, args.repeat)
        bench_loop(policy, cfg, games)
        policy.close()
        if args.dask_workers:
            bench_collect(path, cfg, games, args.dask_workers, os.path.join(tmp, "run"))


if __name__ == "__main__":
    main()
