"""ALFWorld env benchmark on the real engine: steps/s in one process and in the pool.

    python -m bench.envs --envs 8 --max-steps 25

For small (5 receptacles) and large (23-25 receptacles) generated households:
cold and warm reset latency, steps/s of one in-process env, of the pool with 1
and 2 worker processes (random admissible actions), the pool/one-process
ratio, and the memory each extra env adds to a worker (RSS).
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time

from tqdm import tqdm

from pipeline.envs.alfworld import AlfworldEnv, AlfworldEnvConfig
from pipeline.envs.alfworld_gen import generate_games
from pipeline.envs.pool import EnvPool, PoolConfig

SIZES = {"small": (5, 5), "large": (23, 25)}


def rss_mib(pid: int) -> float:
    """Resident memory of a process (Linux /proc)."""
    with open(f"/proc/{pid}/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kib / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_latency(games: list[str]) -> tuple[float, float]:
    """Median seconds of a first reset (load + translate) and of a repeated reset, fresh env per game."""
    cold, warm = [], []
    for game in games:
        env = AlfworldEnv()
        t = time.perf_counter()
        env.reset(game)
        cold.append(time.perf_counter() - t)
        t = time.perf_counter()
        env.reset(game)
        warm.append(time.perf_counter() - t)
    return statistics.median(cold), statistics.median(warm)


def in_process_rate(games: list[str], envs: int, config: AlfworldEnvConfig) -> tuple[float, float]:
    """(steps/s, steps per CPU-second) of one process stepping ``envs`` episodes in turn (random actions)."""
    rng, steps, busy, cpu = random.Random(0), 0, 0.0, 0.0
    for k in tqdm(range(envs), desc="in-process", leave=False):
        env = AlfworldEnv(config)
        state = env.reset(games[k % len(games)])
        t, c = time.perf_counter(), time.process_time()
        while True:
            state = env.step(rng.choice(state.admissible_commands))
            steps += 1
            if state.done:
                break
        busy += time.perf_counter() - t
        cpu += time.process_time() - c
    return steps / busy, steps / cpu


def pool_rate(games: list[str], envs: int, workers: int, config: AlfworldEnvConfig) -> dict[str, float]:
    """Steps/s, steps per worker CPU-second and worker memory of the pool playing ``envs`` episodes."""
    with EnvPool(config, PoolConfig(workers=workers)) as pool:
        pool.reset(games[:1], group_size=1)
        one = rss_mib(pool.worker_pids()[0])
        starts = pool.reset([games[k % len(games)] for k in range(envs)], group_size=1)
        extra = (rss_mib(pool.worker_pids()[0]) - one) / max(-(-envs // workers) - 1, 1)
        admissible = {i: s.admissible_commands for i, s in enumerate(starts)}
        rng, steps = random.Random(0), 0
        cpu0 = sum(cpu_seconds(p) for p in pool.worker_pids())
        t, c = time.perf_counter(), time.process_time()
        while pool.active:
            out = pool.step({i: rng.choice(admissible[i]) for i in pool.active})
            admissible.update({i: r.admissible_commands for i, r in out.items()})
            steps += len(out)
        wall, host = time.perf_counter() - t, time.process_time() - c
        cpu = sum(cpu_seconds(p) for p in pool.worker_pids()) - cpu0
        return {"rate": steps / wall, "per_cpu": steps / cpu, "host_ms": 1000 * host / steps, "rss": one,
                "extra": extra}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envs", type=int, default=8, help="episodes played per measurement")
    ap.add_argument("--max-steps", type=int, default=25, help="episode length (random play rarely wins)")
    ap.add_argument("--games", type=int, default=4, help="generated games per household size")
    args = ap.parse_args()
    config = AlfworldEnvConfig(max_steps=args.max_steps)
    root = tempfile.mkdtemp(prefix="bench-envs-")
    print(f"cpu cores visible: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}; "
          f"envs={args.envs} max_steps={args.max_steps}")
    for size, (lo, hi) in SIZES.items():
        games = generate_games(os.path.join(root, size), games=args.games, seed=0,
                               min_receptacles=lo, max_receptacles=hi)
        cold, warm = reset_latency(games)
        one, one_cpu = in_process_rate(games, args.envs, config)
        pools = {w: pool_rate(games, args.envs, w, config) for w in (1, 2)}
        print(f"[{size}: {lo}-{hi} receptacles]")
        print(f"  reset latency: first {cold * 1000:.0f} ms, repeated {warm * 1000:.0f} ms (median)")
        print(f"  in-process:  {one:6.1f} steps/s wall, {one_cpu:6.1f} steps per CPU-second "
              f"({1000 / one_cpu:.1f} ms CPU/step)")
        for w, r in pools.items():
            print(f"  pool {w} proc: {r['rate']:6.1f} steps/s wall = {r['rate'] / one:.2f}x in-process; "
                  f"{r['per_cpu']:6.1f} steps per worker CPU-second; host {r['host_ms']:.2f} ms CPU/step")
        print(f"  pool 2 / pool 1 = {pools[2]['rate'] / pools[1]['rate']:.2f}x wall")
        print(f"  memory: worker with 1 env {pools[1]['rss']:.0f} MiB RSS, +{pools[1]['extra']:.1f} MiB per extra env")
    print(f"load average after: {os.getloadavg()[0]:.1f} (the machine is shared: wall rates drop under load, "
          "CPU-second rates do not)")

if __name__ == "__main__":
    main()
