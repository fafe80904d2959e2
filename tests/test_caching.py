"""Caching, retries and reruns of single steps, against a real Prefect API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.pipeline import rnnflow_pipeline
from tasks.caching import CacheSlot, entry_lock, key_for, step_key
from tasks.config import load_config
from tasks.steps import STEPS
from tasks.store import ArtifactStore, StepOutput
from tests.helpers import step_statuses as _statuses
from tests.helpers import tiny_config
from tests.helpers import tree_digest as _tree_digest


def test_key_covers_section_upstream_and_code_but_not_the_run():
    upstream = {"encode": StepOutput(step="encode", key="k", dir="/x", files={"X_train.npy": "aa"})}
    changed = {"encode": StepOutput(step="encode", key="k", dir="/elsewhere", files={"X_train.npy": "bb"})}
    moved = {"encode": StepOutput(step="encode", key="k", dir="/elsewhere", files={"X_train.npy": "aa"})}
    key = step_key("train", {"epochs": 2}, upstream)
    assert step_key("train", {"epochs": 2}, moved) == key, "where the files are does not matter, their bytes do"
    assert step_key("train", {"epochs": 3}, upstream) != key
    assert step_key("train", {"epochs": 2}, changed) != key


def test_how_many_processes_fit_the_members_is_not_part_of_the_train_key():
    def key(**train) -> str:
        return step_key("train", {"model": {"units": 8}, "train": {"members": 2, **train}}, {})

    assert key(member_processes=1) == key(member_processes=2) == key(member_processes="auto"), "the same fits, whichever way"
    assert key(member_processes=1) != key(member_processes=1, members=3)


@pytest.mark.slow
def test_deleted_or_corrupted_cache_files_force_a_recompute(tiny_run_copy):
    root = tiny_run_copy.root  # the tiny configuration, run once already in this root
    config = tiny_config()
    store = ArtifactStore(root)
    (encode_entry,) = (store.cache_dir / "encode").iterdir()
    (encode_entry / "X_train.npy").unlink()
    (train_entry,) = (store.cache_dir / "train").iterdir()
    with open(train_entry / "history.json", "a") as handle:
        handle.write(" ")  # one byte changed: its sha256 no longer matches
    statuses = _statuses(rnnflow_pipeline(config=config, artifacts_root=str(root)))
    assert statuses["ingest"] == "cached"
    assert statuses["encode"] == "completed"
    assert statuses["train"] == "completed"
    assert (encode_entry / "X_train.npy").exists()


@pytest.mark.slow
def test_refresh_and_from_recompute_what_they_name(tiny_run_copy):
    root = str(tiny_run_copy.root)  # the tiny configuration, run once already in this root
    config = tiny_config()
    assert _statuses(rnnflow_pipeline(config=config, artifacts_root=root, refresh=["encode"]))["encode"] == "completed"
    statuses = _statuses(rnnflow_pipeline(config=config, artifacts_root=root, start_from="train"))
    assert statuses == {"ingest": "cached", "validate": "cached", "encode": "cached", "baseline": "cached",
                        "train": "completed", "evaluate": "completed", "promote": "completed", "report": "completed"}


@pytest.mark.slow
def test_a_step_that_fails_once_succeeds_on_retry(tiny_run_copy, monkeypatch):
    """Ingest asked for again (refresh) in a copy of the tiny run's root: the step computes, fails once, is retried and
    completes, and the steps after it find their entries (a whole fresh run's training would add nothing here)."""
    import tasks.ingest

    calls = {"n": 0}
    real = tasks.ingest.ingest_reviews

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("disk hiccup")
        return real(*args, **kwargs)

    monkeypatch.setattr(tasks.ingest, "ingest_reviews", flaky)
    root = tiny_run_copy.root  # the tiny configuration, run once already in this root
    config = tiny_config("data.retry_delay_seconds=0.1")  # retries and their delay are not part of any key
    folder = Path(rnnflow_pipeline(config=config, artifacts_root=str(root), refresh=["ingest"]))
    assert calls["n"] == 2
    statuses = _statuses(folder)
    assert statuses["ingest"] == "completed"
    assert statuses["validate"] == statuses["encode"] == statuses["train"] == "cached", "the retried ingest wrote what the first run's did"
    assert not list((root / "cache" / "ingest").glob(".*partial")), "the failed try left no scratch files"


@pytest.mark.slow
def test_bad_input_is_not_retried(prefect_api, tmp_path: Path):
    config = tiny_config("data.source=imdb", f"data.path={tmp_path / 'missing.tar.gz'}")
    with pytest.raises(Exception, match="does not exist"):
        rnnflow_pipeline(config=config, artifacts_root=str(tmp_path / "a"))


@pytest.mark.slow
def test_rerunning_one_step_makes_a_new_folder_and_leaves_the_old_one_untouched(tiny_run_copy):
    root = str(tiny_run_copy.root)
    config = tiny_config()
    first = tiny_run_copy.folder  # a finished run of config in this root
    before = _tree_digest(first)
    changed = load_config(base=config.as_dict(), overrides=["train.epochs=1"])
    second = Path(rnnflow_pipeline(config=changed, artifacts_root=root, only_step="train", derived_from=first.name))
    assert second != first
    assert _tree_digest(first) == before, "the original run is byte-identical"
    manifest = json.loads((second / "manifest.json").read_text())
    assert manifest["derived_from"] == first.name
    assert manifest["status"] == "completed"
    assert {n: e["status"] for n, e in manifest["steps"].items()} == {
        "ingest": "cached", "validate": "cached", "encode": "cached", "baseline": "cached", "train": "completed"
    }
    assert manifest["steps"]["encode"]["reused_from"] == first.name
    assert json.loads((second / "train" / "train.json").read_text())["epochs_run"] == 1


@pytest.mark.slow
def test_a_retried_flow_run_resumes_its_folder_and_reuses_finished_steps(prefect_api, tmp_path: Path, monkeypatch):
    import tasks.evaluate

    calls = {"n": 0}
    real = tasks.evaluate.evaluate_model

    def fails_first(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("evaluation crashed")
        return real(*args, **kwargs)

    monkeypatch.setattr(tasks.evaluate, "evaluate_model", fails_first)
    config = tiny_config("data.seed=11")
    folder = Path(rnnflow_pipeline.with_options(retries=1)(config=config, artifacts_root=str(tmp_path / "a"), run_id="20260101T000000000Z-beef"))
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["attempts"] == 2
    assert _statuses(folder) == {"ingest": "cached", "validate": "cached", "encode": "cached", "baseline": "cached",
                                 "train": "cached", "evaluate": "completed", "promote": "completed", "report": "completed"}


def test_an_entry_lock_is_exclusive_and_let_go_with_its_holder(tmp_path: Path):
    """flock: a second holder (another run) cannot take it while the first holds it; the kernel frees it when the
    holder closes it, as it does when the holder's process dies (SIGKILL too), so no stale lock can block a step."""
    import fcntl

    from tasks import caching

    store = ArtifactStore(tmp_path)
    lock_file = caching.lock_file(store, "train", "abc")
    with entry_lock(store, "train", "abc"):
        with open(lock_file, "a+b") as other:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(lock_file, "a+b") as other:
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # free once the holder let go
    assert not store.cache_dir.exists(), "a step's cache folder holds its entries alone"


def test_the_key_from_typed_sections_is_the_key_from_their_dicts():
    """Keys of entries made before the steps took typed sections stay valid: each key covers the same JSON dump."""
    from tasks.config_reporting import without_reporting
    from tasks.steps import baseline_inputs, text_rule

    config = tiny_config()
    ingest = StepOutput(step="ingest", key="k", dir="/x", files={"train.parquet": "aa"})
    encode = StepOutput(step="encode", key="e", dir="/y", files={"X_train.npy": "bb"})
    source = {"kind": "synthetic", "fingerprint": "f"}
    assert key_for("ingest", {"data": config.data, "source": source}) == step_key("ingest", config.section("data"), {}, {"source": source})
    assert key_for("validate", {"validate": config.validate_, "ingest": ingest, **text_rule(config)}) == step_key(
        "validate", config.section("validate"), {"ingest": ingest}, text_rule(config))
    assert key_for("baseline", {"baseline": config.baseline, "ingest": ingest, **baseline_inputs(config)}) == step_key(
        "baseline", config.section("baseline"), {"ingest": ingest}, baseline_inputs(config))
    assert key_for("train", {"model": config.model, "train": config.train, "encode": encode}) == step_key(
        "train", {"model": config.section("model"), "train": config.section("train")}, {"encode": encode})
    assert key_for("evaluate", {"ingest": ingest, "encode": encode, "train": encode, "baseline": None}) == step_key(
        "evaluate", {}, {"ingest": ingest, "encode": encode, "train": encode})
    assert key_for("report", {"config": config, "encode": encode}) == step_key(
        "report", {"config": without_reporting(config.as_dict())}, {"encode": encode})
    assert config.model_copy(update={"track": config.track.model_copy(update={"experiment": "other"})}) != config
    assert key_for("report", {"config": config.model_copy(update={"track": config.track.model_copy(update={"experiment": "x"})})}) == \
        key_for("report", {"config": config}), "where a run reports is in no key"
    retried = config.data.model_copy(update={"retries": 7})
    assert key_for("ingest", {"data": retried, "source": source}) == key_for("ingest", {"data": config.data, "source": source})


def test_a_module_edited_during_a_run_keeps_the_key_of_the_code_that_runs(monkeypatch: pytest.MonkeyPatch):
    import sys

    from tasks import caching
    from tasks.caching import produce_step

    key = step_key("evaluate", {}, {})
    # As if tasks/models.py had been edited on disk after this process started: the key still
    # describes the source the process started with, the one an imported module runs.
    monkeypatch.setitem(caching.SOURCES_AT_START, "tasks/models.py", b"# the source at start\n")
    assert caching.changed_since_start("tasks/models.py")
    assert step_key("evaluate", {}, {}) != key, "the key follows the source at start, not the file now"
    # A step that would import the edited module only now refuses, before any work, in one sentence.
    monkeypatch.delitem(sys.modules, "tasks.models", raising=False)
    ran = []
    with pytest.raises(RuntimeError, match=r"tasks/models.py changed on disk after this run started, so the evaluate step would run other code"):
        produce_step(CacheSlot("/nonexistent", "evaluate", key), lambda out: ran.append(out))
    assert ran == []


@pytest.mark.slow  # about 8 s: every step's key, once for each file of its package
def test_editing_any_file_of_a_steps_package_changes_that_steps_key_and_no_others(monkeypatch: pytest.MonkeyPatch):
    """The code version is found, not listed: every .py file of a step's own package (tasks/ingest/ is a folder of
    them, found by walking it) and what those import. A file added to the package counts without being named anywhere."""
    from tasks import caching
    from tasks.steps import STEP_TABLE

    def keys() -> dict[str, str]:
        return {spec.name: step_key(spec.name, {}, {}) for spec in STEP_TABLE}

    before = keys()
    packages = {spec.name: [name for name in caching.SOURCES_AT_START if name == f"tasks/{spec.own_package}.py"
                            or name.startswith(f"tasks/{spec.own_package}/")] for spec in STEP_TABLE}
    assert len(packages["ingest"]) > 1, "ingest is a package of several modules"
    for step, files in packages.items():
        for name in files:
            with monkeypatch.context() as patch:
                patch.setitem(caching.SOURCES_AT_START, name, caching.SOURCES_AT_START[name] + b"\n# edited\n")
                after = keys()
            changed = {other for other in after if after[other] != before[other]}
            assert step in changed, f"editing {name} must change the {step} step's key"
            if step == "ingest":
                assert changed == {"ingest"}, f"editing {name} changed {sorted(changed - {'ingest'})} too"
            # Another step changes with it only when it imports that file (train and evaluate read encode's Vocabulary).
            for other in changed - {step}:
                assert name in caching.code_files(other), f"editing {name} changed {other}'s key, which does not import it"
    # Nothing outside the step's own package and imports: editing the report changes the report alone.
    with monkeypatch.context() as patch:
        patch.setitem(caching.SOURCES_AT_START, "tasks/report.py", caching.SOURCES_AT_START["tasks/report.py"] + b"\n#\n")
        assert {s for s, k in keys().items() if k != before[s]} == {"report"}
    # A module new to the package joins the key without being listed anywhere.
    with monkeypatch.context() as patch:
        patch.setitem(caching.SOURCES_AT_START, "tasks/ingest/new_source.py", b"X = 1\n")
        after = keys()
    assert {s for s, k in after.items() if k != before[s]} == {"ingest"}
