"""Issue 18, a hostile user's report: run ids that leave the root, killed runs, damaged files, malformed
manifests, unusable artifacts roots, and bad --output / --temperature values.

One finished tiny run is built once for the module (by the step functions, as tests/test_predict.py
does, plus a manifest recording every output's sha256); tests that damage it work on a copy.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from flows.cli import main
from tasks.config import DataConfig, EncodeConfig, ModelConfig, TrainConfig
from tasks.encode import encode_reviews
from tasks.evaluate import evaluate_model
from tasks.ingest import ingest_reviews, locate_source
from tasks.store import WRITER_FILE, ArtifactStore, _hash_tree, process_stamp, read_json, write_json
from tasks.train import train_model

REPO = Path(__file__).resolve().parent.parent
RUN_ID = "20260101T000000000Z-hard"
DATA = DataConfig(source="synthetic", synthetic_reviews=80, seed=3)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An artifacts root with one completed run whose manifest records each output's sha256, as the flow's does."""
    root = tmp_path_factory.mktemp("pristine")
    run = root / "runs" / RUN_ID
    for step in ("ingest", "validate", "encode", "train", "evaluate"):
        (run / step).mkdir(parents=True)
    ingest_reviews(DATA, locate_source(DATA), run / "ingest")
    write_json(run / "validate" / "validation.json", {"checks": []})
    encode_reviews(EncodeConfig(num_words=60, max_len=30), run / "ingest", run / "encode")
    train_model(ModelConfig(cell="gru", units=4, embedding_dim=4, bidirectional=False), TrainConfig(epochs=1, batch_size=32), run / "encode", run / "train")
    evaluate_model(run / "encode", run / "train", run / "evaluate")
    accuracy = read_json(run / "evaluate" / "metrics.json")["test"]["accuracy"]
    steps = {
        step: {"status": "completed", "seconds": 0.1, "key": f"key-{step}", "dir": step, "outputs": _hash_tree(run / step),
               "summary": {"accuracy": accuracy} if step == "evaluate" else {}}
        for step in ("ingest", "validate", "encode", "train", "evaluate")
    }
    config = {"preset": "demo", "data": DATA.model_dump(mode="json"), "model": {"cell": "gru"}}
    write_json(run / "manifest.json", {"run_id": RUN_ID, "status": "completed", "config": config, "steps": steps})
    return root


def _copy(pristine: Path, target: Path) -> Path:
    """A private copy (real copies, not hard links: damaging it must not damage the shared run)."""
    shutil.copytree(pristine, target)
    return target


@pytest.fixture
def root(pristine: Path, tmp_path: Path) -> Path:
    return _copy(pristine, tmp_path / "root")


@pytest.fixture
def other(pristine: Path, tmp_path: Path) -> Path:
    return _copy(pristine, tmp_path / "other")


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    err = [line for line in err if not line.startswith("usage:")]
    assert len(err) == 1, err
    assert err[0].startswith("rnnflow: error: ")
    return err[0][len("rnnflow: error: "):]


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# --------------------------------------------------------------------------- 1. run ids that leave the root


def _leaving(other: Path) -> list[str]:
    return [str(other / "runs" / RUN_ID), f"../../{other.name}/runs/{RUN_ID}", f"../{RUN_ID}", "..", f"{RUN_ID}/."]


@pytest.mark.slow
@pytest.mark.parametrize("command", ["predict", "generate", "promote", "step", "run"])
def test_a_run_argument_that_leaves_the_root_exits_2_for_every_command(command, root: Path, other: Path, capsys):
    before_root, before_other = _snapshot(root), _snapshot(other)
    for run in _leaving(other):
        args = {
            "predict": ["predict", "--run", run, "a fine film"],
            "generate": ["generate", "--run", run, "--prompt", "the"],
            "promote": ["promote", run, "--force"],
            "step": ["step", "train", "--run", run],
            "run": ["run", "--preset", "demo", "--from", "train", "--run", run],
        }[command]
        assert main([*args, "--artifacts", str(root)]) == 2, run
        message = _one_error(capsys)
        assert message.startswith(f"{run!r} is not a run id: give the id of a run under {root / 'runs'}"), message
        assert message.endswith("'latest' or 'champion'.")
    assert _snapshot(other) == before_other, "the other root was not touched"
    assert _snapshot(root) == before_root, "nor this one (no champion.json, no new run folder)"


@pytest.mark.slow
def test_a_run_folder_linking_out_of_the_root_is_refused(root: Path, other: Path, capsys):
    (root / "runs" / "linked").symlink_to(other / "runs" / RUN_ID)
    assert main(["predict", "--run", "linked", "fine", "--artifacts", str(root)]) == 2
    assert f"is a link to {other / 'runs' / RUN_ID}, outside {root / 'runs'}" in _one_error(capsys)


