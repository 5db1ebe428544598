"""The advantage stage on a committed steps shard with a flipped byte: the error names the file, nothing is
committed."""
from __future__ import annotations

import re

import pyarrow.parquet as pq
import pytest
from distributed import Client, LocalCluster

import storage
from pipeline.advantage import AdvantageConfig
from pipeline.stages.advantage import advantage
from storage.schemas import STEPS
from storage.synthetic import synthetic_round


def _corrupt_round(tmp_path) -> tuple[storage.Run, str]:
    """Round 0 with two committed steps shards; one byte of the second's ``reward`` pages (a column the stage reads)
    is flipped."""
    run = storage.open_run(str(tmp_path / "run"))
    infos = []
    for s in range(2):
        steps, episodes = synthetic_round(0, groups=2, group_size=4, seed=s, first_group=2 * s)
        infos += [storage.write_shard(run, 0, "steps", steps, f"w{s}"),
                  storage.write_shard(run, 0, "episodes", episodes, f"w{s}")]
    run.commit(0, "trajectories", infos, "cfg", 0)
    path = f"{run.stage_dir(0, 'trajectories')}/steps/w1.parquet"
    chunk = pq.ParquetFile(path).metadata.row_group(0).column(STEPS.get_field_index("reward"))
    data = bytearray(open(path, "rb").read())
    # the chunk's last byte lies in its last page's compressed values; the middle can land on the page header's
    # min/max statistics, which no CRC covers and no read uses (the values read back unchanged)
    data[chunk.data_page_offset + chunk.total_compressed_size - 1] ^= 0xFF
    open(path, "wb").write(bytes(data))
    return run, path


@pytest.mark.parametrize("groups_whole", [None, False])  # one task per shard / the group_id shuffle
def test_corrupt_steps_shard_is_named(tmp_path, groups_whole):
    run, path = _corrupt_round(tmp_path)
    with pytest.raises(storage.CorruptShard, match=rf"^{re.escape(path)}: cannot read Parquet data \(.*CRC checksum"):
        advantage(None, run, 0, AdvantageConfig(), groups_whole=groups_whole, progress=False)
    assert not run.is_committed(0, "advantages")


def test_corrupt_steps_shard_is_named_from_a_dask_worker(tmp_path):
    run, path = _corrupt_round(tmp_path)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        with Client(cluster) as client:
            with pytest.raises(storage.CorruptShard, match=rf"^{re.escape(path)}: cannot read Parquet data"):
                advantage(client, run, 0, AdvantageConfig(), progress=False)
    assert not run.is_committed(0, "advantages")
