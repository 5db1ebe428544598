"""dask-submit: local LocalCluster mode, detached cluster jobs with logs, and ``dask submit``."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from distributed import LocalCluster

from tests.pipeline.round_helpers import default_sigint, gone

BIN = Path(sys.executable).parent
SCRIPT = """
import sys
from distributed import Client
if __name__ == "__main__":
    client = Client()
    print("sum", client.submit(sum, [1, 2, 3]).result(), "args", sys.argv[1:], flush=True)
    sys.exit(int(sys.argv[1]))
"""


@pytest.fixture()
def script(tmp_path):
    path = tmp_path / "driver.py"
    path.write_text(SCRIPT)
    return str(path)


def _run(*argv, timeout=120):
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout)


def test_local_mode_starts_a_cluster_and_returns_the_exit_code(script):
    done = _run(BIN / "dask-submit", script, "7", "--flag")
    assert done.returncode == 7, done.stderr
    assert "sum 6 args ['7', '--flag']" in done.stdout
    assert "dask-submit: LocalCluster at tcp://" in done.stderr


def test_cluster_mode_detach_logs_and_dask_cli(script, tmp_path, monkeypatch):
    monkeypatch.setenv("DASK_SUBMIT_HOME", str(tmp_path / "jobs"))  # the scheduler runs in this process
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                      dashboard_address=None) as cluster:
        addr = cluster.scheduler_address
        detached = _run(BIN / "dask-submit", "--scheduler", addr, "--detach", script, "0")
        assert detached.returncode == 0, detached.stderr
        job = detached.stdout.strip()
        followed = _run(BIN / "dask-submit", "--scheduler", addr, "--logs", job, "--follow")
        assert (followed.returncode, followed.stdout) == (0, "sum 6 args ['0']\n")
        logs = _run(BIN / "dask-submit", "--scheduler", addr, "--logs", job)
        assert logs.stdout == "sum 6 args ['0']\n[dask-submit] exit code 0\n"
        via_dask = _run(BIN / "dask", "submit", "--scheduler", addr, script, "3")
        assert (via_dask.returncode, via_dask.stdout) == (3, "sum 6 args ['3']\n")
        unknown = _run(BIN / "dask-submit", "--scheduler", addr, "--logs", "nope")
        assert (unknown.returncode, unknown.stderr) == (4, "dask-submit: no job 'nope' on this scheduler\n")


LONG = """
import logging, subprocess, time
import distributed
logging.getLogger("distributed.client").info("chatter")  # Dask INFO lines stay out of a job's log
child = subprocess.Popen(["sleep", "300"])
print("child", child.pid, flush=True)
time.sleep(300)
"""


def _gone(pid: int) -> bool:
    try:
        return gone(psutil.Process(pid), timeout=5.0)
    except psutil.NoSuchProcess:
        return True


def test_list_and_cancel_leave_no_process_of_the_job(tmp_path, monkeypatch):
    monkeypatch.setenv("DASK_SUBMIT_HOME", str(tmp_path / "jobs"))
    (tmp_path / "long.py").write_text(LONG)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                      dashboard_address=None) as cluster:
        cli = [BIN / "dask-submit", "--scheduler", cluster.scheduler_address]
        job = _run(*cli, "--detach", tmp_path / "long.py", "a").stdout.strip()
        log = tmp_path / "jobs" / job / "log"
        deadline = time.monotonic() + 60
        while "child" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
            time.sleep(0.2)
        child = int(log.read_text().split()[1])
        wrapper = json.loads((tmp_path / "jobs" / job / "job.json").read_text())["pid"]
        _ctrl_c_stops_following_only(cli, job)
        listed = _run(*cli, "--list").stdout.splitlines()
        assert listed[0].split() == ["job", "state", "started", "command"]
        assert listed[1].startswith(f"{job:<24}{'running':<22}") and listed[1].endswith("long.py a")
        cancelled = _run(*cli, "--cancel", job)
        assert cancelled.stdout == (f"job {job} cancelled: its processes on the scheduler host are gone "
                                    "(exit code 143)\n")
        assert _gone(child) and _gone(wrapper)  # a zombie left to this host's init (it does not reap) is gone
        assert _run(*cli, "--list").stdout.splitlines()[1].startswith(f"{job:<24}{'cancelled':<22}")
        assert _run(*cli, "--logs", job).stdout == f"child {child}\n[dask-submit] exit code 143\n"
        assert _run(*cli, "--cancel", job).stdout == f"job {job} had already ended\n"
        unknown = _run(*cli, "--cancel", "nope")
        assert (unknown.returncode, unknown.stderr) == (4, "dask-submit: no job 'nope' on this scheduler\n")


def _ctrl_c_stops_following_only(cli: list, job: str) -> None:
    follow = subprocess.Popen([str(a) for a in cli] + ["--logs", job, "--follow"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    assert follow.stdout.readline().startswith("child ")
    follow.send_signal(signal.SIGINT)
    _, err = follow.communicate(timeout=30)
    cmd = f"dask-submit --scheduler {cli[2]}"
    assert (follow.returncode, err) == (130, f"dask-submit: job {job} keeps running on the cluster; cancel it with "
                                             f"`{cmd} --cancel {job}`, follow it again with `{cmd} --logs {job} "
                                             "--follow`\n")
    assert _run(*cli, "--list").stdout.splitlines()[1].startswith(f"{job:<24}{'running':<22}")


def test_usage_errors(tmp_path):
    missing = _run(BIN / "dask-submit", tmp_path / "missing.py")
    assert missing.returncode == 2 and "no such file" in missing.stderr
    unreachable = _run(BIN / "dask-submit", "--scheduler", "tcp://127.0.0.1:9", "--connect-timeout", "1", "--logs", "x")
    assert unreachable.returncode == 3 and "cannot reach scheduler tcp://127.0.0.1:9" in unreachable.stderr


class _OnThisHost:
    """The scheduler call of ``_follow``, run in this process (the job folder is local)."""

    def run_on_scheduler(self, fn, *args):
        return fn(*args)


def test_follow_decodes_utf8_split_across_reads(tmp_path, monkeypatch, capsys):
    from pipeline import submit

    monkeypatch.setenv("DASK_SUBMIT_HOME", str(tmp_path))
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "log").write_bytes("█ 50% █\n".encode())
    (tmp_path / "job" / "exitcode").write_text("5\n")
    assert submit._follow(_OnThisHost(), "job", poll=0, limit=2) == 5  # every '█' (3 bytes) is split by a read
    assert capsys.readouterr().out == "█ 50% █\n"
