"""How shards are encoded: dictionaries for everything but floats (they rarely repeat), page checksums everywhere."""
from __future__ import annotations

import pyarrow.parquet as pq

import storage
from storage.synthetic import synthetic_round


def test_float_columns_skip_the_dictionary_and_the_rest_keep_it(tmp_path):
    run = storage.open_run(str(tmp_path / "run"))
    steps, _ = synthetic_round(0, groups=2, group_size=4, seed=0)
    info = storage.write_shard(run, 0, "steps", steps, "w0")
    meta = pq.read_metadata(f"{run.stage_dir(0, 'trajectories')}/{info.path}").row_group(0)
    dictionary = {meta.column(i).path_in_schema: "RLE_DICTIONARY" in meta.column(i).encodings
                  for i in range(meta.num_columns)}
    floats = {"reward", "response_logprobs.list.element"}
    flags = {"action_valid", "terminated", "truncated"}  # Parquet never dictionary-encodes booleans
    assert {path for path, used in dictionary.items() if not used} == floats | flags
    assert dictionary["prompt_ids.list.element"] and dictionary["observation"] and dictionary["episode_id"]
