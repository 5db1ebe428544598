"""``dask-submit``: run a driver script against a Dask cluster.

    dask-submit pipeline/round.py --config configs/local.yaml        # LocalCluster, follow the log
    dask-submit --scheduler tcp://host:8786 pipeline/round.py ...    # on the cluster's scheduler host
    dask-submit --scheduler tcp://host:8786 --detach pipeline/round.py ...   # print the job id, return
    dask-submit --scheduler tcp://host:8786 --logs JOB [--follow]    # a job's log (and exit code)
    dask-submit --scheduler tcp://host:8786 --list                   # the jobs: id, state, started, command
    dask-submit --scheduler tcp://host:8786 --cancel JOB             # stop a job's driver and its processes

Also available as ``dask submit`` (the ``dask_cli`` entry-point group).

With ``--scheduler`` the script is shipped to the scheduler's host and started
there as a detached process whose ``DASK_SCHEDULER_ADDRESS`` points at the
scheduler, so ``distributed.Client()`` in the script connects to the cluster.
It survives the submitting terminal; its log and exit code stay on the
scheduler host under ``~/.dask-submit/JOB`` (or ``$DASK_SUBMIT_HOME/JOB``).
``--cancel`` sends SIGTERM to the job's process group (the driver and every
process it started on that host), SIGKILL after ``CANCEL_GRACE_S``, and
records exit code 143; the driver's Dask tasks are released with its client
(a trainer rank stops once its task is, see ``pipeline.runtime.ranks``). Without ``--scheduler`` a
LocalCluster (non-daemonic workers, so tasks may start processes) is started
and the script runs against it here.

Ctrl-C while following a job stops the following only: the job keeps running
on the cluster, and the line printed says how to cancel it or follow it again.

Exit codes: the script's own when followed to its end; 0 when detached;
2 for usage errors; 3 when the scheduler cannot be reached; 4 for an unknown job;
130 when following was interrupted.
"""
from __future__ import annotations

import asyncio
import codecs
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import click

UNREACHABLE, UNKNOWN_JOB = 3, 4
INTERRUPTED = 130  # Ctrl-C while following a job (128 + SIGINT)
CANCELLED = 143  # the exit code recorded for a cancelled job (128 + SIGTERM)
CANCEL_GRACE_S = 10.0  # seconds between SIGTERM and SIGKILL of a cancelled job's processes


def _jobs() -> Path:
    """Where jobs keep their script, log and exit code on the scheduler host."""
    return Path(os.environ.get("DASK_SUBMIT_HOME", "~/.dask-submit")).expanduser()


def _start(job: str, source: str, name: str, args: list[str], cwd: str, dask_scheduler=None) -> str:
    """Start the script as a detached process on this host (run on the scheduler); return its job dir."""
    folder = _jobs() / job
    folder.mkdir(parents=True)
    script = folder / name
    script.write_text(source)
    env = os.environ | {"DASK_SCHEDULER_ADDRESS": dask_scheduler.address, "PYTHONUNBUFFERED": "1",
                        "DASK_LOGGING__DISTRIBUTED": "warning"}  # the job's log: its own output, no Dask INFO chatter
    wrapper = '"$@" > "$LOG" 2>&1; echo $? > "$CODE.tmp" && mv "$CODE.tmp" "$CODE"'
    proc = subprocess.Popen(["sh", "-c", wrapper, "sh", sys.executable, str(script), *args],
                            cwd=cwd if os.path.isdir(cwd) else str(folder), start_new_session=True,
                            env=env | {"LOG": str(folder / "log"), "CODE": str(folder / "exitcode")},
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (folder / "job.json").write_text(json.dumps({"pid": proc.pid, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                                                 "command": " ".join([name, *args])}))
    return str(folder)


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies, dead but not yet reaped, do not count)."""
    import psutil

    try:
        os.waitpid(pgid, os.WNOHANG)  # reap the wrapper once it ended, when this process started it
    except ChildProcessError:
        pass
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error):
            pass
    return False


def _jobs_table() -> list[dict]:
    """Every job on this host (run on the scheduler): id, state, start, command; oldest first."""
    rows = []
    for folder in sorted(p for p in _jobs().glob("*") if (p / "job.json").is_file()):
        info = json.loads((folder / "job.json").read_text())
        code = folder / "exitcode"
        state = ("cancelled" if (folder / "cancelled").exists() else f"exit {code.read_text().strip()}") \
            if code.exists() else "running" if _group_alive(info["pid"]) else "lost (no exit code)"
        rows.append({"job": folder.name, "state": state, "started": info["started"], "command": info["command"]})
    return rows


async def _cancel(job: str, grace_s: float = CANCEL_GRACE_S) -> str | None:
    """Stop job ``job``'s process group (awaited on the scheduler's loop); what happened, None for an unknown job."""
    folder = _jobs() / job
    if not (folder / "job.json").is_file():
        return None
    if (folder / "exitcode").exists():
        return f"job {job} had already ended"
    pgid = json.loads((folder / "job.json").read_text())["pid"]  # the wrapper leads its own session and group
    (folder / "cancelled").touch()
    sig, deadline = signal.SIGTERM, time.monotonic() + grace_s
    while _group_alive(pgid):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        await asyncio.sleep(0.2)
        if time.monotonic() > deadline:
            sig = signal.SIGKILL
    (folder / "exitcode").write_text(f"{CANCELLED}\n")
    return f"job {job} cancelled: its processes on the scheduler host are gone (exit code {CANCELLED})"


def _read(job: str, offset: int, limit: int = 1 << 20) -> tuple[bytes | None, int | None]:
    """(up to ``limit`` (-1: all) log bytes from ``offset``, exit code or None while running).

    (None, None) for an unknown job. Runs on the scheduler host.
    """
    folder = _jobs() / job
    if not folder.is_dir():
        return None, None
    code = folder / "exitcode"
    code = int(code.read_text()) if code.exists() else None  # read first: a finished job's log is complete
    log = folder / "log"
    data = b""
    if log.exists():
        with open(log, "rb") as fh:
            fh.seek(offset)
            data = fh.read(limit)
    return data, code


def _follow(client, job: str, poll: float = 0.5, limit: int = 1 << 20) -> int:
    """Print a job's log as it grows until it ends; its exit code (``INTERRUPTED`` on Ctrl-C: it keeps running)."""
    try:
        return _print_log(client, job, poll, limit)
    except KeyboardInterrupt:
        cli = f"dask-submit --scheduler {client.scheduler.address}"
        click.echo(f"dask-submit: job {job} keeps running on the cluster; cancel it with `{cli} --cancel {job}`, "
                   f"follow it again with `{cli} --logs {job} --follow`", err=True)
        return INTERRUPTED


