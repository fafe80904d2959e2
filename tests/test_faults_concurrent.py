"""Real processes at once: two runs sharing one cache, and a served deployment triggered through the Prefect API.

Split from tests/test_faults.py (a run killed, a run terminated) so that, with `--dist loadscope`, the two modules'
minutes of `rnnflow` processes can run on two workers side by side."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tasks.store import ArtifactStore
from tests.helpers import cli_command as _cli
from tests.helpers import session_api_env as _env
from tests.helpers import tiny_cli_args

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # real `rnnflow` processes, each importing and running the whole flow


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
