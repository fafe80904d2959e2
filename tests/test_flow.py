"""The whole flow against a real Prefect API, on a corpus the tests make themselves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prefect.artifacts import Artifact

from flows.pipeline import rnnflow_pipeline
from tasks.steps import STEPS
from tasks.store import ArtifactStore, sha256_file
from tests.helpers import manifest as _manifest
from tests.helpers import tiny_config

pytestmark = pytest.mark.slow  # whole flow runs


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "artifacts"


def test_run_writes_a_complete_run_folder(tiny_run, tiny_run_copy):
    # The session's tiny run (tests/conftest.py): the tiny configuration, the first run in a fresh root.
    folder = tiny_run.folder
    manifest = _manifest(folder)
    assert manifest["status"] == "completed"
    assert list(manifest["steps"]) == list(STEPS)
    assert manifest["config"]["train"]["epochs"] == 2
    assert manifest["environment"]["tensorflow"].startswith("2.21")
    for step, entry in manifest["steps"].items():
        assert entry["status"] == "completed"
        for name, digest in entry["outputs"].items():
            assert sha256_file(folder / step / name) == digest, f"{step}/{name} matches the manifest"
    metrics = json.loads((folder / "evaluate" / "metrics.json").read_text())
    assert {"accuracy", "loss", "f1", "roc_auc"} <= set(metrics["test"])
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0
    html = (folder / "report" / "report.html").read_text()
    assert "data:image/png;base64," in html
    assert (folder / "validate" / "data_docs" / "index.html").exists()
    assert (folder / "train" / "model.keras").exists()

    # The same configuration again, in a copy of that root: nothing recomputes but promote (never cached: it
    # asks the champion); the new folder is complete on its own, and the UI still gets its report.
    root = tiny_run_copy.root
    config = tiny_config()
    again = Path(rnnflow_pipeline(config=config, artifacts_root=str(root)))
    assert again != tiny_run_copy.folder
    steps = _manifest(again)["steps"]
    expected = {name: "cached" for name in STEPS} | {"promote": "completed"}
    assert {name: entry["status"] for name, entry in steps.items()} == expected
    assert (again / "train" / "model.keras").read_bytes() == (folder / "train" / "model.keras").read_bytes()
    link = Artifact.get("rnnflow-report-html")
    assert link is not None and (again / "report" / "report.html").resolve().as_uri() in link.data

    # A train-only change recomputes exactly train, evaluate, report and promote.
    changed = tiny_config("train.epochs=1")
    third = _manifest(Path(rnnflow_pipeline(config=changed, artifacts_root=str(root))))
    assert {n: e["status"] for n, e in third["steps"].items()} == {
        "ingest": "cached", "validate": "cached", "encode": "cached", "baseline": "cached",
        "train": "completed", "evaluate": "completed", "report": "completed", "promote": "completed",
    }
    assert len(ArtifactStore(root).list_runs()) == 3


def test_bad_data_stops_before_training_and_marks_the_run_failed(prefect_api, root: Path):
    config = tiny_config("data.synthetic_positive_fraction=0.05")
    with pytest.raises(Exception, match="class_balance|class balance"):
        rnnflow_pipeline(config=config, artifacts_root=str(root))
    (folder,) = (root / "runs").iterdir()
    manifest = _manifest(folder)
    assert manifest["status"] == "failed"
    assert manifest["steps"]["validate"]["status"] == "failed"
    assert "train" not in manifest["steps"]
    assert (folder / "validate" / "validation.json").exists(), "the failed checks are kept for reading"
