"""Anchor-quality measurement on the real ALFWorld engine: how often each anchor strategy pools different true
states, and how many true-state revisits it leaves uncompared.

    python -m bench.anchors --games 4 --group-size 4 --max-steps 25 --random 0.3 --invalid 0.1

Episodes on generated households follow the planner expert (it replans from
the current state), except that each step takes a random admissible command
with probability ``--random`` and an inadmissible one (the game answers
"Nothing happens.") with probability ``--invalid``: a stand-in for a policy
that is neither perfect nor random. Every episode of a group plays one game.
The steps, with ALFWorld's true state (``state_key``) and the admissible
commands' key, go through ``compute_advantages`` under each anchor strategy;
the Markdown table pools ``anchor_stats``/``anchor_groups`` over the groups
(``pooled_purity``, as the round's metrics do). ``state`` is the oracle.
"""
from __future__ import annotations

import argparse
import os
import random
import tempfile
import time

import polars as pl
from tqdm import tqdm

from pipeline.advantage import AdvantageConfig, anchor_groups, anchor_key, anchor_stats, compute_advantages
from pipeline.advantage.anchors import commands_key
from pipeline.advantage.purity import pooled_purity
from pipeline.envs.alfworld import AlfworldEnv, AlfworldEnvConfig
from pipeline.envs.alfworld_gen import generate_games

STRATEGIES = {
    "exact": AdvantageConfig(anchor="exact"),
    "normalized": AdvantageConfig(anchor="normalized", normalizers=("strip", "collapse_whitespace", "lowercase",
                                                                     "mask_numbers")),
    "similarity": AdvantageConfig(anchor="similarity", anchor_threshold=0.95),
    "embedding": AdvantageConfig(anchor="embedding", anchor_threshold=0.95),
    "composite": AdvantageConfig(anchor="composite"),
    "state": AdvantageConfig(anchor="state"),
}
INVALID = "do a little dance"  # never admissible: "Nothing happens."


def play(games: list[str], group_size: int, max_steps: int, p_random: float, p_invalid: float,
         seed: int) -> pl.DataFrame:
    """Steps of ``group_size`` episodes per game (the columns the engine and the statistics read)."""
    env = AlfworldEnv(AlfworldEnvConfig(expert="planner", max_steps=max_steps))
    rows: dict[str, list] = {c: [] for c in ("group_id", "episode_id", "step", "observation", "state_key",
                                             "admissible_key", "reward", "won")}
    for g, game in enumerate(tqdm(games, desc="groups")):
        for m in range(group_size):
            rng, now = random.Random(seed * 100_003 + g * 1009 + m), env.reset(game)
            won, first = False, len(rows["step"])
            for step in range(max_steps):
                draw = rng.random()
                plan = now.expert_plan or now.admissible_commands
                action = (INVALID if draw < p_invalid else rng.choice(now.admissible_commands)
                          if draw < p_invalid + p_random else plan[0])
                values = (g, g * group_size + m, step, now.observation, now.state_key,
                          commands_key(now.admissible_commands))
                for col, v in zip(("group_id", "episode_id", "step", "observation", "state_key", "admissible_key"),
                                  values):
                    rows[col].append(v)
                now = env.step(action)
                rows["reward"].append(now.reward)
                won = won or now.won
                if now.done:
                    break
            rows["won"] += [won] * (len(rows["step"]) - first)
    steps = pl.DataFrame(rows, schema_overrides={"state_key": pl.UInt64, "admissible_key": pl.UInt64,
                                                 "reward": pl.Float32, "step": pl.Int32})
    return steps.with_columns(pl.lit(0, pl.Int32).alias("round"), pl.format("task-{}", "group_id").alias("task_id"),
                              anchor_key(steps["observation"]), pl.lit(True).alias("action_valid"))


def measure(steps: pl.DataFrame, cfg: AdvantageConfig) -> dict[str, float | None]:
    """Pooled anchored share, purity, missed revisits and mean |A_S| of one strategy."""
    t = time.perf_counter()
    adv = compute_advantages(steps, cfg)
    seconds = time.perf_counter() - t
    stats, groups = anchor_stats(adv), anchor_groups(adv)
    w = stats["steps"]
    return {"anchored_share": float((stats["anchored_share"] * w).sum() / w.sum()),
            "anchor groups": groups.height, **pooled_purity(groups, stats),
            "mean |A_S|": float(adv["adv_step"].abs().mean()), "seconds": seconds}


def table(results: dict[str, dict]) -> str:
    cols = ["anchored_share", "anchor groups", "anchor_pure_share", "impure_step_share", "states_per_anchor_group",
            "missed_revisit_share", "mean |A_S|", "seconds"]
    fmt = lambda v: "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| anchor | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(fmt(r[c]) for c in cols) + " |" for name, r in results.items()]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--games", type=int, default=4, help="generated households (one episode group each)")
    ap.add_argument("--group-size", type=int, default=4, help="episodes per group")
    ap.add_argument("--max-steps", type=int, default=25)
    ap.add_argument("--random", type=float, default=0.3, help="chance a step takes a random admissible command")
    ap.add_argument("--invalid", type=float, default=0.1, help="chance a step takes an inadmissible command")
    ap.add_argument("--receptacles", type=int, nargs=2, default=(5, 12), metavar=("MIN", "MAX"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", nargs="*", default=[], choices=list(STRATEGIES), help="strategies to leave out")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="bench-anchors-")
    games = generate_games(os.path.join(root, "data"), games=args.games, seed=args.seed,
                           min_receptacles=args.receptacles[0], max_receptacles=args.receptacles[1])
    t = time.perf_counter()
    steps = play(games, args.group_size, args.max_steps, args.random, args.invalid, args.seed)
    won = steps.group_by("episode_id").agg(pl.col("won").first())["won"].mean()
    print(f"{steps.height} steps, {steps['episode_id'].n_unique()} episodes in {args.games} groups "
          f"({time.perf_counter() - t:.0f} s); success {won:.2f}; "
          f"'Nothing happens.' share {(steps['observation'] == 'Nothing happens.').mean():.3f}")
    results = {name: measure(steps, cfg) for name, cfg in STRATEGIES.items() if name not in args.skip}
    print(table(results))


if __name__ == "__main__":
    main()
