"""The store's shape (issue 32): concerns over one storage interface, no step table imported, a folder root's
storage doing nothing but write its folder. Fast: no bucket, no flow."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from bench.import_graph import cycles, imports_of, known_modules
from tasks.store import ArtifactStore, DamagedRunError, LocalStorage, StepOutput, verify_run_files, write_json

STORE = Path(__file__).resolve().parent.parent / "tasks" / "store"


def test_the_store_imports_no_step_table_and_no_cycle():
    modules = known_modules()
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    for name in (n for n in graph if n == "tasks.store" or n.startswith("tasks.store.")):
        everything = graph[name]["top"] | graph[name]["lazy"] | graph[name]["typing"]
        assert "tasks.steps" not in everything, f"{name} imports the step table: hand it the step names instead"
    assert cycles({name: found["top"] for name, found in graph.items()}) == []


@pytest.mark.parametrize("module", ["cache.py", "runs.py", "champions.py", "record.py"])
def test_the_concerns_never_ask_which_backend_they_have(module: str):
    tree = ast.parse((STORE / module).read_text(encoding="utf-8"))
    names = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)} | {
        node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    assert not names & {"remote", "RemoteRoot", "BucketStorage", "is_url"}, module


def test_store_modules_stay_small():
    for path in sorted(STORE.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert text.count("\n") <= 500, path.name
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno - node.lineno + 1 <= 80, f"{path.name}:{node.name}"


def test_a_folder_root_is_its_own_storage(tmp_path: Path):
    storage = LocalStorage(tmp_path / "root")
    assert storage.read_bytes("champion.json") is None and storage.read_with_tag("champion.json") == (None, None)
    storage.write_bytes("champion.lock", b"mine", create=True)
    with pytest.raises(FileExistsError):
        storage.write_bytes("champion.lock", b"theirs", create=True)
    storage.replace("champion.json", b"{}\n", None)
    assert (tmp_path / "root" / "champion.json").read_bytes() == b"{}\n" and storage.exists("champion.json")
    storage.delete("champion.lock")
    storage.delete("champion.lock")  # nothing there: nothing to do
    assert not storage.exists("champion.lock")
    folder = tmp_path / "root" / "runs" / "r1"
    assert storage.pull_manifest(folder) is False and storage.pull_run(folder) is False
    write_json(folder / "manifest.json", {"run_id": "r1", "status": "running"})
    storage.push(folder)
    storage.drop_mirror_copy(folder)  # the folder is the run: kept
    assert storage.pull_run(folder) and storage.run_folders(folder.parent, str) == ([folder], [])
    output = StepOutput(step="ingest", key="k", dir=str(tmp_path), files={})
    assert storage.publish_entry(tmp_path, output) == (output, True) and storage.fetch_entry("ingest", "k") is None
    assert storage.transfer_summary() == [] and storage.where(folder) == str(folder)


def test_the_store_forwards_to_its_concerns(tmp_path: Path):
    store = ArtifactStore(tmp_path)
    assert isinstance(store.storage, LocalStorage) and store.remote is None
    made = store.produce("ingest", "k1", lambda out: (out / "a.txt").write_text("a") and {})
    assert store.read_entry("ingest", "k1") == store.cache.read_entry("ingest", "k1") == made
    record = store.start_run({}, run_id="20260101T000000000Z-abcd")
    record.record_step(made, status="completed", seconds=0.1, config={}, made_by=None)
    record.finish("completed")
    assert store.resolve_run("latest") == store.runs.resolve_run("20260101T000000000Z-abcd") == record.folder


def test_a_damaged_file_names_the_fix_the_caller_allows(tmp_path: Path):
    folder = tmp_path / "runs" / "r1"
    (folder / "train").mkdir(parents=True)
    (folder / "train" / "model.keras").write_bytes(b"changed")
    (folder / "manifest.json").write_text(json.dumps({"run_id": "r1", "status": "completed", "steps": {"train": {"outputs": {"model.keras": "0" * 64}}}}))
    with pytest.raises(DamagedRunError, match="rerun that step with `rnnflow step train --run r1`"):
        verify_run_files(folder, ["train/model.keras"], rerunnable={"train"})
    with pytest.raises(DamagedRunError, match="train cannot be rerun alone: start a new run"):
        verify_run_files(folder, ["train/model.keras"])
