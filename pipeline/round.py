"""``python pipeline/round.py``: the round driver (``pipeline.driver``) as a script file.

    python pipeline/round.py --config configs/local.yaml [key.path=value ...] [--rounds N]
    dask-submit [--scheduler tcp://host:8786] pipeline/round.py --config configs/local.yaml

``dask-submit`` ships this file to the scheduler's host and runs it there; the
installed ``gigpo-round`` console script runs the same driver. Run as a script,
this file's folder comes first on ``sys.path``: no module directly in
``pipeline/`` may share a name with a standard or installed top-level module
(``tests/test_imports.py`` checks).
"""
import sys

from pipeline.driver import main

if __name__ == "__main__":
    sys.exit(main())
