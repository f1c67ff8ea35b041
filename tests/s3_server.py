"""An S3-compatible object store on 127.0.0.1 for the storage tests: moto's server, started as its own process.

It is real HTTP S3 (pyarrow's S3 client talks to it as to any endpoint), empty at start, and gone when the context
ends. The credentials are moto's: any key is accepted.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from conftest import free_port

BUCKET = "fieldkit-test"


@contextmanager
def s3_server() -> Iterator[dict[str, str]]:
    """Start the server and its bucket; yields the environment a client (this process, a Ray node) needs."""
    import urllib.request

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": endpoint,  # pyarrow 26 honours it, as boto3 and the AWS CLI do
        "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata lookups for credentials
    }
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=1)
                break
            except OSError:
                assert server.poll() is None, "moto server exited at start"
                assert time.monotonic() < deadline, "moto server did not answer within 30 s"
                time.sleep(0.2)
        request = urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT")  # create the bucket
        urllib.request.urlopen(request, timeout=10)
        yield env
    finally:
        server.terminate()
        server.wait(timeout=10)


@contextmanager
def client_env(env: dict[str, str]) -> Iterator[None]:
    """This process's environment with `env` set, restored afterwards."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
