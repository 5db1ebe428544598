"""A real S3-compatible server for object-store tests: ``moto_server`` on 127.0.0.1, one per module."""
from __future__ import annotations

import socket
import subprocess
import sys
import time

import boto3
import pytest

from trainer.host import free_port

BUCKET = "gigpo-runs"  # a valid S3 bucket name


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory):
    """``http://127.0.0.1:PORT`` of a running moto server with the bucket ``BUCKET``; stopped after the module."""
    port, log = free_port(), tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "w") as out:  # a file, not a pipe: the server logs every request
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                  stdout=out, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, f"moto_server exited: {log.read_text()}"
                assert time.monotonic() < deadline, "moto_server did not listen within 60 s"
                time.sleep(0.1)
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                     aws_secret_access_key="test").create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture
def s3_run(moto_endpoint, monkeypatch, tmp_path) -> str:
    """A fresh run URI ``s3://BUCKET/<test>`` on the moto server; boto3 and pyarrow (here and in child
    processes) reach it through the ``AWS_*`` environment."""
    for key, value in {"AWS_ENDPOINT_URL": moto_endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(key, value)
    return f"s3://{BUCKET}/{tmp_path.name}"
