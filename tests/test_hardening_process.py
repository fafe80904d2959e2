"""Issue 18, a hostile user's machine: a full disk, a killed parent, a busy CPU, noisy tracebacks, stray files."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import pytest

from tasks.config import EncodeConfig
from tasks.encode import NotEnoughSpaceError, encode_reviews
from tests.helpers import tiny_cli_args

REPO = Path(__file__).resolve().parent.parent
RNNFLOW = [sys.executable, "-m", "flows.cli"]
Usage = namedtuple("Usage", "total used free")



def _leftovers(folder: Path) -> list[str]:
    """Half-written files: atomic_path's hidden .tmp siblings, or arrays that appeared at all."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp") or p.suffix == ".npy")


# --------------------------------------------------------------------------- 1. a full disk


def test_encode_refuses_a_disk_too_small_with_one_sentence_and_leaves_nothing_half_written(tmp_path, ingested, monkeypatch):
    out = tmp_path / "encode"
    out.mkdir()
    monkeypatch.setattr("tasks.encode.shutil.disk_usage", lambda path: Usage(10**9, 10**9 - 12_345, 12_345))
    with pytest.raises(NotEnoughSpaceError) as caught:
        encode_reviews(EncodeConfig(num_words=50, max_len=40), ingested, out)
    message = str(caught.value)
    assert message.startswith(f"Not enough free space in {out} for encode's arrays: ")
    assert "bytes needed, 12,345 free; free some space or point --artifacts at a larger disk." in message
    needed = int(message.split(": ", 1)[1].split(" bytes")[0].replace(",", ""))
    assert needed > 120 * 40 * 4, "at least the X arrays of every split"
    assert len(message.splitlines()) == 1 and "Errno" not in message
    assert _leftovers(out) == []


def test_a_disk_that_fills_while_encode_writes_is_the_same_sentence(tmp_path, ingested, monkeypatch):
    out = tmp_path / "encode"
    out.mkdir()

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("tasks.encode.os.posix_fallocate", full)
    with pytest.raises(NotEnoughSpaceError, match=r"^Not enough free space in .* for encode's arrays: [\d,]+ bytes needed, [\d,]+ free; free some space"):
        encode_reviews(EncodeConfig(num_words=50, max_len=40), ingested, out)
    assert _leftovers(out) == []


def test_a_plain_write_failing_with_enospc_is_the_same_sentence(tmp_path, ingested, monkeypatch):
    out = tmp_path / "encode"
    out.mkdir()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("tasks.encode.pq.ParquetWriter", full)
    with pytest.raises(NotEnoughSpaceError, match=r"^Not enough free space in .*: the disk filled while writing, [\d,]+ free; free some space"):
        encode_reviews(EncodeConfig(num_words=50, max_len=40), ingested, out)
    assert _leftovers(out) == []


# --------------------------------------------------------------------------- 2-5. real `rnnflow run` processes, no Prefect API set


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory) -> Path:
    """One artifacts root for the CLI runs here: the first migrates the empty Prefect database the others copy."""
    return tmp_path_factory.mktemp("artifacts")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), TMPDIR=str(tmp_path / "tmp"), PYTHONUNBUFFERED="1",
               PYTHONPATH=str(REPO), **extra)
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return env


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has exited; only its parent's wait is missing


def _descendants(pid: int) -> dict[int, str]:
    found, parents = {}, {pid}
    for _ in range(3):
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                child = int(stat.parent.name)
                if int(fields[1]) in parents and child not in found:
                    found[child] = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, IndexError, ValueError):
                continue
        parents |= set(found)
    return found


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux's")
def test_the_temporary_prefect_server_dies_with_a_killed_run(tmp_path, shared_root):
    args = ["run", *tiny_cli_args("train.epochs=1"), "--artifacts", str(shared_root)]
    victim = subprocess.Popen([*RNNFLOW, *args], cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, servers = time.monotonic() + 240, []
        while not servers and time.monotonic() < deadline and victim.poll() is None:
            servers = [pid for pid, command in _descendants(victim.pid).items() if "uvicorn" in command]
            time.sleep(0.2)
        assert servers, "the run started Prefect's temporary server"
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in servers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in servers), "the server went with its parent"


