"""The trainer refuses corrupt input, naming the file: a flipped byte in a steps shard or in the policy."""
from __future__ import annotations

import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import storage
from trainer.batches import load_rows
from trainer.config import TrainerConfig
from trainer.updates import train_round


def _flip(path: str, pos: int | None = None) -> None:
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2 if pos is None else pos] ^= 0xFF
    open(path, "wb").write(bytes(data))


def _mid_column(path: str, name: str) -> int:
    """Offset of the middle of column ``name``'s data in row group 0."""
    meta = pq.read_metadata(path).row_group(0)
    col = next(meta.column(i) for i in range(meta.num_columns) if meta.column(i).path_in_schema.startswith(name))
    return (col.dictionary_page_offset or col.data_page_offset) + col.total_compressed_size // 2


def test_flipped_byte_in_steps_shard_is_named(tmp_path, make_rows):
    """The trainer's token columns come from the steps shards (joined to the slim advantages)."""
    run = storage.open_run(str(tmp_path / "run"))
    from tests.trainer.test_rounds import _advantages, commit_advantages

    commit_advantages(run, 0, _advantages(0))
    rows = load_rows(run.scan("advantages", rounds=[0]), vocab_size=500, max_seq_len=64)  # intact: it reads
    assert rows.n_rows == run.manifest(0, "advantages").rows("advantages")
    path = f"{run.stage_dir(0, 'trajectories')}/steps/s.parquet"
    _flip(path, _mid_column(path, "prompt_ids"))
    with pytest.raises(storage.CorruptShard, match=rf"^{re.escape(path)}: cannot read row group 0 \(.*CRC checksum"):
        load_rows(run.scan("advantages", rounds=[0]), vocab_size=500, max_seq_len=64)  # what train_from_run reads


def test_flipped_byte_in_committed_policy_is_named_before_load(tmp_path, make_rows):
    from tests.pipeline.policy.test_policy_checkpoint_integrity import committed_checkpoint

    _, path = committed_checkpoint(tmp_path)
    weights = f"{path}/model.safetensors"
    _flip(weights)
    with pytest.raises(storage.CorruptShard, match=rf"^{re.escape(weights)}: SHA-256 differs from the manifest"):
        train_round(TrainerConfig(kl_coef=0.0), path, make_rows(8), tmp_path / "out")
    assert not Path(tmp_path / "out").exists()
