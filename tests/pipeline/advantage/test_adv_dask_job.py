"""The round job on a real Dask LocalCluster: per-shard tasks, group_id shuffle, identical numbers."""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq
import pytest
from distributed import Client, LocalCluster
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.advantage import AdvantageConfig, AdvantageInputError, anchor_groups, anchor_stats, compute_advantages
from pipeline.advantage.dask_job import run_advantage_job, slim
from pipeline.stages.advantage import advantage
from pipeline.config import config_hash
import storage
from storage.schemas import ADVANTAGES

KEYS = ["episode_id", "step"]
CFG = AdvantageConfig(gamma=0.5, episode_stats="episodes")


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        with Client(cluster) as c:
            yield c


class ParquetSink:
    """Writes each partition's table as plain Parquet; runs where the task runs."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)

    def __call__(self, name, table, index, source):
        path = self.out_dir / f"{name}-{index}.parquet"
        pq.write_table(table, path)
        return {"path": str(path), "rows": table.num_rows, "source": source, "pid": os.getpid()}


def write_shards(directory: Path, table, shard_of_row: list[int], n_shards: int) -> list[str]:
    paths = []
    for i in range(n_shards):
        rows = [r for r, s in enumerate(shard_of_row) if s == i]
        path = directory / f"steps-{i}.parquet"
        pq.write_table(table.take(pa.array(rows, pa.int64())), path)
        paths.append(str(path))
    return paths


def read_outputs(result, outputs: str = "outputs") -> pl.DataFrame:
    return pl.concat([pl.read_parquet(o["path"]) for o in getattr(result, outputs)])


def read_groups(result) -> pl.DataFrame:
    """The anchor_groups partitions together, in (round, group_id, anchor_id) order."""
    return read_outputs(result, "group_outputs").sort("round", "group_id", "anchor_id")


def slim_of(expected: pl.DataFrame) -> pl.DataFrame:
    """What the job stores of a full result: step keys and advantage columns."""
    return pl.from_arrow(slim(expected))


def round_frame(frame) -> pl.DataFrame:
    """Four groups of three episodes, sharing start states inside each group; true states sometimes differ."""
    rows = []
    for g in range(4):
        for e in range(3):
            length = 2 + (g + e) % 3
            for s in range(length):
                rows.append((g, 10 * g + e, s, float(s == length - 1 and e != 1), (g + s * (e % 2)) % 5))
    state = pl.Series([(r[4] + r[1] * (r[2] == 2)) % 7 for r in rows], dtype=pl.UInt64)
    return frame(rows, action_valid=[i % 7 != 3 for i in range(len(rows))], state_key=state,
                 admissible_key=pl.Series([r[2] % 2 for r in rows], dtype=pl.UInt64))


def test_one_task_per_shard_when_groups_are_whole(client, tmp_path, frame, steps_table):
    table = steps_table(round_frame(frame))
    group = table["group_id"].to_pylist()
    paths = write_shards(tmp_path, table, [g % 3 for g in group], 3)
    (tmp_path / "out").mkdir()
    result = run_advantage_job(paths, ParquetSink(tmp_path / "out"), CFG, client=client, progress=False)
    assert not result.shuffled and result.rows == table.num_rows and result.cores == 2
    assert [o["source"] for o in result.outputs] == paths
    assert all(o["pid"] != os.getpid() for o in result.outputs + result.group_outputs)  # the sink ran on the workers
    expected = compute_advantages(pl.from_arrow(table), CFG)
    for i, out in enumerate(result.outputs):
        written = pq.read_table(out["path"])
        assert written.schema.equals(ADVANTAGES)  # keys and advantage columns only: no token column rewritten
        keys = ["round", *KEYS]
        assert written.select(keys).equals(pq.read_table(paths[i]).select(keys))  # the shard's rows, in its order
    assert read_outputs(result).sort(KEYS).equals(slim_of(expected).sort(KEYS))
    assert result.anchor_stats.equals(anchor_stats(expected))
    assert read_groups(result).equals(anchor_groups(expected))
    for out in result.group_outputs:  # each partition's anchor groups come sorted
        assert pl.read_parquet(out["path"]).equals(pl.read_parquet(out["path"]).sort("round", "group_id", "anchor_id"))
    # each group's start anchor also holds a step 2 whose true state differs: one impure anchor group per group
    assert read_groups(result)["pure"].to_list().count(False) == 4


# split by row: a shard task fails on a partial episode; split by episode: two shards report one group_id
@pytest.mark.parametrize("split", ["row", "episode"])
@pytest.mark.parametrize("where", ["dask", "inline"])
def test_groups_split_across_shards_are_shuffled(client, tmp_path, frame, steps_table, split, where, capsys):
    table = steps_table(round_frame(frame))
    shard_of = range(table.num_rows) if split == "row" else table["episode_id"].to_pylist()
    paths = write_shards(tmp_path, table, [r % 3 for r in shard_of], 3)
    (tmp_path / "out").mkdir()
    result = run_advantage_job(paths, ParquetSink(tmp_path / "out"), CFG, client=client if where == "dask" else None)
    assert result.shuffled
    why = {"row": r"a shard task failed \(column 'step' .*\); if a group spans shards, the shuffle fixes that",
           "episode": r"group_id\(s\) \[0, 1, 2, 3\] span several shards"}[split]
    assert re.search(rf"^{why}: redoing the stage with a group_id shuffle$", capsys.readouterr().out, re.M)
    expected = compute_advantages(pl.from_arrow(table), CFG)
    assert read_outputs(result).sort(KEYS).equals(slim_of(expected).sort(KEYS))
    for i, out in enumerate(result.outputs):
        keys = ["round", *KEYS]
        assert pq.read_table(out["path"]).select(keys).equals(pq.read_table(paths[i]).select(keys))
    assert result.anchor_stats.equals(anchor_stats(expected))
    assert read_groups(result).equals(anchor_groups(expected))


def test_trusted_whole_groups_are_verified(client, tmp_path, frame, steps_table):
    table = steps_table(round_frame(frame))
    by_episode = write_shards(tmp_path, table, [e % 2 for e in table["episode_id"].to_pylist()], 2)
    split = r"groups_whole=True but group_id\(s\) \[0, 1, 2, 3\] span several shards"
    with pytest.raises(AdvantageInputError, match=split):
        run_advantage_job(by_episode, ParquetSink(tmp_path), CFG, client=client, groups_whole=True, progress=False)
    by_row = write_shards(tmp_path, table, [r % 2 for r in range(table.num_rows)], 2)
    partial_episodes = r"column 'step' must run .* \(with groups_whole=True: if groups span"
    with pytest.raises(AdvantageInputError, match=partial_episodes):
        run_advantage_job(by_row, ParquetSink(tmp_path), CFG, client=client, groups_whole=True, progress=False)


def test_forced_shuffle_and_in_process_runs_agree(client, tmp_path, frame, steps_table):
    table = steps_table(round_frame(frame))
    paths = write_shards(tmp_path, table, [g % 2 for g in table["group_id"].to_pylist()], 2)
    outs = {}
    for name, kwargs in {"dask": {"client": client, "groups_whole": False}, "inline": {}}.items():
        (tmp_path / name).mkdir()
        result = run_advantage_job(paths, ParquetSink(tmp_path / name), CFG, progress=False, **kwargs)
        outs[name] = read_outputs(result).sort(KEYS)
    assert outs["dask"].equals(outs["inline"])


def test_no_shards(client):
    result = run_advantage_job([], ParquetSink("."), CFG, client=client, progress=False)
    assert result.outputs == result.group_outputs == [] and result.rows == 0
    assert result.anchor_stats.columns[:2] == ["round", "group_id"]


@st.composite
def sharded_rounds(draw):
    """Random groups/episodes/rewards/anchors, rows scattered over 1-4 shards (some may be empty)."""
    rows, episode = [], 0
    for g in draw(st.lists(st.integers(-20, 20), min_size=1, max_size=5, unique=True)):
        for _ in range(draw(st.integers(1, 3))):
            for s in range(draw(st.integers(1, 5))):
                reward = draw(st.sampled_from([0.0, 1.0, 0.5, -1.0]))
                state = draw(st.integers(0, 2))
                rows.append((g, episode, s, reward, draw(st.integers(0, 3)), draw(st.booleans()), state))
            episode += 1
    n_shards = draw(st.integers(1, 4))
    return rows, draw(st.lists(st.integers(0, n_shards - 1), min_size=len(rows), max_size=len(rows))), n_shards


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=sharded_rounds(), episode_stats=st.sampled_from(["steps", "episodes"]),
       anchor=st.sampled_from(["exact", "state", "composite"]))
def test_dask_equals_polars(client, frame, steps_table, data, episode_stats, anchor):
    rows, shard_of_row, n_shards = data
    cfg = AdvantageConfig(episode_stats=episode_stats, anchor=anchor)
    extra = {"state_key": pl.Series([r[6] for r in rows], dtype=pl.UInt64),
             "admissible_key": pl.Series([r[6] * r[2] % 2 for r in rows], dtype=pl.UInt64)}
    table = steps_table(frame([r[:6] for r in rows], **extra))
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_shards(Path(tmp), table, shard_of_row, n_shards)
        result = run_advantage_job(paths, ParquetSink(Path(tmp)), cfg, client=client, progress=False)
        got, groups = read_outputs(result).sort(KEYS), read_groups(result)
    expected = compute_advantages(pl.from_arrow(table), cfg).sort(KEYS)
    assert got.equals(slim_of(expected))
    assert result.anchor_stats.equals(anchor_stats(expected))
    assert groups.equals(anchor_groups(expected))


def test_round_stage_through_storage(client, tmp_path, frame, steps_table):
    run = storage.open_run(str(tmp_path / "run"))
    table = steps_table(round_frame(frame))
    infos = []
    for i in range(2):  # shard by group, as rollout workers write
        part = table.filter(pa.compute.equal(pa.compute.bit_wise_and(table["group_id"], 1), i))
        infos.append(storage.write_shard(run, 0, "steps", part, f"w{i}"))
    run.commit(0, "trajectories", infos, "cfg", policy_version=3)

    result = advantage(client, run, 0, CFG, progress=False)
    assert [o.rows for o in result.outputs] == [i.rows for i in infos]
    manifest = run.manifest(0, "advantages")
    assert manifest.policy_version == 3 and manifest.config_hash == config_hash(CFG)
    assert manifest.tables() == ["advantages", "anchor_groups", "anchor_stats"]
    expected = compute_advantages(run.read("steps", rounds=[0]), CFG)
    assert run.read("advantages", rounds=[0]).sort(KEYS).equals(expected.sort(KEYS))
    assert run.read("anchor_stats", rounds=[0]).equals(anchor_stats(expected))
    assert run.read("anchor_groups", rounds=[0]).sort("group_id", "anchor_id").equals(anchor_groups(expected))
    assert advantage(client, run, 0, CFG, progress=False) is None  # committed: a rerun is a no-op