@pytest.mark.slow
def test_a_temporary_server_too_slow_to_start_is_one_sentence_and_exit_1(tmp_path, shared_root):
    env = _env(tmp_path, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="1")
    done = subprocess.run([*RNNFLOW, "run", "--preset", "demo", "--artifacts", str(shared_root)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    assert (
        "rnnflow: error: Prefect's temporary server did not start within 1 s (the machine is busy): start one with "
        "`prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api, or raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS."
    ) in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_the_startup_timeout_applies_from_any_working_folder(tmp_path):
    code = "import flows.cli; from prefect.settings import get_current_settings as s; print(s().server.ephemeral.startup_timeout_seconds)"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "120", done.stderr[-2000:]


@pytest.mark.slow
def test_bad_input_prints_its_sentence_without_tracebacks_and_keeps_them_in_run_log(tmp_path, shared_root):
    table = tmp_path / "reviews.csv"  # a missing column is refused before the flow starts (tests/test_first_hour.py): an empty text is not
    table.write_text('text,label\n"a good film",1\n,0\n')
    args = ["run", "--preset", "demo", "--set", "data.source=table", "--set", f"data.path={table}", "--artifacts", str(shared_root)]
    # PREFECT_API_URL cleared the shell's way (`export PREFECT_API_URL=`) is unset: before flows/__init__.py said so,
    # Prefect took the empty string as an address and its events client logged a traceback for every event.
    env = _env(tmp_path, PREFECT_API_URL="")
    done = subprocess.run([*RNNFLOW, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 1, done.stderr[-2000:]
    sentence = f"{table} has 1 missing or empty texts in column 'text', the first at row 2: drop or fill those rows, or leave them out with --set data.incomplete_rows=drop."
    assert f"rnnflow: step ingest failed: {sentence}" in done.stderr
    assert (done.stdout + done.stderr).count(sentence) == 1, "printed once, by rnnflow, not by each layer of Prefect's engine"
    assert "Traceback (most recent call last)" not in done.stderr + done.stdout
    folder = Path(done.stdout.strip().splitlines()[-1])
    assert "Traceback (most recent call last)" in (folder / "run.log").read_text(), "the full traceback is kept in the run folder"
    # 5. Prefect's temporary server kept no database in PREFECT_HOME, nor its per-run copy in the temp folder.
    assert not (tmp_path / "prefect-home" / "prefect.db").exists()
    assert not list((tmp_path / "tmp").glob("rnnflow-prefect-*"))
    from flows.prefect_server import empty_database_path
    import prefect

    assert empty_database_path(prefect.__version__).is_file(), "the empty database the next runs copy"


@pytest.mark.slow
def test_a_failed_download_leaves_no_empty_data_folder(tmp_path, shared_root):
    url = "http://127.0.0.1:9/aclImdb_v1.tar.gz"  # the discard port: refused at once
    args = ["run", "--preset", "demo", "--set", "data.source=imdb", "--set", f"data.path={url}", "--set", "data.retries=0", "--artifacts", str(shared_root)]
    done = subprocess.run([*RNNFLOW, *args], cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=400)
    assert done.returncode == 1, done.stderr[-2000:]
    assert f"rnnflow: step ingest failed: Could not download {url}" in done.stderr
    assert "Traceback (most recent call last)" not in done.stderr + done.stdout
    assert not (tmp_path / "data").exists()


SPAWN_THEN = """
import sys
from flows.prefect_server import _early, spawn_temporary_server, start_temporary_server
spawn_temporary_server()
print(_early["process"].pid, flush=True)
if sys.argv[1] == "adopt":
    from prefect.server.api.server import SubprocessASGIServer
    url = start_temporary_server()
    print(SubprocessASGIServer._instances[None].server_process.pid, url, flush=True)
    spawn_temporary_server()  # a second command in this process: the running server serves it, nothing is spawned
    print(not _early, flush=True)
else:
    raise SystemExit(3)  # a command that fails after the spawn, before the server is adopted
"""


@pytest.mark.slow
@pytest.mark.parametrize("then", ["adopt", "fail"])
def test_the_server_spawned_before_the_imports_is_the_one_used_or_stopped_at_exit(tmp_path, then):
    """prepare_prefect spawns Prefect's temporary server before importing the flow, so it boots meanwhile: that very
    process answers the run, and a command that fails before adopting it leaves no server and no database copy."""
    import httpx

    env = _env(tmp_path)
    done = subprocess.run([sys.executable, "-c", SPAWN_THEN, then], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    lines = done.stdout.split()
    spawned = int(lines[0])
    if then == "adopt":
        assert done.returncode == 0, done.stderr[-2000:]
        assert int(lines[1]) == spawned and lines[2].startswith("http://127.0.0.1:") and lines[3] == "True"
        with pytest.raises(httpx.ConnectError):
            httpx.get(lines[2] + "/health", timeout=5)  # stopped at exit, with the command
    else:
        assert done.returncode == 3, done.stderr[-2000:]
    assert not _alive(spawned)
    assert not list((tmp_path / "tmp").glob("rnnflow-prefect-*"))
