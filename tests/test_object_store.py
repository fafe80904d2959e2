"""The store on a bucket: the same tests against a local root, an S3 root on a real S3 API server, and a file:// URL.

The server is moto's (`moto_server`, from the dev dependencies) on 127.0.0.1, started and stopped by
tests/bucket_fixtures.py; the client finds it the standard way (AWS_ENDPOINT_URL) with throwaway
credentials in the environment. A file:// root goes through the same bucket code on fsspec's local filesystem, as gs://
or az:// would. "Another machine" is a store whose mirror folder ($RNNFLOW_SCRATCH) is empty and
different: all it shares with the first is the root.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pytest

from tasks.store import (
    CHAMPION_LOCK, ENTRY_FILE, MANIFEST_FILE, ArtifactsRootError, ArtifactStore, ChampionError, RemoteRoot, verify_run_files,
)
from tests.bucket_fixtures import CREDENTIALS, new_bucket, s3_endpoint, s3_env  # noqa: F401  (fixtures)
from tests.bucket_fixtures import free_port as _free_port


@pytest.fixture(params=["local", "s3", "file-url"])
def root(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The artifacts root: a folder; s3://BUCKET/team/artifacts; and file:///... (fsspec's local filesystem through
    the bucket code, as gs:// or az:// would go). This machine's mirror in tmp_path/mirror-a."""
    monkeypatch.setenv("RNNFLOW_SCRATCH", str(tmp_path / "mirror-a"))
    if request.param == "local":
        return str(tmp_path / "artifacts")
    if request.param == "file-url":
        return (tmp_path / "shared-store" / "artifacts").as_uri()
    env = request.getfixturevalue("s3_env")
    return f"s3://{new_bucket(env['AWS_ENDPOINT_URL'])}/team/artifacts"


def on_another_machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, root: str) -> ArtifactStore:
    """The same root seen from a process whose mirror is empty (for a local root: the same folder)."""
    monkeypatch.setenv("RNNFLOW_SCRATCH", str(tmp_path / "mirror-b"))
    store = ArtifactStore(root)
    if store.remote is not None:
        assert not store.root.exists(), "a fresh mirror"
    return store


def write_outputs(out: Path) -> dict:
    (out / "sub").mkdir()
    (out / "a.txt").write_text("review text")
    (out / "sub" / "b.bin").write_bytes(bytes(range(256)) * 40)
    return {"rows": 2}


