"""A learning benchmark's checkpoints on a larger held-out set: where their gain over the warm start comes from.

    python -m bench.heldout --bench bench/out/default_avx2 --arms gigpo --seeds 0 1 2 3 4 --rounds 1 3 --games 64

1. Plays the warm start (``BENCH/warm``, round -1) and each arm-seed's checkpoints of
   ``--rounds`` on the first ``--games`` generated held-out games x ``--episodes``
   (``python -m pipeline.evaluate_checkpoint`` with ``games.generate_eval``,
   ``evaluation.tasks`` and ``evaluation.group_size`` set; the games are generated
   into ``BENCH/heldout-GxE/run``). Each table goes to ``BENCH/heldout-GxE/<run>-<round>.parquet``;
   a table already there is not played again, so a stopped invocation resumes.
2. Prints held-out success per round (mean and 95% CI over seeds), then the gain of
   the last round over the warm start on subsets of the games: the benchmark's own
   held-out games (those of ``BENCH/warm``) and the others; the games whose goal (task
   type, object, receptacle: the game folder's name without its room number) is the
   goal of some training game and those whose goal is not.

Held-out success is deterministic for a checkpoint on one kind of CPU, whatever else runs beside it.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import polars as pl

from bench.learning import mean_ci
from pipeline.config import load
from pipeline.envs.data import DATA_SUBDIR
from pipeline.run_config import GamesConfig, RunConfig

ROOT = Path(__file__).resolve().parents[1]


def evaluate(config: str, bench: Path, out: Path, run: str, round: int, games: int, episodes: int) -> Path:
    """The held-out table of ``run``'s round ``round`` checkpoint (played unless already written)."""
    table = out / f"{run}-{round}.parquet"
    if not table.exists():
        cmd = [sys.executable, "-m", "pipeline.evaluate_checkpoint", "--config", config, "--checkpoint",
               str(bench / run / "rounds" / f"{round:06d}" / "checkpoint"), "--episodes", str(games * episodes),
               "--out", str(table), f"run_dir={out / 'run'}", f"games.generate_eval={games}",
               f"evaluation.tasks={games}", f"evaluation.group_size={episodes}"]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
    return table


def goal(game: str) -> str:
    """A game folder's goal: its name without the room number.

    >>> goal("pick_and_place_simple-Bowl-None-SideTable-212")
    'pick_and_place_simple-Bowl-None-SideTable'
    """
    return game.rsplit("-", 1)[0]


def games(run_dir: Path, split: str) -> set[str]:
    """The game folders a run generated for ``split`` (``RUN/games``: pipeline.stages.setup)."""
    return {p.name for p in (run_dir / "games" / DATA_SUBDIR / split).iterdir()}


def subsets(bench: Path, out: Path, cfg: GamesConfig) -> dict[str, set[str]]:
    """Names of held-out game subsets -> their game folders."""
    held = games(out / "run", cfg.eval_split)
    own = games(bench / "warm", cfg.eval_split) & held
    trained = {goal(g) for g in games(out / "run", cfg.train_split)}
    seen = {g for g in held if goal(g) in trained}
    return {"all": held, "the benchmark's held-out games": own, "the other games": held - own,
            "goal among the training games'": seen, "goal not among them": held - seen}


def success(table: Path, games: set[str]) -> float:
    frame = pl.read_parquet(table).with_columns(game=pl.col("task_id").str.split("/").list.first())
    return frame.filter(pl.col("game").is_in(sorted(games)))["won"].cast(pl.Float64).mean()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.heldout", description=__doc__.splitlines()[0])
    ap.add_argument("--bench", required=True, help="a bench.learning output folder (its warm and arm-seed runs)")
    ap.add_argument("--config", default="configs/local.yaml", help="the benchmark's config")
    ap.add_argument("--arms", nargs="+", default=["gigpo"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--rounds", nargs="+", type=int, default=[3], help="rounds whose checkpoints are played")
    ap.add_argument("--games", type=int, default=64, help="held-out games (generated)")
    ap.add_argument("--episodes", type=int, default=2, help="episodes per game")
    args = ap.parse_args(argv)
    bench = Path(args.bench).resolve()
    out = bench / f"heldout-{args.games}x{args.episodes}"
    out.mkdir(exist_ok=True)
    play = lambda run, r: evaluate(args.config, bench, out, run, r, args.games, args.episodes)  # noqa: E731
    warm = play("warm", -1)
    tables = {arm: {s: {r: play(f"{arm}-s{s}", r) for r in args.rounds} for s in args.seeds} for arm in args.arms}
    parts, last = subsets(bench, out, load(RunConfig, args.config, []).games), args.rounds[-1]
    print(f"\nheld-out success, {len(parts['all'])} games x {args.episodes} episodes; warm start "
          f"{success(warm, parts['all']):.3f}")
    for arm, seeds in tables.items():
        for r in args.rounds:
            vals = [success(seeds[s][r], parts["all"]) for s in args.seeds]
            print(f"{arm} round {r}: %.3f ± %.3f" % mean_ci(vals), "(per seed", ", ".join(f"{v:.3f}" for v in vals)
                  + ")")
        print(f"{arm}: gain of round {last} over the warm start, mean ± 95% CI over seeds:")
        for name, games in parts.items():
            start = success(warm, games)
            gains = [success(seeds[s][last], games) - start for s in args.seeds]
            print(f"  {name} ({len(games)} games, start {start:.3f}): %+.3f ± %.3f" % mean_ci(gains),
                  "(per seed", ", ".join(f"{g:+.3f}" for g in gains) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
