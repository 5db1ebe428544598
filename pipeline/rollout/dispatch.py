"""Playing episode groups on the Dask cluster: one task per batch of groups, gathered with a progress bar.

One task per batch of at most ``groups_per_batch`` groups, and at least one
task per worker that has ``config.resources`` (e.g. ``GPU=1``; any worker on a
LocalCluster), so every GPU plays (``pipeline.runtime.workers.spread``); each
writing one steps and one episodes shard (``pipeline.rollout.task``). A failed
task is retried by Dask and rewrites the same shard names. The collect stage
(``pipeline.stages.collect``) commits what they wrote. The tasks' summed times
(generate, env, getting the policy ready) go to ``RUN/rounds/R/_rollout_seconds.json``
for the round's metrics (``rollout_seconds``).

Worker processes must be non-daemonic (env pools start processes)::

    dask.config.set({"distributed.worker.daemon": False})
    client = Client(LocalCluster(n_workers=2, threads_per_worker=1))
"""
from __future__ import annotations

import json
import time

from tqdm.auto import tqdm

from pipeline.envs.data import task_id
from pipeline.rollout.config import RolloutConfig
from pipeline.rollout.task import DAEMON_ERROR, BatchResult, is_daemon, rollout_batch
from pipeline.rollout.worker import Group
from pipeline.runtime.console import bars_shown
from pipeline.runtime.keys import key_prefix
from pipeline.runtime.workers import able_workers, spread
from storage import Run
from storage.shards import put_atomic

ROLLOUT_SECONDS = "_rollout_seconds.json"


def make_groups(tasks: list[str]) -> list[Group]:
    """Group ``g`` plays ``tasks[g]``: ids depend on the task's position only.

    >>> make_groups(["/d/train/pick_x/trial_1/game.tw-pddl"])[0]
    Group(group_id=0, task_id='pick_x/trial_1', game_file='/d/train/pick_x/trial_1/game.tw-pddl')
    """
    return [Group(g, task_id(path), str(path)) for g, path in enumerate(tasks)]


def check_workers(client, resources: dict) -> None:
    """Fail fast on the driver: daemonic workers, or no worker with the requested resources."""
    if any(client.run(is_daemon).values()):
        raise RuntimeError(DAEMON_ERROR)
    if not resources:
        return
    if not able_workers(client, resources):
        raise RuntimeError(f"RolloutConfig.resources={resources}: no Dask worker offers them, so rollout tasks "
                           "would wait forever; start workers with --resources (e.g. `dask cuda worker "
                           "--resources GPU=1`) or set rollout.resources: {} on CPU")


def play_batches(client, run: Run, round: int, version: int, policy_path: str, groups: list[Group],
                 config: RolloutConfig) -> list[BatchResult]:
    """Play ``groups`` in batches on the cluster, each task writing its shards into ``run``'s round ``round``;
    the batches' results, in batch order."""
    per = spread(len(groups), config.groups_per_batch, len(able_workers(client, config.resources)))
    batches = [groups[i:i + per] for i in range(0, len(groups), per)]
    keys = key_prefix("collect", run.id, round)
    futures = [client.submit(rollout_batch, run, round, version, str(policy_path), b, batch, config,
                             key=f"{keys}-b{b:06d}", retries=config.retries,
                             resources=config.resources or None)
               for b, batch in enumerate(batches)]
    results = _gather(futures, len(groups) * config.group_size, config.progress)
    seconds = {"generate": sum(r.stats.generate_s for r in results), "env": sum(r.stats.env_s for r in results),
               "policy_load": sum(r.stats.policy_load_s for r in results)}
    put_atomic(run.fs, _seconds_path(run, round), json.dumps(seconds).encode())
    return results


def _seconds_path(run: Run, round: int) -> str:
    return f"{run.root}/rounds/{round:06d}/{ROLLOUT_SECONDS}"


def rollout_seconds(run: Run, round: int) -> dict[str, float]:
    """Seconds of round ``round``'s collect inside generate, env calls and getting the policy ready, each summed
    over its rollout tasks ({} when not recorded)."""
    try:
        with run.fs.open_input_stream(_seconds_path(run, round)) as src:
            return json.loads(src.read())
    except FileNotFoundError:
        return {}


def _gather(futures: list, episodes: int, progress: bool | str) -> list[BatchResult]:
    """Wait for every task with a progress bar; cancel the rest when one fails for good."""
    from distributed import as_completed

    results: list[BatchResult] = []
    start = time.perf_counter()
    bar = tqdm(total=episodes, unit="episode", desc="collect", disable=not bars_shown(progress))
    try:
        for fut in as_completed(futures):
            res = fut.result()
            results.append(res)
            elapsed = time.perf_counter() - start
            bar.update(res.stats.episodes)
            bar.set_postfix(steps_s=f"{sum(r.stats.steps for r in results) / elapsed:.1f}")
            for line in res.stats.errors:
                bar.write(f"collect: {line}")
    except BaseException:
        for fut in futures:
            fut.cancel()
        raise
    finally:
        bar.close()
    print(summary(results, time.perf_counter() - start))
    return sorted(results, key=lambda r: r.batch)


def summary(results: list[BatchResult], wall_s: float) -> str:
    """One line of throughput figures: env steps/s and generated tokens/s (wall and per generating worker)."""
    steps = sum(r.stats.steps for r in results)
    tokens = sum(r.stats.generated_tokens for r in results)
    gen_s = sum(r.stats.generate_s for r in results)
    env_s = sum(r.stats.env_s for r in results)
    engines = [r.stats.engine for r in results]
    wall = max(wall_s, 1e-9)
    return (f"collect: {sum(r.stats.episodes for r in results)} episodes, {steps} steps, {tokens} generated tokens "
            f"in {wall_s:.1f} s: {steps / wall:.2f} env steps/s, {tokens / wall:.1f} generated tokens/s "
            f"({tokens / max(gen_s, 1e-9):.1f} tokens/s inside generate, {steps / max(env_s, 1e-9):.1f} "
            f"steps/s inside env calls, summed over tasks); policy: {engines.count('loaded')} fresh engine(s), "
            f"{engines.count('updated')} updated in place, {sum(r.stats.policy_load_s for r in results):.1f} s")
