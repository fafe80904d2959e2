"""A real S3 API on 127.0.0.1 for the bucket tests: moto's server (`moto_server`, from the dev dependencies), started
once per test module and stopped after it, and throwaway credentials the client finds the standard way
(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...). Test modules import the fixtures from here (pytest then finds them)."""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

MOTO_SERVER = Path(sys.executable).with_name("moto_server")
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "rnnflow-test", "AWS_SECRET_ACCESS_KEY": "rnnflow-test", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_listening(port: int, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def s3_endpoint() -> str:
    """A moto S3 server on 127.0.0.1 for this module: its URL."""
    port = free_port()
    server = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not wait_listening(port):
        server.kill()
        pytest.fail("moto_server did not start listening within 30 s")
    yield f"http://127.0.0.1:{port}"
    server.terminate()
    server.wait(timeout=10)


def new_bucket(endpoint: str) -> str:
    import boto3

    name = f"rnnflow-{secrets.token_hex(4)}"
    boto3.client("s3", endpoint_url=endpoint, **{k.lower(): v for k, v in CREDENTIALS.items() if k != "AWS_DEFAULT_REGION"},
                 region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {"AWS_ENDPOINT_URL": s3_endpoint, **CREDENTIALS}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env
