"""Env worker processes do not import the driver script again (~10 s of CPU each for round.py's imports)."""
from __future__ import annotations

import os
import subprocess
import sys

from pipeline.envs.alfworld_gen import generate_games

SCRIPT = """
import os, sys
with open(sys.argv[1], "a") as log:  # every process that imports this script adds a line
    log.write(f"{os.getpid()}\\n")
from pipeline.envs.pool import EnvPool, PoolConfig

if __name__ == "__main__":
    with EnvPool(config=PoolConfig(workers=2)) as pool:
        assert len(pool.reset(sys.argv[2:], group_size=2)) == 2 * len(sys.argv[2:])
"""


def test_env_workers_do_not_import_the_driver_script(tmp_path):
    games = generate_games(str(tmp_path / "games"), games=2, seed=5, max_receptacles=5)
    script, log = tmp_path / "driver.py", tmp_path / "imports.log"
    script.write_text(SCRIPT)
    subprocess.run([sys.executable, str(script), str(log), *games], check=True, timeout=120,
                   env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert len(log.read_text().splitlines()) == 1  # the script alone; without main_hidden 3 (with its 2 workers)
