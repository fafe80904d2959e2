"""Issue 29, the bucket cases: several machines on one bucket, damaged and deleted runs there, an endpoint that
stops answering, and a root URL that names no bucket.

"A machine" is a store whose mirror folder ($RNNFLOW_SCRATCH) is its own: all machines share is the bucket,
an S3 API on 127.0.0.1 (moto's server, tests/bucket_fixtures.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import tasks.store.remote as remote_module
from flows.cli import main
from tasks.store import ENTRY_FILE, MANIFEST_FILE, ArtifactsRootError, ArtifactStore, BucketStorage, ManifestError, RemoteRoot, StepOutput
from tests.bucket_fixtures import CREDENTIALS, free_port, new_bucket, s3_endpoint, s3_env  # noqa: F401  (fixtures)
from tests.helpers import tiny_cli_args

REPO = Path(__file__).resolve().parent.parent
RNNFLOW = Path(sys.executable).with_name("rnnflow")
RUN_A, RUN_B = "20260101T000000000Z-aaaa", "20260101T000000001Z-bbbb"


def machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, root: str, name: str) -> ArtifactStore:
    """The root as seen from a machine whose mirror is tmp_path/<name>."""
    monkeypatch.setenv("RNNFLOW_SCRATCH", str(tmp_path / name))
    return ArtifactStore(root)


def outputs_of(who: str):
    """A step's work that writes what a non-deterministic step does (validate's Data Docs carry a time): other bytes per writer."""
    def work(out: Path) -> dict:
        (out / "docs").mkdir()
        (out / "docs" / "index.html").write_text(f"<p>checked by {who} at {time.time_ns()}</p>")
        (out / "validation.json").write_text(json.dumps({"passed": True, "by": who}))
        return {"by": who}
    return work


def mismatches(remote: RemoteRoot, run_id: str) -> tuple[int, list[str]]:
    """Every file a run's manifest (the bucket's) records, checked in the bucket: (files checked, those missing or differing)."""
    manifest = json.loads(remote.read_bytes(f"runs/{run_id}/{MANIFEST_FILE}"))
    checked, wrong = 0, []
    for step, record in manifest["steps"].items():
        for name, digest in (record.get("outputs") or {}).items():
            data = remote.read_bytes(f"runs/{run_id}/{record.get('dir') or step}/{name}")
            checked += 1
            if data is None or hashlib.sha256(data).hexdigest() != digest:
                wrong.append(f"{step}/{name}")
    return checked, wrong


def record_run(store: ArtifactStore, run_id: str, output: StepOutput) -> None:
    run = store.start_run({"preset": "demo", "model": {"cell": "gru"}}, run_id=run_id)
    run.record_step(output, status="cached" if output.reused else "completed", seconds=1.0, config={}, made_by=output.made_by)
    run.finish("completed")


def one_error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# --------------------------------------------------------------------------- 1. two machines, one bucket


def test_two_machines_computing_one_entry_at_once_keep_every_run_file_as_recorded(s3_env, tmp_path: Path, monkeypatch):
    root = f"s3://{new_bucket(s3_env['AWS_ENDPOINT_URL'])}/team"
    a = machine(monkeypatch, tmp_path, root, "a")
    b = machine(monkeypatch, tmp_path, root, "b")
    made: dict[str, StepOutput] = {}

    def a_works_while_b_finishes(out: Path) -> dict:  # both miss, both compute; b's claim lands while a is still working
        made["b"] = b.produce("validate", "k", outputs_of("b"), made_by=RUN_B)
        return outputs_of("a")(out)

    made["a"] = a.produce("validate", "k", a_works_while_b_finishes, made_by=RUN_A)
    assert not made["b"].reused and made["b"].made_by == RUN_B, "the first claim wins"
    assert made["a"].reused and made["a"].made_by == RUN_B and made["a"].files == made["b"].files, "the later one takes the winner's"
    assert made["a"].file("docs/index.html").read_bytes() == made["b"].file("docs/index.html").read_bytes(), "a's mirror re-linked"
    assert a.remote.files_under("cache/validate/k") == sorted(
        [ENTRY_FILE, f"{made['b'].objects}/docs/index.html", f"{made['b'].objects}/validation.json"]), "a's own upload discarded"

    record_run(a, RUN_A, made["a"])
    record_run(b, RUN_B, made["b"])
    for run_id in (RUN_A, RUN_B):
        checked, wrong = mismatches(a.remote, run_id)
        assert checked == 2 and wrong == [], f"{run_id}: {wrong}"
    third = machine(monkeypatch, tmp_path, root, "c")
    assert third.read_entry("validate", "k").files == made["b"].files


def test_a_refresh_replaces_the_bucket_entry_and_runs_made_from_the_old_one_stay_whole(s3_env, tmp_path: Path, monkeypatch):
    root = f"s3://{new_bucket(s3_env['AWS_ENDPOINT_URL'])}/team"
    a = machine(monkeypatch, tmp_path, root, "a")
    old = a.produce("validate", "k", outputs_of("a"), made_by=RUN_A)
    record_run(a, RUN_A, old)
    b = machine(monkeypatch, tmp_path, root, "b")
    new = b.produce("validate", "k", outputs_of("b"), made_by=RUN_B, refresh=True)
    assert not new.reused and new.objects != old.objects
    assert b.remote.files_under("cache/validate/k") == sorted([ENTRY_FILE, f"{new.objects}/docs/index.html", f"{new.objects}/validation.json"])
    assert mismatches(a.remote, RUN_A) == (2, []), "a run copies its files, never points at the entry"
    assert machine(monkeypatch, tmp_path, root, "c").read_entry("validate", "k").files == new.files


SAME_MOMENT = """
import os, sys, time
from pathlib import Path
from tasks.store import BucketStorage, StepOutput

