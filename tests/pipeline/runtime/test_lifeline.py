"""Ties between a process and the children it starts, on real processes: SIGKILL the parent, the child goes."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.pipeline.round_helpers import gone

ROOT = Path(__file__).resolve().parents[3]
SLEEPER = "import time; print('ready', flush=True); time.sleep(300)"
WATCHER = "from pipeline.runtime.lifeline import exit_with_parent; exit_with_parent(0.1); " + SLEEPER
PARENT = """
import subprocess, sys, time
from pipeline.runtime.lifeline import tied
child = subprocess.Popen([sys.executable, "-c", sys.argv[2]], preexec_fn=tied() if sys.argv[1] == "tied" else None)
print(child.pid, flush=True)
time.sleep(300)
"""


@pytest.mark.parametrize("tie, child", [("tied", SLEEPER), ("untied", WATCHER)], ids=["tied", "exit_with_parent"])
def test_child_dies_with_its_sigkilled_parent(tie, child):
    path = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    parent = subprocess.Popen([sys.executable, "-c", PARENT, tie, child], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                              env=os.environ | {"PYTHONPATH": os.pathsep.join(path)})
    with parent.stdout:
        proc = psutil.Process(int(parent.stdout.readline()))
        assert parent.stdout.readline() == "ready\n"  # the child runs, its tie made
        parent.kill()
        parent.wait()
    ok = gone(proc, 5.0)
    if not ok:
        proc.kill()
    assert ok, "the child outlived its parent"
