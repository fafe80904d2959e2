"""Real processes: a run killed mid-step, two runs at once, and a served deployment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.store import ArtifactStore
from tests.helpers import step_statuses as _statuses
from tests.helpers import tiny_cli_args

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # real `rnnflow` processes, each importing and running the whole flow


def _env() -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ)
    env["PREFECT_API_URL"] = PREFECT_API_URL.value()  # the test harness's server
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "flows.cli", *args]


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_run_killed_during_train_leaves_the_cache_whole(prefect_api, tmp_path: Path, capsys):
    from flows.cli import main

    root = tmp_path / "artifacts"
    args = [*tiny_cli_args("train.epochs=60", "train.patience=60"), "--artifacts", str(root)]
    victim = subprocess.Popen(_cli("run", *args), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    train_cache = root / "cache" / "train"
    try:
        _wait_for(lambda: train_cache.is_dir() and any(train_cache.glob(".*.partial")), 240, "training to start")
        time.sleep(1.0)
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    assert not [p for p in train_cache.iterdir() if not p.name.startswith(".")], "no train entry was published"

    (killed,) = (root / "runs").iterdir()
    assert json.loads((killed / "manifest.json").read_text())["status"] == "running", "the killed run shows it never finished"

    # The next run (here, in this process: the kill is the victim's) finds the cache whole and reuses it.
    capsys.readouterr()
    assert main(["run", *tiny_cli_args("train.epochs=60", "train.patience=1"), "--artifacts", str(root)]) == 0
    folder = Path(capsys.readouterr().out.strip().splitlines()[-1])
    statuses = _statuses(folder)
    assert statuses["ingest"] == statuses["validate"] == statuses["encode"] == "cached"
    assert statuses["train"] == "completed"

    # The run list shows both: the killed one as failed (its process is gone), with no test figure.
    assert main(["runs", "--artifacts", str(root)]) == 0
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert lines[killed.name][1:3] == ["failed", "(killed)"] and lines[killed.name][-1] == "-"
    assert lines[folder.name][1] == "completed"


def _children(pid: int) -> dict[int, str]:
    """pid -> command line of the processes whose parent is pid (Linux /proc)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_sigterm_ends_a_run_and_the_temporary_prefect_server_with_it(tmp_path: Path):
    """`kill PID` on a run with no Prefect server configured: the server Prefect started for it goes too."""
    root = tmp_path / "artifacts"
    env = {k: v for k, v in _env().items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")  # its own temporary server and database
    args = [*tiny_cli_args("train.epochs=60", "train.patience=60"), "--artifacts", str(root)]
    victim = subprocess.Popen(_cli("run", *args), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: any(root.glob("cache/train/.*.partial")), 300, "training to start")
        servers = [pid for pid, command in _children(victim.pid).items() if "uvicorn" in command]
        assert servers, "the run started its own Prefect server"
        victim.send_signal(signal.SIGTERM)
        _, stderr = victim.communicate(timeout=120)
    finally:
        victim.kill()
    assert victim.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "rnnflow: terminated" in stderr
    _wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in servers), 30, "the Prefect server to stop")
    (folder,) = (root / "runs").iterdir()
    assert json.loads((folder / "manifest.json").read_text())["status"] == "failed", "the run is marked failed, not left running"


def test_two_runs_at_once_both_finish_sharing_the_cache(prefect_api, tmp_path: Path):
    root = tmp_path / "artifacts"
    args = _cli("run", *tiny_cli_args(), "--artifacts", str(root))  # the tiny configuration: train.epochs=2
    runs = [subprocess.Popen(args, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-2000:] for _, err in results]
    folders = {Path(out.strip().splitlines()[-1]) for out, _ in results}
    assert len(folders) == 2, "each run has its own folder"
    store = ArtifactStore(root)
    for step_dir in store.cache_dir.iterdir():
        entries = [p for p in step_dir.iterdir() if not p.name.startswith(".")]
        # Every cached step, the report included, is computed once and shared (promote is never cached).
        assert len(entries) == 1, f"{step_dir.name} computed once"
        for entry in entries:
            assert store.read_entry(step_dir.name, entry.name) is not None, f"{step_dir.name} entry intact"
    manifests = [json.loads((folder / "manifest.json").read_text()) for folder in folders]
    assert [m["status"] for m in manifests] == ["completed", "completed"]
    # The champion pointer is compared and swapped under a lock: one run is first, the other ties and loses.
    assert sorted(m["promotion"]["outcome"] for m in manifests) == ["not_promoted", "promoted"]
    assert store.champions.read("synthetic")["run_id"] in {f.name for f in folders}


def test_a_served_deployment_runs_when_triggered(prefect_api, tmp_path: Path):
    from prefect.deployments import run_deployment

    root = tmp_path / "artifacts"
    # The server looks for runs to start every second, not Prefect's default 10: the wait is all this changes.
    env = {**_env(), "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    server = subprocess.Popen(
        _cli("serve", *tiny_cli_args("train.epochs=1"), "--cron", "0 3 * * *", "--name", "rnnflow-test", "--artifacts", str(root)),
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        state = None
        deadline = time.monotonic() + 120
        while state is None:
            try:
                flow_run = run_deployment("rnnflow/rnnflow-test", timeout=400, poll_interval=1)
                state = flow_run.state
            except Exception:  # the deployment is not registered yet
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(2)
        assert state.is_completed(), state
        (folder,) = (root / "runs").iterdir()
        assert json.loads((folder / "manifest.json").read_text())["status"] == "completed"
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
