"""Real processes: a run killed mid-step, and a run ended by SIGTERM. Two runs at once and a served deployment are in
tests/test_faults_concurrent.py: with `--dist loadscope` the two modules can run on two workers side by side."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import cli_command as _cli
from tests.helpers import session_api_env as _env
from tests.helpers import step_statuses as _statuses
from tests.helpers import tiny_cli_args
from tests.helpers import wait_for as _wait_for

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # real `rnnflow` processes, each importing and running the whole flow


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
