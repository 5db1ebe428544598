"""On a terminal the driver draws progress bars with an ETA for collect and evaluate (by default); in a pipe, such as
a log file or CI, it draws none (``tests/pipeline/stages/test_warm_start.py`` checks a piped driver's output).

    .venv/bin/python -m pytest tests/pipeline/test_console_output.py -q
"""
from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time

from tests.pipeline.round_helpers import CRASH, ROOT, driver_args, driver_env, kill_group


def run_on_terminal(args: list[str], timeout: float = 600.0) -> tuple[int, str]:
    """Run a driver with a 160-column terminal as its stdout and stderr: (exit code, what the terminal got)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(args, cwd=ROOT, env=driver_env(), stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                            start_new_session=True)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 1.0)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # every process holding the terminal has ended
                    break
                if not chunk:
                    break
                chunks.append(chunk)
        return proc.wait(30), b"".join(chunks).decode("utf-8", errors="replace")
    finally:
        kill_group(proc.pid)
        proc.wait(30)
        os.close(master)


def test_collect_and_evaluate_draw_bars_with_an_eta_on_a_terminal(tmp_path):
    code, out = run_on_terminal(driver_args(tmp_path / "run", *CRASH))
    assert code == 0, out
    for stage in ("collect", "evaluate"):
        # redrawn in place, each state with the time left; the last one complete
        states = re.findall(rf"\r{stage}: +(\d+)%\|[^\r]*\| (\d+)/(\d+) \[\d\d:\d\d<(\?|\d\d:\d\d)", out)
        assert states, f"no {stage} bar:\n{out}"
        assert states[-1][0] == "100" and states[-1][1] == states[-1][2] and states[-1][3] == "00:00", states