barrier, me = Path(os.environ["RACE_BARRIER"]), os.environ["RACE_MACHINE"]
push = BucketStorage.publish_entry

def at_the_same_moment(self, *args, **kwargs):
    # Both machines have computed this key (neither has claimed it yet): send both at once.
    output = next(arg for arg in args if isinstance(arg, StepOutput))
    mark = f"{output.step}-{output.key}"
    (barrier / f"{mark}.{me}").touch()
    deadline = time.monotonic() + 120
    while len(list(barrier.glob(f"{mark}.*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    return push(self, *args, **kwargs)

BucketStorage.publish_entry = at_the_same_moment
from flows.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_two_runs_on_two_machines_at_the_same_moment_record_only_files_their_folders_hold(prefect_api, s3_env, tmp_path: Path):
    from prefect.settings import PREFECT_API_URL

    root = f"s3://{new_bucket(s3_env['AWS_ENDPOINT_URL'])}/nightly"
    (tmp_path / "barrier").mkdir()
    env = {**os.environ, **s3_env, "PREFECT_API_URL": PREFECT_API_URL.value(), "RACE_BARRIER": str(tmp_path / "barrier")}
    runs = [subprocess.Popen([sys.executable, "-c", SAME_MOMENT, "run", *tiny_cli_args(), "--artifacts", root], cwd=REPO, text=True,
                             env={**env, "RACE_MACHINE": name, "RNNFLOW_SCRATCH": str(tmp_path / name)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for name in ("a", "b")]
    results = [run.communicate(timeout=500) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-3000:] for _, err in results]

    remote = RemoteRoot(root)
    run_ids = remote.children("runs")
    manifests = {run_id: json.loads(remote.read_bytes(f"runs/{run_id}/{MANIFEST_FILE}")) for run_id in run_ids}
    assert len(run_ids) == 2 and all(m["status"] == "completed" for m in manifests.values())
    figures = {run_id: mismatches(remote, run_id) for run_id in run_ids}
    winners = {step: [run_id for run_id, m in manifests.items() if m["steps"][step]["status"] == "completed"]
               for step in ("ingest", "validate", "encode", "train", "evaluate", "report")}
    print(f"\nrace: files checked {[checked for checked, _ in figures.values()]}, not as recorded {[wrong for _, wrong in figures.values()]}, "
          f"computed-and-kept by {{{', '.join(f'{step}: {ids[0][-4:] if len(ids) == 1 else ids}' for step, ids in winners.items())}}}")
    assert all(not wrong for _, wrong in figures.values()), figures
    for step, ids in winners.items():
        assert len(ids) == 1, f"{step}: both machines computed it at once, one entry won: {ids}"
        first, second = (manifests[run_id]["steps"][step] for run_id in run_ids)
        assert first["outputs"] == second["outputs"], f"{step}: the loser uses the winner's files"
        (key,) = remote.children(f"cache/{step}")
        assert len({name.split("/")[0] for name in remote.files_under(f"cache/{step}/{key}")} - {ENTRY_FILE}) == 1, "the loser's upload discarded"


# --------------------------------------------------------------------------- 2. a damaged manifest in the bucket


@pytest.fixture
def recorded(s3_env, tmp_path: Path, monkeypatch) -> tuple[str, ArtifactStore]:
    """A bucket with one completed run, champion of its model, and this machine's mirror holding its copy."""
    root = f"s3://{new_bucket(s3_env['AWS_ENDPOINT_URL'])}/team"
    store = machine(monkeypatch, tmp_path, root, "a")
    record_run(store, RUN_A, store.produce("validate", "k", outputs_of("a"), made_by=RUN_A))
    with store.champions.lock():
        store.champions.write("reviews", {"run_id": RUN_A, "metric": "accuracy", "value": 0.8})
    assert [run["run_id"] for run in store.list_runs()] == [RUN_A]
    return root, store


@pytest.mark.parametrize(("content", "problem"), [("[1, 2]", "a JSON list, not an object"), ("{not json", "Expecting property name")])
def test_a_damaged_manifest_in_the_bucket_is_named_there_with_its_repair(recorded, content: str, problem: str, capsys):
    root, store = recorded
    store.remote.write_bytes(f"runs/{RUN_A}/{MANIFEST_FILE}", content.encode())
    named = f"{root}/runs/{RUN_A}/{MANIFEST_FILE} is unreadable ("
    repair = f": restore it from a backup or an earlier version of the object, or delete the run with `aws s3 rm --recursive {root}/runs/{RUN_A}/`."

    assert main(["runs", "--artifacts", root]) == 0
    row = capsys.readouterr().out.splitlines()[-1]
    assert row.split()[:2] == [RUN_A, "unreadable"] and named in row and problem in row and row.endswith(repair), row
    for run in (RUN_A, "champion"):  # damaged, not gone; and no AttributeError
        assert main(["predict", "--run", run, "fine", "--artifacts", root]) == 2
        message = one_error(capsys)
        assert message.startswith(f"rnnflow: error: {named}") and problem in message and message.endswith(repair), message
    assert main(["predict", "--run", "latest", "fine", "--artifacts", root]) == 2
    assert one_error(capsys) == (f"rnnflow: error: No completed run under {root}/runs (1 run with a damaged manifest: 'rnnflow runs' names them): "
                                 "run 'rnnflow run' first.")
    with pytest.raises(ManifestError, match="is unreadable"):  # what promotion reads the champion through: damaged is not gone
        store.fetch_run_folder(RUN_A)

    good = {"run_id": RUN_A, "status": "completed", "config": {}, "steps": {}}
    store.remote.write_bytes(f"runs/{RUN_A}/{MANIFEST_FILE}", json.dumps(good).encode())
    assert store.resolve_run("champion").name == RUN_A, "restored in the bucket: every command reads it again"


def test_a_manifest_naming_files_outside_its_run_is_damage_not_a_path(recorded):
    root, store = recorded
    bad = {"run_id": RUN_A, "status": "completed", "steps": {"validate": {"dir": "../../../elsewhere", "outputs": {"x": "0"}}}}
    store.remote.write_bytes(f"runs/{RUN_A}/{MANIFEST_FILE}", json.dumps(bad).encode())
    with pytest.raises(ManifestError, match=r"steps\.validate\.dir: Value error, '\.\./\.\./\.\./elsewhere' is not a folder inside the run folder"):
        store.resolve_run(RUN_A)
    assert not (store.root.parent / "elsewhere").exists()


# --------------------------------------------------------------------------- 3. runs deleted from the bucket


def test_a_run_deleted_from_the_bucket_is_gone_on_a_machine_whose_mirror_saw_it(recorded, capsys):
    root, store = recorded
    assert store.run_dir(RUN_A).joinpath(MANIFEST_FILE).is_file(), "this machine's mirror holds the run"
    for name in store.remote.files_under(f"runs/{RUN_A}"):
        store.remote.delete(f"runs/{RUN_A}/{name}")

    assert main(["runs", "--artifacts", root]) == 0
    assert capsys.readouterr().out.strip() == f"no runs under {root}/runs"
    assert not store.run_dir(RUN_A).exists(), "its mirror copy is dropped"
    assert main(["predict", "--run", "champion", "fine", "--artifacts", root]) == 2
    assert one_error(capsys) == (f"rnnflow: error: The champion {RUN_A} of model 'reviews' named by {root}/champion.json is gone from {root}/runs: "
                                 "promote another run with 'rnnflow promote RUN_ID --force'.")
    assert main(["predict", "--run", RUN_A, "fine", "--artifacts", root]) == 2
    assert one_error(capsys) == f"rnnflow: error: No run '{RUN_A}' under {root}/runs: 'rnnflow runs' lists the run ids."


def test_a_run_deleted_from_the_bucket_is_not_served_even_before_anything_lists(recorded, capsys):
    root, store = recorded
    for name in store.remote.files_under(f"runs/{RUN_A}"):
        store.remote.delete(f"runs/{RUN_A}/{name}")
    with pytest.raises(FileNotFoundError, match="is gone from"):
        store.resolve_run("champion")
    assert not store.run_dir(RUN_A).exists()


# --------------------------------------------------------------------------- 4. an endpoint that stops answering


class SilentEndpoint:
    """A TCP server on 127.0.0.1 that accepts connections and never answers (a hung S3 gateway)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.held.append(connection)

    def close(self) -> None:
        self.server.close()
        for connection in self.held:
            connection.close()


class StallingProxy:
    """A TCP proxy to the S3 server that, once stall() is called, forwards nothing more and answers nothing new."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.stalled = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.sockets: list[socket.socket] = [self.server]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self.sockets.append(client)
            if self.stalled.is_set():
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.sockets.append(upstream)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if self.stalled.is_set():
                    return  # swallowed: the other side waits for an answer that never comes
                sink.sendall(data)
        except OSError:
            return

    def stall(self) -> None:
        self.stalled.set()

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


@pytest.mark.parametrize("command", [["runs"], ["run", "--preset", "demo"]], ids=["runs", "run"])
def test_an_endpoint_that_never_answers_ends_the_command_in_seconds_naming_it(command: list[str], tmp_path: Path):
    silent = SilentEndpoint()
    try:
        env = {**os.environ, **CREDENTIALS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{silent.port}", "RNNFLOW_SCRATCH": str(tmp_path / "mirror"),
               "RNNFLOW_BUCKET_TIMEOUT_SECONDS": "1", "RNNFLOW_BUCKET_ATTEMPTS": "2"}
        started = time.monotonic()
        done = subprocess.run([str(RNNFLOW), *command, "--artifacts", "s3://team/nightly"], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        took = time.monotonic() - started
    finally:
        silent.close()
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip() == (
        f"rnnflow: error: Artifacts root s3://team/nightly could not read s3://team/nightly: the endpoint http://127.0.0.1:{silent.port} "
        "did not answer within 1 s, 2 tries: check that the endpoint is up and reachable (AWS_ENDPOINT_URL for S3), "
        "or raise RNNFLOW_BUCKET_TIMEOUT_SECONDS if it is only slow."
    )
    assert took < 60, f"{took:.0f} s"


def test_an_endpoint_that_stops_answering_mid_run_fails_the_call_and_then_fails_fast(s3_endpoint, tmp_path: Path, monkeypatch):
    proxy = StallingProxy(int(s3_endpoint.rsplit(":", 1)[1]))
    endpoint = f"http://127.0.0.1:{proxy.port}"
    for name, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint, "RNNFLOW_BUCKET_TIMEOUT_SECONDS": "1", "RNNFLOW_BUCKET_ATTEMPTS": "2"}.items():
        monkeypatch.setenv(name, value)
    try:
        root = f"s3://{new_bucket(s3_endpoint)}/team"
        store = machine(monkeypatch, tmp_path, root, "a")
        made = store.produce("ingest", "k1", outputs_of("a"))
        proxy.stall()
        started = time.monotonic()
        with pytest.raises(ArtifactsRootError, match=rf"could not upload {root}/cache/ingest/k2/v-\w+/\S+: the endpoint {endpoint} did not answer within 1 s, 2 tries"):
            store.produce("ingest", "k2", outputs_of("a"))
        assert time.monotonic() - started < 30
        started = time.monotonic()  # the failing run's last writes (its manifest, run.log) do not wait again
        with pytest.raises(ArtifactsRootError, match=rf"the endpoint {endpoint} did not answer within 1 s, 2 tries a moment ago, and is not asked again yet"):
            store.push(made.path / "validation.json")
        assert time.monotonic() - started < 1
    finally:
        proxy.close()
        remote_module._UNANSWERED.pop(endpoint, None)  # what a new process starts with

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)  # the endpoint answers again: the next run recovers
    again = machine(monkeypatch, tmp_path, root, "a").produce("ingest", "k2", outputs_of("a"))
    assert machine(monkeypatch, tmp_path, root, "b").read_entry("ingest", "k2").files == again.files, "the stalled upload left nothing in the way"


@pytest.mark.slow
def test_a_run_whose_endpoint_stops_answering_ends_in_seconds_naming_it(
        prefect_api, s3_endpoint, tmp_path: Path, monkeypatch, capsys):
    proxy = StallingProxy(int(s3_endpoint.rsplit(":", 1)[1]))
    endpoint = f"http://127.0.0.1:{proxy.port}"
    for name, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint, "RNNFLOW_BUCKET_TIMEOUT_SECONDS": "1", "RNNFLOW_BUCKET_ATTEMPTS": "2",
                        "RNNFLOW_SCRATCH": str(tmp_path / "mirror")}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    root = f"s3://{new_bucket(s3_endpoint)}/nightly"
    push, stalled_at = BucketStorage.publish_entry, []

    def stall_before_validate(self, scratch, output, **kwargs):
        if output.step == "validate" and not stalled_at:
            proxy.stall()  # the gateway hangs: connections accepted, nothing answered
            stalled_at.append(time.monotonic())
        return push(self, scratch, output, **kwargs)

    monkeypatch.setattr(BucketStorage, "publish_entry", stall_before_validate)
    try:
        assert main(["run", *tiny_cli_args(), "--artifacts", root]) == 1
        took = time.monotonic() - stalled_at[0]
    finally:
        proxy.close()
        remote_module._UNANSWERED.pop(endpoint, None)  # what a new process starts with
    captured = capsys.readouterr()
    failure = [line for line in captured.err.splitlines() if line.startswith("rnnflow: ")]
    assert failure == [f"rnnflow: step validate failed: Artifacts root {root} could not upload {root}/cache/validate/"
                       + failure[0].split("/cache/validate/", 1)[1].split(":", 1)[0]
                       + f": the endpoint {endpoint} did not answer within 1 s, 2 tries: check that the endpoint is up and reachable "
                       "(AWS_ENDPOINT_URL for S3), or raise RNNFLOW_BUCKET_TIMEOUT_SECONDS if it is only slow."], captured.err[-3000:]
    assert took < 60, f"the run ended {took:.0f} s after the endpoint stopped answering"


def test_a_bucket_timeout_that_is_not_a_number_is_one_sentence(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("RNNFLOW_SCRATCH", str(tmp_path / "mirror"))
    monkeypatch.setenv("RNNFLOW_BUCKET_TIMEOUT_SECONDS", "soon")
    assert main(["runs", "--artifacts", "s3://team/nightly"]) == 2
    assert one_error(capsys) == ("rnnflow: error: RNNFLOW_BUCKET_TIMEOUT_SECONDS='soon' is not a number of seconds above 0: "
                                 "set it to e.g. 20, or unset it for the default.")


# --------------------------------------------------------------------------- 5. a URL that names no bucket


@pytest.mark.parametrize("url", ["s3:///x", "s3://", "gs:///team"])
@pytest.mark.parametrize("command", [["runs"], ["run", "--preset", "demo"], ["predict", "fine"]], ids=lambda c: c[0])
def test_a_bucket_url_without_a_bucket_name_is_refused_in_one_sentence(url: str, command: list[str], tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("RNNFLOW_SCRATCH", str(tmp_path / "mirror"))
    assert main([*command, "--artifacts", url]) == 2
    protocol = url.split(":", 1)[0]
    assert one_error(capsys) == (f"rnnflow: error: Artifacts root {url} names no bucket: write it as {protocol}://BUCKET/PREFIX, "
                                 "or choose a local folder with --artifacts.")
    assert not (tmp_path / "mirror").exists(), "nothing written anywhere"
