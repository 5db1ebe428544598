"""``python -m pipeline.evaluate_checkpoint``: evaluate one checkpoint on the held-out games, without training.

    python -m pipeline.evaluate_checkpoint --config configs/local.yaml --checkpoint 3   # round 3 of the run
    python -m pipeline.evaluate_checkpoint --config configs/local.yaml --checkpoint /models/x --episodes 64 \\
        --split valid_unseen

``--checkpoint`` is a round of the config's run (its committed checkpoint; -1:
the warm start's) or a Hugging Face model directory. The episodes are played as
the evaluate stage plays them (``pipeline.stages.evaluate``: the evaluation
section's temperature and group size, the same sampling seeds), on the first
``--episodes / evaluation.group_size`` games of the held-out split (``--split``,
default ``games.eval_split``). Prints the success rate by task type and writes
the episodes as a table (the ``evaluation`` columns plus ``task_type`` and
``checkpoint``) to ``--out``, default ``RUN/evaluations/<checkpoint>-<split>.parquet``.
The run is only read (no lock): this may run beside a training driver.
Exit codes: 0 done, 2 a bad argument or config (named), 1 the evaluation failed.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import os
import sys

import polars as pl

import storage
from pipeline.config import ConfigError, load
from pipeline.envs.data import DATA_SUBDIR, AlfworldDataConfig, collect_games, read_task_type, task_id
from pipeline.policy.base import CheckpointError, check_checkpoint
from pipeline.records import CHECKPOINT_STAGE
from pipeline.run_config import RunConfig
from pipeline.runtime.cluster import connect
from pipeline.stages.evaluate import EVAL_SEED_ROUND, play_held_out
from pipeline.stages.retention import kept_checkpoints, retired
from pipeline.stages.setup import check_paths, prepare_games
from storage.shards import put_atomic
from storage.uri import resolve


def resolve_checkpoint(run: storage.Run, value: str) -> tuple[str, int, str]:
    """``--checkpoint``: (model directory, round (EVAL_SEED_ROUND for a directory), label of the output)."""
    try:
        r = int(value)
    except ValueError:
        try:
            check_checkpoint(value)
        except CheckpointError as exc:
            raise ConfigError(f"--checkpoint: {exc}") from exc
        return value, EVAL_SEED_ROUND, os.path.basename(os.path.normpath(value))
    if not run.is_committed(r, CHECKPOINT_STAGE) or retired(run, r):
        kept = kept_checkpoints(run)
        why = "was removed by retention (trainer.keep_checkpoints)" if retired(run, r) else "is not committed"
        raise ConfigError(f"--checkpoint {r}: the checkpoint of round {r} of {run.root} {why} (kept: {kept or 'none'})")
    return run.stage_dir(r, CHECKPOINT_STAGE), r, f"round-{r}"


def held_out_games(cfg: RunConfig, run: storage.Run) -> list[str]:
    """The held-out split's games: ``games.data_dir``'s, else those the run generated (generated now if absent)."""
    root = cfg.games.data_dir or os.path.join(run.root, "games")
    if cfg.games.data_dir is None and not os.path.isdir(os.path.join(root, DATA_SUBDIR, cfg.games.eval_split)):
        return prepare_games(cfg.games, run)[1]
    return collect_games(AlfworldDataConfig(data_dir=root, split=cfg.games.eval_split))


def eval_tasks(cfg: RunConfig, episodes: int | None, games: int) -> int:
    """Held-out tasks to play for ``episodes`` (None: ``evaluation.tasks``), checked against the split's size."""
    g = cfg.evaluation.group_size
    if episodes is None:
        return min(cfg.evaluation.tasks, games)
    if episodes < 1 or episodes % g:
        raise ConfigError(f"--episodes {episodes}: expected a positive multiple of evaluation.group_size={g} "
                          f"(e.g. {max(g, episodes - episodes % g)})")
    if episodes // g > games:
        raise ConfigError(f"--episodes {episodes}: needs {episodes // g} held-out games of {g} episodes, the "
                          f"{cfg.games.eval_split!r} split has {games}; use at most {games * g}")
    return episodes // g


def by_task_type(table: pl.DataFrame) -> pl.DataFrame:
    """Episodes, wins and success rate per task type, then all together.

    >>> t = pl.DataFrame({"task_type": ["a", "a", "b"], "won": [True, False, True]})
    >>> by_task_type(t).rows()
    [('a', 2, 1, 0.5), ('b', 1, 1, 1.0), ('all', 3, 2, 0.6666666666666666)]
    """
    agg = [pl.len().alias("episodes"), pl.col("won").sum().alias("won"), pl.col("won").mean().alias("success")]
    per = table.group_by("task_type").agg(agg).sort("task_type")
    return pl.concat([per, table.select(pl.lit("all").alias("task_type"), *agg)], how="vertical_relaxed")


def success_lines(table: pl.DataFrame) -> str:
    """``by_task_type`` as aligned text lines.

    >>> print(success_lines(pl.DataFrame({"task_type": ["pick_and_place_simple"], "won": [True]})))
    task type                        episodes    won  success
    pick_and_place_simple                   1      1    1.000
    all                                     1      1    1.000
    """
    rows = [f"{t:<32}{n:>9}{w:>7}{s:>9.3f}" for t, n, w, s in by_task_type(table).iter_rows()]
    return "\n".join([f"{'task type':<32}{'episodes':>9}{'won':>7}{'success':>9}", *rows])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.evaluate_checkpoint", description=__doc__.splitlines()[0])
    ap.add_argument("--config", help="YAML run config (default: built-in defaults)")
    ap.add_argument("--checkpoint", required=True, help="a round of the run (-1: the warm start) or a model directory")
    ap.add_argument("--episodes", type=int, help="held-out episodes (default: evaluation.tasks x group_size)")
    ap.add_argument("--split", help="held-out split (default: games.eval_split)")
    ap.add_argument("--out", help="where to write the table (default: RUN/evaluations/<checkpoint>-<split>.parquet)")
    ap.add_argument("overrides", nargs="*", metavar="key.path=value", help="config overrides")
    args = ap.parse_intermixed_args(argv)
    try:
        cfg = load(RunConfig, args.config, args.overrides + ([f"games.eval_split={args.split}"] if args.split else []))
        check_paths(cfg)
        run = storage.open_run(cfg.run_dir)
        policy, round, label = resolve_checkpoint(run, args.checkpoint)
        games = held_out_games(cfg, run)
        tasks = eval_tasks(cfg, args.episodes, len(games))
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    evaluation = dataclasses.replace(cfg.evaluation, tasks=tasks)
    with connect(cfg.cluster) as client:
        table = play_held_out(client, policy, games, cfg.rollout, evaluation, round, run.id)
    types = {task_id(g): read_task_type(os.path.join(os.path.dirname(g), "traj_data.json")) for g in games}
    table = table.with_columns(task_type=pl.col("task_id").replace_strict(types), checkpoint=pl.lit(policy))
    fs, out = (resolve(args.out) if args.out
               else (run.fs, f"{run.root}/evaluations/{label}-{cfg.games.eval_split}.parquet"))
    write_table(fs, out, table)
    print(f"{policy}: {table.height} held-out episodes ({cfg.games.eval_split})\n{success_lines(table)}\ntable: {out}")
    return 0


def write_table(fs, path: str, table: pl.DataFrame) -> None:
    """Write ``table`` as Parquet at ``path`` of filesystem ``fs``, whole or not at all."""
    buf = io.BytesIO()
    table.write_parquet(buf)
    put_atomic(fs, path, buf.getvalue())


if __name__ == "__main__":
    sys.exit(main())