def test_an_entry_made_in_one_place_is_read_whole_from_another(root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    made = ArtifactStore(root).produce("ingest", "k1", write_outputs)
    store = on_another_machine(monkeypatch, tmp_path, root)
    found = store.read_entry("ingest", "k1")
    assert found is not None and found.files == made.files and found.summary == {"rows": 2}
    assert found.file("sub/b.bin").read_bytes() == bytes(range(256)) * 40
    assert found.path.is_relative_to(store.root), "read from this machine's own folder"
    if store.remote is not None:  # the claim, and the files under the version it names (written once, by its writer)
        assert found.objects is not None and found.objects == made.objects
        assert store.remote.files_under("cache/ingest/k1") == sorted([ENTRY_FILE, f"{made.objects}/a.txt", f"{made.objects}/sub/b.bin"])


def test_an_entry_whose_entry_file_is_missing_or_whose_bytes_changed_is_no_entry(root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    first = ArtifactStore(root)
    first.produce("ingest", "k1", write_outputs)
    damaged = first.produce("ingest", "k2", write_outputs)
    if first.remote is None:
        (first.entry_dir("ingest", "k1") / ENTRY_FILE).unlink()
        (first.entry_dir("ingest", "k2") / "a.txt").write_text("changed")
    else:  # what a writer killed between its files and its _entry.json leaves, and a damaged object
        first.remote.delete(f"cache/ingest/k1/{ENTRY_FILE}")
        first.remote.write_bytes(f"cache/ingest/k2/{damaged.objects}/a.txt", b"changed")
    store = on_another_machine(monkeypatch, tmp_path, root)
    assert store.read_entry("ingest", "k1") is None
    assert store.read_entry("ingest", "k2") is None
    store.produce("ingest", "k2", write_outputs)
    assert on_another_machine(monkeypatch, tmp_path / "third", root).read_entry("ingest", "k2") is not None, "recomputed, it is whole again"


def test_a_run_recorded_in_one_place_is_listed_resolved_and_checked_from_another(root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    first = ArtifactStore(root)
    run = first.start_run({"preset": "demo", "model": {"cell": "gru"}}, run_id="20260101T000000000Z-abcd")
    run.record_step(first.produce("ingest", "k1", write_outputs), status="completed", seconds=1.0, config={}, made_by=run.run_id)
    run.finish("completed")
    assert run.location == (f"{root}/runs/20260101T000000000Z-abcd" if first.remote else str(first.run_dir(run.run_id)))

    store = on_another_machine(monkeypatch, tmp_path, root)
    assert [(r["run_id"], r["status"]) for r in store.list_runs()] == [("20260101T000000000Z-abcd", "completed")]
    folder = store.resolve_run("latest")
    assert (folder / "ingest" / "sub" / "b.bin").read_bytes() == bytes(range(256)) * 40
    verify_run_files(folder, json.loads((folder / MANIFEST_FILE).read_text()))  # every sha256 the manifest records
    if store.remote is not None:
        assert store.remote.files_under("runs/20260101T000000000Z-abcd") == sorted([MANIFEST_FILE, "ingest/a.txt", "ingest/sub/b.bin"])
    with pytest.raises(FileExistsError, match="already completed"):  # a finished run is never reopened, whichever machine asks
        store.start_run({}, run_id="20260101T000000000Z-abcd")


def _promote_many(root: str, scratch: str, env: dict[str, str], times: int) -> None:
    """In a process of its own: read the champion, add one to its value, write it back, under the lock."""
    os.environ.update(env, RNNFLOW_SCRATCH=scratch)
    for _ in range(times):
        store = ArtifactStore(root)
        with store.champions.lock():
            pointer = store.champions.read("m") or {"run_id": "20260101T000000000Z-abcd", "value": 0}
            time.sleep(0.01)  # widen the window a lost update would need
            store.champions.write("m", {**pointer, "value": pointer["value"] + 1})


def test_two_processes_promoting_at_once_lose_no_update(root: str, tmp_path: Path):
    env = {name: os.environ[name] for name in ("AWS_ENDPOINT_URL", *CREDENTIALS) if name in os.environ}
    with ProcessPoolExecutor(max_workers=2, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_promote_many, root, str(tmp_path / f"mirror-{n}"), env, 4) for n in range(2)]
        for future in futures:
            future.result(timeout=120)
    assert ArtifactStore(root).champions.read("m")["value"] == 8
    store = ArtifactStore(root)
    if store.remote is not None:
        assert store.remote.read_bytes(CHAMPION_LOCK) is None, "every lock object released"


def test_on_a_bucket_a_champion_replaced_since_it_was_read_is_not_overwritten(s3_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    root = f"s3://{new_bucket(s3_env['AWS_ENDPOINT_URL'])}/a"
    monkeypatch.setenv("RNNFLOW_SCRATCH", str(tmp_path / "one"))
    slow = ArtifactStore(root)
    assert slow.champions.read_all() == {}
    fast = on_another_machine(monkeypatch, tmp_path, root)
    fast.champions.write("m", {"run_id": "20260101T000000000Z-fast", "value": 0.9})
    # slow reads the bucket as it was before fast wrote (a lock taken over from under it): its conditional write must fail
    monkeypatch.setattr(slow.remote, "read_with_tag", lambda rel: (None, None))
    with pytest.raises(ChampionError, match="changed while this run decided"):
        slow.champions.write("m", {"run_id": "20260101T000000000Z-slow", "value": 0.8})
    assert fast.champions.read("m")["run_id"] == "20260101T000000000Z-fast"


def test_on_a_bucket_a_dead_holders_lock_object_expires_and_a_live_ones_is_named(s3_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import tasks.store.lock_object as store_module

    root = f"s3://{new_bucket(s3_env['AWS_ENDPOINT_URL'])}/a"
    monkeypatch.setenv("RNNFLOW_SCRATCH", str(tmp_path / "one"))
    store = ArtifactStore(root)
    store.remote.write_bytes(CHAMPION_LOCK, json.dumps({"owner": "gone-host:123:ab", "expires": time.time() - 1}).encode())
    with store.champions.lock():  # taken over at once
        assert b"gone-host" not in store.remote.read_bytes(CHAMPION_LOCK)
    store.remote.write_bytes(CHAMPION_LOCK, json.dumps({"owner": "busy-host:456:cd", "expires": time.time() + 600}).encode())
    monkeypatch.setattr(store_module, "REMOTE_LOCK_WAIT_SECONDS", 1)
    with pytest.raises(ChampionError, match="held by busy-host:456:cd"):
        with store.champions.lock():
            pass


def test_a_bucket_that_does_not_exist_or_refuses_the_credentials_is_one_sentence(s3_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RNNFLOW_SCRATCH", str(tmp_path / "one"))
    with pytest.raises(ArtifactsRootError, match=r"s3://no-such-bucket-here/x: there is no bucket .no-such-bucket-here. at this endpoint"):
        ArtifactStore("s3://no-such-bucket-here/x").check_writable()
    with pytest.raises(ArtifactsRootError, match="needs gcsfs for gs:// URLs: install it"):
        RemoteRoot("gs://bucket/prefix")


def test_an_endpoint_that_cannot_be_reached_is_named_not_taken_for_a_missing_bucket(tmp_path: Path):
    env = {**os.environ, **CREDENTIALS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{_free_port()}", "AWS_MAX_ATTEMPTS": "1",
           "RNNFLOW_SCRATCH": str(tmp_path / "mirror")}
    done = subprocess.run([str(Path(sys.executable).with_name("rnnflow")), "runs", "--artifacts", "s3://team/nightly"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "Artifacts root s3://team/nightly could not read s3://team/nightly (EndpointConnectionError" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


# --------------------------------------------------------------------------- the flow, the CLI and a Dask sweep on a bucket


@pytest.mark.slow
def test_a_dask_sweep_whose_workers_share_no_folder_leaves_every_point_in_the_bucket(prefect_api, s3_env, tmp_path: Path,
                                                                                      monkeypatch: pytest.MonkeyPatch):
    from flows.sweep import rnnflow_sweep, task_runner
    from tasks.sweep import SWEEP_HTML, parse_grid
    from tests.helpers import tiny_config

    root = f"s3://{new_bucket(s3_env['AWS_ENDPOINT_URL'])}/sweeps-team"
    monkeypatch.setenv("RNNFLOW_SCRATCH", str(tmp_path / "flow"))
    grid = parse_grid(["model.cell=lstm,gru"])
    # One worker process: both points still run outside the flow's process, with none of its folders (the test's point),
    # without a second process importing TensorFlow; tests/test_sweep.py's sweep runs on two.
    folder = Path(rnnflow_sweep.with_options(task_runner=task_runner("dask", workers=1))(grid=grid, config=tiny_config(), artifacts_root=root))

    remote, flow_store = RemoteRoot(root), ArtifactStore(root)
    sweep = json.loads(remote.read_bytes(f"sweeps/{folder.name}/{MANIFEST_FILE}"))
    assert sweep["status"] == "completed" and len(sweep["points"]) == 2
    assert SWEEP_HTML in remote.files_under(f"sweeps/{folder.name}")
    for point in sweep["points"]:
        manifest = json.loads(remote.read_bytes(f"runs/{point['run_id']}/{MANIFEST_FILE}"))
        assert manifest["status"] == "completed", manifest.get("error")
        assert {"train/model.keras", "report/report.html", "evaluate/metrics.json"} <= set(remote.files_under(f"runs/{point['run_id']}"))
    assert len(remote.children("cache/train")) == 2, "both points' training entries went to the bucket"
    assert not (flow_store.cache_dir / "train").exists(), "the flow's own folder never saw a training output: the workers had their own"


@pytest.mark.slow
def test_a_run_on_a_bucket_is_used_and_reused_from_a_machine_with_an_empty_mirror(prefect_api, s3_env, tmp_path: Path,
                                                                                   monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    from flows.cli import main
    from tests.helpers import tiny_cli_args

    root = f"s3://{new_bucket(s3_env['AWS_ENDPOINT_URL'])}/nightly"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RNNFLOW_SCRATCH", str(tmp_path / "trainer"))
    assert main(["run", *tiny_cli_args(), "--artifacts", root]) == 0
    run_url = capsys.readouterr().out.strip().splitlines()[-1]
    assert run_url.startswith(f"{root}/runs/"), "the run folder is named where it lives"
    run_id = run_url.rsplit("/", 1)[-1]
    remote = RemoteRoot(root)
    files = remote.files_under(f"runs/{run_id}")
    for name in (MANIFEST_FILE, "run.log", "train/model.keras", "encode/X_train.npy", "report/report.html", "promote/decision.json"):
        assert name in files, name
    assert json.loads(remote.read_bytes("champion.json"))["models"]["synthetic"]["run_id"] == run_id, "the first run became champion, in the bucket"

    monkeypatch.setenv("RNNFLOW_SCRATCH", str(tmp_path / "laptop"))  # another machine: nothing of the trainer's folder
    assert main(["runs", "--artifacts", root]) == 0
    assert f"{run_id} completed" in " ".join(capsys.readouterr().out.split())
    assert main(["champion", "--artifacts", root]) == 0
    assert f"champion {run_id}" in " ".join(capsys.readouterr().out.split())
    assert main(["predict", "--artifacts", root, "--run", "champion", "a wonderful moving film"]) == 0
    assert "a wonderful moving film" in capsys.readouterr().out
    assert main(["step", "evaluate", "--run", run_id, "--artifacts", root]) == 0
    step_url = capsys.readouterr().out.strip().splitlines()[-1]
    step_manifest = json.loads(remote.read_bytes(f"{step_url[len(root) + 1:]}/{MANIFEST_FILE}"))
    assert step_manifest["status"] == "completed" and step_manifest["derived_from"] == run_id
    assert step_manifest["steps"]["evaluate"]["status"] == "completed"

    assert main(["run", *tiny_cli_args(), "--artifacts", root]) == 0  # the same configuration, from the laptop
    again = capsys.readouterr().out.strip().splitlines()[-1].rsplit("/", 1)[-1]
    steps = json.loads(remote.read_bytes(f"runs/{again}/{MANIFEST_FILE}"))["steps"]
    assert {name: steps[name]["status"] for name in ("ingest", "validate", "encode", "train", "evaluate")} == dict.fromkeys(
        ("ingest", "validate", "encode", "train", "evaluate"), "cached"), "the trainer's entries, from the bucket"
    assert steps["train"]["key"] == json.loads(remote.read_bytes(f"runs/{run_id}/{MANIFEST_FILE}"))["steps"]["train"]["key"]