@pytest.mark.slow
def test_champion_never_names_a_missing_folder(root: Path, other: Path, capsys):
    # A pointer written by the old code, naming another root's run by path.
    write_json(root / "champion.json", {"run_id": str(other / "runs" / RUN_ID)})
    assert main(["champion", "--artifacts", str(root)]) == 1
    assert "not a run id under" in _one_error(capsys)

    write_json(root / "champion.json", {"run_id": "20250101T000000000Z-gone", "promoted_at": "then", "decided_by": "x"})
    assert main(["champion", "--artifacts", str(root)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "", "no folder is printed"
    assert captured.err.strip() == (
        f"rnnflow: error: The champion 20250101T000000000Z-gone of model 'legacy' named by {root / 'champion.json'} is gone from {root / 'runs'}: "
        f"promote another run with 'rnnflow promote RUN_ID --force'."
    )
    assert main(["predict", "--run", "champion", "fine", "--artifacts", str(root)]) == 2
    assert "is gone from" in _one_error(capsys)

    # The fix the sentence gives works, and then champion names a folder that is there.
    assert main(["promote", RUN_ID, "--force", "--artifacts", str(root)]) == 0
    capsys.readouterr()
    assert main(["champion", "--artifacts", str(root)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(root / "runs" / RUN_ID)


# --------------------------------------------------------------------------- 2. killed runs


def _running_manifest(root: Path, run_id: str, stamp: dict) -> Path:
    folder = root / "runs" / run_id
    folder.mkdir(parents=True)
    write_json(folder / "manifest.json", {"run_id": run_id, "status": "running", "config": {"preset": "demo"}, "steps": {}, "process": stamp})
    return folder


@pytest.mark.slow
def test_a_run_whose_process_is_gone_lists_as_failed_killed(root: Path, capsys):
    store = ArtifactStore(root)
    started = store.start_run({"preset": "demo"}, run_id="20260102T000000000Z-mine")
    assert started.manifest["process"] == process_stamp(), "start_run records this process: pid, host, start time, boot id"
    assert started.manifest["process"]["pid"] == os.getpid() and started.manifest["process"]["started"]

    dead = _running_manifest(root, "20260103T000000000Z-dead", process_stamp(_dead_pid()))
    elsewhere = _running_manifest(root, "20260104T000000000Z-away", {**process_stamp(_dead_pid()), "host": "another-host"})
    reused = _running_manifest(root, "20260105T000000000Z-reus", {**process_stamp(), "started": "1"})  # our pid, not our start
    away_bytes = (elsewhere / "manifest.json").read_bytes()

    assert main(["runs", "--artifacts", str(root)]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows[dead.name].split()[1:3] == ["failed", "(killed)"]
    assert rows[reused.name].split()[1:3] == ["failed", "(killed)"], "a reused pid is not the run's process"
    assert rows[elsewhere.name].split()[1] == "running", "another host's run cannot be judged from here"
    assert rows["20260102T000000000Z-mine"].split()[1] == "running", "a live run stays running"
    assert rows[RUN_ID].split()[1] == "completed"

    recorded = read_json(dead / "manifest.json")
    assert recorded["status"] == "failed" and recorded["killed"] is True
    assert recorded["error"].startswith(f"killed: its process (pid {recorded['process']['pid']} on {socket.gethostname()})")
    assert (elsewhere / "manifest.json").read_bytes() == away_bytes, "other hosts' runs are not rewritten"


@pytest.mark.slow
def test_stale_partial_folders_are_cleaned_when_their_writer_is_gone(root: Path, capsys):
    store = ArtifactStore(root)
    train = root / "cache" / "train"

    def scratch(parent: Path, name: str, stamp: dict | None) -> Path:
        folder = parent / f".{name}.partial"
        folder.mkdir(parents=True)
        (folder / "model.keras").write_bytes(b"half a model")
        if stamp is not None:
            write_json(folder / WRITER_FILE, stamp)
        return folder

    dead = scratch(train, "k1.aaaa", process_stamp(_dead_pid()))
    live = scratch(train, "k2.bbbb", process_stamp())
    away = scratch(train, "k3.cccc", {**process_stamp(_dead_pid()), "host": "another-host"})
    unknown = scratch(train, "k4.dddd", None)

    seen = {}

    def work(out: Path) -> dict:
        seen["writer"] = read_json(out / WRITER_FILE)  # the scratch says who writes it, while it is written
        (out / "model.keras").write_bytes(b"a whole model")
        return {}

    output = store.produce("train", "k5", work)
    assert seen["writer"]["pid"] == os.getpid() and seen["writer"]["host"] == socket.gethostname()
    assert not dead.exists(), "the dead writer's scratch is gone"
    assert live.exists() and away.exists() and unknown.exists(), "a live, remote or unrecorded writer's scratch stays"
    assert list(output.files) == ["model.keras"] and not (train / "k5" / WRITER_FILE).exists()

    # Listing cleans too, for every step.
    stale = scratch(root / "cache" / "encode", "k6.eeee", process_stamp(_dead_pid()))
    assert main(["runs", "--artifacts", str(root)]) == 0
    assert not stale.exists()


# --------------------------------------------------------------------------- 3. damaged files


def _damaged(root: Path, name: str) -> None:
    path = root / "runs" / RUN_ID / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _damage_sentence(name: str, step: str) -> str:
    return (f"Run {RUN_ID}'s {name} does not match the sha256 its manifest records (the file is damaged): "
            f"rerun that step with `rnnflow step {step} --run {RUN_ID}`.")


@pytest.mark.slow
def test_predict_and_generate_name_a_damaged_model_and_the_fix(root: Path, capsys):
    _damaged(root, "train/model.keras")
    assert main(["predict", "--run", RUN_ID, "a fine film", "--artifacts", str(root)]) == 2
    assert _one_error(capsys) == _damage_sentence("train/model.keras", "train")
    assert main(["generate", "--run", "latest", "--prompt", "the", "--artifacts", str(root)]) == 2
    assert _one_error(capsys) == _damage_sentence("train/model.keras", "train")


@pytest.mark.slow
def test_promote_refuses_a_damaged_candidate_and_cannot_rescore_a_damaged_champion(root: Path, capsys):
    champion = root / "runs" / "20251231T000000000Z-champ"
    shutil.copytree(root / "runs" / RUN_ID, champion)
    manifest = read_json(champion / "manifest.json")
    manifest["run_id"] = champion.name
    manifest["steps"]["ingest"]["outputs"]["test.parquet"] = "0" * 64  # tested on other texts: promote re-scores it
    write_json(champion / "manifest.json", manifest)
    write_json(root / "champion.json", {"run_id": champion.name})
    model = champion / "train" / "model.keras"
    model.write_bytes(model.read_bytes()[:100])

    assert main(["promote", RUN_ID, "--artifacts", str(root)]) == 1
    out = capsys.readouterr().out.strip()
    assert out.startswith("not promoted: the champion cannot be scored again (")
    assert (f"Run {champion.name}'s train/model.keras does not match the sha256 its manifest records (the file is damaged): "
            f"rerun that step with `rnnflow step train --run {champion.name}`.") in out
    assert read_json(root / "champion.json")["run_id"] == champion.name

    _damaged(root, "train/model.keras")
    assert main(["promote", RUN_ID, "--force", "--artifacts", str(root)]) == 2
    assert _one_error(capsys) == _damage_sentence("train/model.keras", "train")
    assert ArtifactStore(root).champions.choose(None)["run_id"] == champion.name, "a damaged model never becomes champion"


@pytest.mark.slow
def test_step_checks_the_inputs_it_reads_before_any_run_folder_exists(root: Path, capsys):
    _damaged(root, "encode/X_train.npy")
    assert main(["step", "train", "--run", RUN_ID, "--artifacts", str(root)]) == 2
    assert _one_error(capsys) == _damage_sentence("encode/X_train.npy", "encode")
    assert [p.name for p in (root / "runs").iterdir()] == [RUN_ID], "no new run folder"


# --------------------------------------------------------------------------- 4. malformed manifests


@pytest.mark.slow
@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("[1, 2]", "a JSON list, not an object"),
        (json.dumps({"run_id": "x", "status": "completed", "steps": 5}), "steps: Input should be a valid dictionary"),
        (json.dumps({"run_id": "x", "status": "completed", "steps": {"evaluate": 3}}), "steps.evaluate: Input should be a valid dictionary"),
        (json.dumps({"run_id": "x", "status": "completed", "config": {"model": 7}}), "config.model: Input should be a valid dictionary"),
        ("{not json", "Expecting property name"),
    ],
)
def test_a_malformed_manifest_is_listed_unreadable_and_skipped_for_latest(root: Path, content: str, problem: str, capsys):
    bad = root / "runs" / "20991231T000000000Z-bad"  # newest: `latest` would land on it
    bad.mkdir()
    (bad / "manifest.json").write_text(content)

    assert main(["runs", "--artifacts", str(root)]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows[RUN_ID].split()[1] == "completed", "the other runs still show"
    assert rows[bad.name].split()[1] == "unreadable"
    assert f"{bad / 'manifest.json'} is unreadable (" in rows[bad.name] and problem in rows[bad.name]

    assert main(["predict", "--run", "latest", "fine", "--artifacts", str(root)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"run {RUN_ID}"
    assert main(["predict", "--run", bad.name, "fine", "--artifacts", str(root)]) == 2
    message = _one_error(capsys)
    assert message.startswith(f"{bad / 'manifest.json'} is unreadable (") and problem in message
    assert message.endswith(": restore it from a backup or delete the run folder.")


# --------------------------------------------------------------------------- 5. artifacts roots that cannot be used

EVERY_COMMAND = [
    ["runs"], ["champion"], ["predict", "fine"], ["generate", "--prompt", "the"], ["promote", RUN_ID, "--force"],
    ["step", "train", "--run", RUN_ID], ["run", "--preset", "demo"],
]


@pytest.mark.parametrize("args", EVERY_COMMAND, ids=lambda args: args[0])
def test_a_file_as_artifacts_root_exits_2_with_one_sentence(args: list[str], tmp_path: Path, capsys):
    target = tmp_path / "not-a-folder"
    target.write_text("x")
    assert main([*args, "--artifacts", str(target)]) == 2
    assert _one_error(capsys) == f"Artifacts root {target} is a file, not a folder: choose another with --artifacts."
    assert main([*args, "--artifacts", str(target / "sub")]) == 2
    assert _one_error(capsys) == f"Artifacts root {target / 'sub'} is a file, not a folder ({target} above it is a file): choose another with --artifacts."


@pytest.mark.slow
@pytest.mark.parametrize("args", [["promote", RUN_ID, "--force"], ["step", "train", "--run", RUN_ID], ["run", "--preset", "demo"]], ids=lambda a: a[0])
def test_a_read_only_root_exits_2_before_any_step_runs(args: list[str], root: Path, monkeypatch, capsys):
    # Tests run as root, which chmod does not stop: deny writes the way os.access reports a read-only mount.
    real_access = os.access

    def access(path, mode, *rest, **kw):
        if mode & os.W_OK and Path(path).resolve().is_relative_to(root.resolve()):
            return False
        return real_access(path, mode, *rest, **kw)

    monkeypatch.setattr(os, "access", access)
    before = _snapshot(root)
    assert main([*args, "--artifacts", str(root)]) == 2
    assert _one_error(capsys) == (
        f"Artifacts root {root} is not writable (no write permission on {root}): choose another with --artifacts or fix its permissions."
    )
    assert capsys.readouterr().out == "", "no run folder is named"
    assert _snapshot(root) == before and not (root / "champion.lock").exists()


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to drop to an unprivileged user")
def test_a_really_read_only_root_for_an_unprivileged_user(pristine: Path):
    """The same, for real: `promote` as user nobody on a root it may read but not write (once a PermissionError on champion.lock)."""
    base = Path(tempfile.mkdtemp(prefix="rnnflow-ro-"))
    try:
        root = _copy(pristine, base / "root")
        home = base / "home"
        home.mkdir()
        subprocess.run(["chmod", "-R", "a+rX,go-w", str(base)], check=True)
        os.chown(home, 65534, 65534)
        env = {**os.environ, "HOME": str(home), "PREFECT_HOME": str(home / ".prefect")}
        done = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "flows.cli",
             "promote", RUN_ID, "--force", "--artifacts", str(root)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
        )
        assert done.returncode == 2, done.stderr[-2000:]
        assert done.stderr.strip() == (
            f"rnnflow: error: Artifacts root {root} is not writable (no write permission on {root}): "
            f"choose another with --artifacts or fix its permissions."
        )
        assert not (root / "champion.lock").exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------- 6. --output and --temperature


@pytest.mark.slow
def test_predict_output_onto_a_folder_or_under_a_file_exits_2(pristine: Path, tmp_path: Path, capsys):
    folder = tmp_path / "predictions.parquet"
    folder.mkdir()
    assert main(["predict", "fine", "--output", str(folder), "--artifacts", str(pristine)]) == 2
    assert _one_error(capsys) == f"Output {folder} is a folder: give --output a file path, e.g. {folder / 'predictions.parquet'}."
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    assert main(["predict", "fine", "--output", str(blocker / "p.csv"), "--artifacts", str(pristine)]) == 2
    assert _one_error(capsys) == f"Output {blocker / 'p.csv'} cannot be written: {blocker} is a file, not a folder; choose another path for --output."


@pytest.mark.slow
@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_generate_temperature_must_be_a_finite_number(pristine: Path, value: str, capsys):
    assert main(["generate", "--prompt", "the", "--temperature", value, "--artifacts", str(pristine)]) == 2
    assert _one_error(capsys) == f"--temperature must be 0 (always the likeliest character) or more, not {float(value):g}."


def test_generate_refuses_nan_without_the_cli_too():
    from tasks.generate import GenerationError, generate

    with pytest.raises(GenerationError, match="must be 0"):
        generate(None, "the", temperature=float("nan"))  # refused before the generator is touched
