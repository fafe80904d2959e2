"""The champion lock object on a bucket root (issue 29): one that is not a lock, or whose expiry lies too far ahead,
neither stops promotions for good nor makes a promote wait and then misstate when it expires.

Run on a file:// root (the bucket code on fsspec's local filesystem) and on moto's S3 server, as
tests/test_object_store.py does; its minimal fixture is copied here rather than imported from a test module.
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tasks.store.lock_object as champions_module  # the lock object's timings (was tasks.store.champions)
from tasks.store import CHAMPION_LOCK, ArtifactStore, ChampionError

MOTO_SERVER = Path(sys.executable).with_name("moto_server")
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "rnnflow-test", "AWS_SECRET_ACCESS_KEY": "rnnflow-test", "AWS_DEFAULT_REGION": "us-east-1"}
POINTER = {"run_id": "20260101T000000000Z-abcd", "value": 0.9}


@pytest.fixture(scope="module")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1 for this module: its URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    else:
        server.kill()
        pytest.fail("moto_server did not start listening within 30 s")
    yield f"http://127.0.0.1:{port}"
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture(params=["file-url", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ArtifactStore:
    monkeypatch.setenv("RNNFLOW_SCRATCH", str(tmp_path / "mirror"))
    if request.param == "file-url":
        return ArtifactStore((tmp_path / "bucket" / "artifacts").as_uri())
    import boto3

    endpoint = request.getfixturevalue("s3_endpoint")
    for name, value in {"AWS_ENDPOINT_URL": endpoint, **CREDENTIALS}.items():
        monkeypatch.setenv(name, value)
    bucket = f"rnnflow-{secrets.token_hex(4)}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="rnnflow-test", aws_secret_access_key="rnnflow-test",
                 region_name="us-east-1").create_bucket(Bucket=bucket)
    return ArtifactStore(f"s3://{bucket}/team/artifacts")


def _promote(store: ArtifactStore) -> None:
    with store.champions.lock():
        store.champions.write("m", POINTER)


@pytest.mark.parametrize("damaged", [b'{"owner": "ghost", "expires": "soon"}', b"[1, 2]", b'{"expires": 1e30}', b"not json",
                                     b'{"owner": "ghost", "expires": NaN}', b'{"owner": "ghost", "expires": true}'])
def test_a_lock_object_that_is_not_a_lock_is_taken_over_with_one_line_naming_it(
    store, damaged: bytes, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(champions_module, "REMOTE_LOCK_WAIT_SECONDS", 3)  # before: a far or NaN expiry waited it out, then failed
    store.remote.write_bytes(CHAMPION_LOCK, damaged)
    with caplog.at_level(logging.WARNING):
        _promote(store)  # before: ValueError / AttributeError tracebacks, on this promotion and every later one
    assert store.champions.read("m")["run_id"] == POINTER["run_id"]
    assert store.remote.read_bytes(CHAMPION_LOCK) is None, "released: the next promotion finds no lock"
    warnings = [record.getMessage() for record in caplog.records if "champion lock" in record.getMessage()]
    assert len(warnings) == 1, warnings
    assert f"{store.where(store.champions.lock_file)} held" in warnings[0] and "taken over as expired" in warnings[0]
    _promote(store)  # and the next one too


def test_a_lock_expiring_far_ahead_is_believed_only_for_a_locks_lifetime(store, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(champions_module, "REMOTE_LOCK_SECONDS", 1)
    monkeypatch.setattr(champions_module, "REMOTE_LOCK_WAIT_SECONDS", 20)
    store.remote.write_bytes(CHAMPION_LOCK, json.dumps({"owner": "clock-ahead:1:ab", "expires": 4102444800.0}).encode())  # 2100
    started = time.monotonic()
    _promote(store)  # before: waited the whole 20 s and gave up
    assert time.monotonic() - started < 10
    assert store.champions.read("m")["run_id"] == POINTER["run_id"]


def test_a_promote_that_gives_up_waiting_says_truly_when_the_lock_is_taken_over(store, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(champions_module, "REMOTE_LOCK_WAIT_SECONDS", 0.5)
    lock = json.dumps({"owner": "busy-host:456:cd", "expires": 4102444800.0}).encode()
    store.remote.write_bytes(CHAMPION_LOCK, lock)
    with pytest.raises(ChampionError) as raised:
        _promote(store)
    message = str(raised.value)
    assert "\n" not in message and "held by busy-host:456:cd" in message
    assert "after 300 s" not in message, "the old message promised an expiry the lock did not have"
    seconds = int(message.rsplit("taken over as expired in ", 1)[1].split(" s")[0])
    assert 295 <= seconds <= champions_module.REMOTE_LOCK_SECONDS
    assert store.where(store.champions.lock_file) in message
    assert store.remote.read_bytes(CHAMPION_LOCK) == lock, "a live-looking lock is left alone"


def test_a_live_lock_within_its_lifetime_is_still_waited_for(store, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(champions_module, "REMOTE_LOCK_WAIT_SECONDS", 0.5)
    store.remote.write_bytes(CHAMPION_LOCK, json.dumps({"owner": "busy-host:1:ab", "expires": time.time() + 120}).encode())
    with pytest.raises(ChampionError, match=r"taken over as expired in 1[12]\d s"):
        _promote(store)
