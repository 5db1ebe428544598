"""``dask-submit``: run a driver script against a Dask cluster.

    dask-submit pipeline/round.py --config configs/local.yaml        # LocalCluster, follow the log
    dask-submit --scheduler tcp://host:8786 pipeline/round.py ...    # on the cluster's scheduler host
    dask-submit --scheduler tcp://host:8786 --detach pipeline/round.py ...   # print the job id, return
    dask-submit --scheduler tcp://host:8786 --logs JOB [--follow]    # a job's log (and exit code)

Also available as ``dask submit`` (the ``dask_cli`` entry-point group).

With ``--scheduler`` the script is shipped to the scheduler's host and started
there as a detached process whose ``DASK_SCHEDULER_ADDRESS`` points at the
scheduler, so ``distributed.Client()`` in the script connects to the cluster.
It survives the submitting terminal; its log and exit code stay on the
scheduler host under ````~/.dask-submit/JOB`` (or ``$DASK_SUBMIT_HOME/JOB``). Without ``--scheduler`` a
LocalCluster (non-daemonic workers, so tasks may start processes) is started
and the script runs against it here.

Exit codes: the script's own when followed to its end; 0 when detached;
2 for usage errors; 3 when the scheduler cannot be reached; 4 for an unknown job.
"""
from __future__ import annotations

import codecs
import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import click

UNREACHABLE, UNKNOWN_JOB = 3, 4


def _jobs() -> Path:
    """Where jobs keep their script, log and exit code on the scheduler host."""
    return Path(os.environ.get("DASK_SUBMIT_HOME", "~/.dask-submit")).expanduser()


def _start(job: str, source: str, name: str, args: list[str], cwd: str, dask_scheduler=None) -> str:
    """Start the script as a detached process on this host (run on the scheduler); return its job dir."""
    folder = _jobs() / job
    folder.mkdir(parents=True)
    script = folder / name
    script.write_text(source)
    env = os.environ | {"DASK_SCHEDULER_ADDRESS": dask_scheduler.address, "PYTHONUNBUFFERED": "1"}
    wrapper = '"$@" > "$LOG" 2>&1; echo $? > "$CODE.tmp" && mv "$CODE.tmp" "$CODE"'
    subprocess.Popen(["sh", "-c", wrapper, "sh", sys.executable, str(script), *args],
                     cwd=cwd if os.path.isdir(cwd) else str(folder), start_new_session=True,
                     env=env | {"LOG": str(folder / "log"), "CODE": str(folder / "exitcode")},
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return str(folder)


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

    with dask.config.set({"distributed.worker.daemon": False}), LocalCluster(processes=True, dashboard_address=":0") as cluster:
        click.echo(f"dask-submit: LocalCluster at {cluster.scheduler_address} ({cluster.dashboard_link})", err=True)
        env = os.environ | {"DASK_SCHEDULER_ADDRESS": cluster.scheduler_address}
        return subprocess.call([sys.executable, script, *args], env=env)


@click.command(name="submit", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--scheduler", default=None, help="scheduler address (tcp://host:8786); default: a LocalCluster")
@click.option("--detach", is_flag=True, help="start the job on the cluster and return at once")
@click.option("--logs", "logs_of", metavar="JOB", default=None, help="print the log of a submitted job")
@click.option("--follow", is_flag=True, help="with --logs: keep printing until the job ends")
@click.option("--connect-timeout", default=10.0, show_default=True, help="seconds to wait for the scheduler")
@click.argument("script", required=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def cli(scheduler, detach, logs_of, follow, connect_timeout, script, args):
    """Run SCRIPT [ARGS] against a Dask cluster (see the module docstring)."""
    if logs_of:
        if not scheduler:
            raise click.UsageError("--logs needs --scheduler")
        client = _connect(scheduler, connect_timeout)
        if follow:
            sys.exit(_follow(client, logs_of))
        data, code = client.run_on_scheduler(_read, logs_of, 0, -1)
        if data is None:
            click.echo(f"dask-submit: no job {logs_of!r} on this scheduler", err=True)
            sys.exit(UNKNOWN_JOB)
        click.echo(data.decode(errors="replace") + ("" if code is None else f"[dask-submit] exit code {code}\n"),
                   nl=False)
        sys.exit(0)
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


def main() -> None:
    cli(prog_name="dask-submit")


if __name__ == "__main__":
    main()