def _print_log(client, job: str, poll: float, limit: int) -> int:
    """Print a job's log as it grows (UTF-8 decoded across read boundaries); return its exit code."""
    offset, decoder = 0, codecs.getincrementaldecoder("utf-8")(errors="replace")
    while True:
        data, code = client.run_on_scheduler(_read, job, offset, limit)
        if data is None:
            click.echo(f"dask-submit: no job {job!r} on this scheduler", err=True)
            return UNKNOWN_JOB
        offset, done = offset + len(data), code is not None and len(data) < limit
        click.echo(decoder.decode(data, final=done), nl=False)  # a character split by a read waits for its rest
        if done:
            return code
        if len(data) < limit:
            time.sleep(poll)


def _connect(scheduler: str, timeout: float):
    from distributed import Client
    logging.getLogger("distributed").setLevel(logging.WARNING)  # only the job's own output on stdout/stderr
    try:
        return Client(scheduler, timeout=f"{timeout}s")
    except OSError as exc:
        click.echo(f"dask-submit: cannot reach scheduler {scheduler}: {exc}", err=True)
        sys.exit(UNREACHABLE)


def _run_local(script: str, args: tuple[str, ...]) -> int:
    import dask
    from distributed import LocalCluster

    with (dask.config.set({"distributed.worker.daemon": False}),
          LocalCluster(processes=True, dashboard_address=":0") as cluster):
        click.echo(f"dask-submit: LocalCluster at {cluster.scheduler_address} ({cluster.dashboard_link})", err=True)
        env = os.environ | {"DASK_SCHEDULER_ADDRESS": cluster.scheduler_address}
        return subprocess.call([sys.executable, script, *args], env=env)


@click.command(name="submit", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--scheduler", default=None, help="scheduler address (tcp://host:8786); default: a LocalCluster")
@click.option("--detach", is_flag=True, help="start the job on the cluster and return at once")
@click.option("--logs", "logs_of", metavar="JOB", default=None, help="print the log of a submitted job")
@click.option("--follow", is_flag=True, help="with --logs: keep printing until the job ends")
@click.option("--list", "list_jobs", is_flag=True, help="list the jobs on the scheduler host")
@click.option("--cancel", "cancel_job", metavar="JOB", default=None, help="stop a job and its processes")
@click.option("--connect-timeout", default=10.0, show_default=True, help="seconds to wait for the scheduler")
@click.argument("script", required=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def cli(scheduler, detach, logs_of, follow, list_jobs, cancel_job, connect_timeout, script, args):
    """Run SCRIPT [ARGS] against a Dask cluster (see the module docstring)."""
    if logs_of or list_jobs or cancel_job:
        if not scheduler:
            raise click.UsageError("--logs, --list and --cancel need --scheduler")
        client = _connect(scheduler, connect_timeout)
        sys.exit(_logs(client, logs_of, follow) if logs_of else _list(client) if list_jobs else
                 _cancel_cmd(client, cancel_job))
    if not script or not os.path.isfile(script):
        raise click.UsageError(f"script {script!r}: no such file")
    if not scheduler:
        sys.exit(_run_local(script, args))
    client = _connect(scheduler, connect_timeout)
    job = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    folder = client.run_on_scheduler(_start, job, Path(script).read_text(), Path(script).name, list(args),
                                     os.getcwd())
    click.echo(f"dask-submit: job {job} started on the scheduler host; log at {folder}/log", err=True)
    if detach:
        click.echo(job)
        sys.exit(0)
    sys.exit(_follow(client, job))


def _logs(client, job: str, follow: bool) -> int:
    if follow:
        return _follow(client, job)
    data, code = client.run_on_scheduler(_read, job, 0, -1)
    if data is None:
        click.echo(f"dask-submit: no job {job!r} on this scheduler", err=True)
        return UNKNOWN_JOB
    click.echo(data.decode(errors="replace") + ("" if code is None else f"[dask-submit] exit code {code}\n"), nl=False)
    return 0


def _list(client) -> int:
    rows = client.run_on_scheduler(_jobs_table)
    click.echo(f"{'job':<24}{'state':<22}{'started':<21}command")
    for r in rows:
        click.echo(f"{r['job']:<24}{r['state']:<22}{r['started']:<21}{r['command']}")
    return 0


def _cancel_cmd(client, job: str) -> int:
    said = client.run_on_scheduler(_cancel, job)
    if said is None:
        click.echo(f"dask-submit: no job {job!r} on this scheduler", err=True)
        return UNKNOWN_JOB
    click.echo(said)
    return 0


def main() -> None:
    cli(prog_name="dask-submit")


if __name__ == "__main__":
    main()
