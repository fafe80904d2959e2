"""MLflow tracking (tasks/tracking.py): a run read back through MLflow's client from a real `mlflow server` on
127.0.0.1 (sqlite backend, artifacts in tmp), started once for this module; a server that is down is one warning."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.bucket_fixtures import free_port
from tests.helpers import logged, tiny_config

MLFLOW = Path(sys.executable).with_name("mlflow")


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real MLflow tracking server for this module (one worker; it takes a minute to start on a busy machine)."""
    folder = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    server = subprocess.Popen(
        [str(MLFLOW), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination", str(folder / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=open(folder / "server.log", "wb"), start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},  # no job workers (huey): a quicker start, fewer processes
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2):
                break
        except OSError:
            if server.poll() is not None:
                pytest.fail(f"mlflow server exited: {(folder / 'server.log').read_text()[-2000:]}")
            time.sleep(1)
    else:
        os.killpg(server.pid, signal.SIGKILL)
        pytest.fail("mlflow server did not answer /health within 300 s")
    yield uri
    os.killpg(server.pid, signal.SIGTERM)  # its uvicorn and job workers are in its session
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_tracked_run_shows_its_params_curves_metrics_report_model_and_champion_alias(prefect_api, tiny_run_copy, mlflow_uri):
    import mlflow

    from flows.pipeline import rnnflow_pipeline
    from tasks.store import read_json

    # The steps come from the tiny run's cache; a model of its own, so this run is that model's first champion.
    config = tiny_config(f"track.mlflow_uri={mlflow_uri}", "track.experiment=tracked", "promote.model=tracked-tiny")
    folder = Path(rnnflow_pipeline(config=config, artifacts_root=str(tiny_run_copy.root)))
    manifest = read_json(folder / "manifest.json")
    assert manifest["status"] == "completed"
    record = manifest["tracking"]
    assert record["model"] == "tracked-tiny" and record["model_version"] == "1"

    client = mlflow.MlflowClient(mlflow_uri)
    run = client.get_run(record["run_id"])
    assert run.info.experiment_id == client.get_experiment_by_name("tracked").experiment_id
    assert run.data.tags["rnnflow.run_id"] == folder.name
    assert run.data.tags["prefect.flow_run_id"] == manifest["prefect_flow_run_id"]
    assert run.data.tags["rnnflow.model"] == "tracked-tiny"
    assert run.data.params["train.epochs"] == "2" and run.data.params["model.units"] == "8"
    history = read_json(folder / "train" / "history.json")
    curve = client.get_metric_history(run.info.run_id, "val_loss")
    assert [m.step for m in curve] == [1, 2] and [m.value for m in curve] == pytest.approx(history["val_loss"])
    assert run.data.metrics["test_accuracy"] == pytest.approx(read_json(folder / "evaluate" / "metrics.json")["test"]["accuracy"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert {"report/report.html", "report/report.md", "report/plots"} <= artifacts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "evaluate")] == ["evaluate/metrics.json"]

    champion = client.get_model_version_by_alias("tracked-tiny", "champion")
    assert champion.version == "1" and champion.run_id == run.info.run_id
    model_info = mlflow.models.get_model_info("models:/tracked-tiny/1")
    assert model_info.signature.inputs.to_dict() == [{"type": "tensor", "tensor-spec": {"dtype": "str", "shape": (-1,)}}]
    assert model_info.flavors.get("keras")


    # The Prefect UI tells this run apart: its preset, cell, model, data set and test accuracy as tags (a flow called
    # directly, not through the CLI, has them too); its report's plots inline, its HTML in MLflow.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as prefect:
        flow_run = prefect.read_flow_run(manifest["prefect_flow_run_id"])
        artifacts = prefect.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id])))
    accuracy = read_json(folder / "evaluate" / "metrics.json")["test"]["accuracy"]
    assert {"preset:demo", "cell:gru", "model:tracked-tiny", "data:synthetic", f"test_accuracy:{accuracy:.4f}"} <= set(flow_run.tags)
    by_key = {}
    for artifact in sorted(artifacts, key=lambda a: a.created):
        by_key[artifact.key] = artifact.data
    assert by_key["rnnflow-report-plots"].count("](data:image/png;base64,") == len(read_json(folder / "report" / "report.json")["plots"])
    assert by_key["rnnflow-report-html"].startswith(f"[report.html in MLflow]({mlflow_uri}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}/")


@pytest.mark.slow
def test_a_sweep_is_a_parent_run_with_its_points_nested(tiny_run_copy, mlflow_uri):
    import mlflow

    from tasks.tracking import track_sweep

    first = tiny_run_copy.folder
    second = shutil.copytree(first, first.with_name(first.name + "-b"), symlinks=True)
    config = tiny_config(f"track.mlflow_uri={mlflow_uri}", "track.experiment=swept", "promote.model=swept-tiny")
    records = track_sweep(tiny_run_copy.root / "sweeps" / "sweep-1", config, [(first, config), (second, config)])
    assert sorted(records) == sorted([first.name, second.name])

    client = mlflow.MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name("swept").experiment_id
    parent = client.search_runs([experiment], "tags.`rnnflow.sweep_id` = 'sweep-1' and attributes.run_name = 'sweep-sweep-1'")
    assert len(parent) == 1
    nested = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent[0].info.run_id}'")
    assert sorted(run.data.tags["rnnflow.run_id"] for run in nested) == sorted(records)


def test_a_server_that_is_down_is_one_warning_and_no_tracking(tmp_path):
    from tasks.tracking import track_run

    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config = tiny_config(f"track.mlflow_uri={uri}")
    with logged("rnnflow.tracking") as records:
        assert track_run(tmp_path, config) is None
    warnings = [record.getMessage() for record in records if record.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"The MLflow tracking server at {uri} did not answer (")
    assert "the run goes on untracked" in warnings[0]


@pytest.mark.slow
def test_without_tracking_a_run_never_imports_mlflow():
    code = "import sys, flows.pipeline, flows.sweep, flows.cli; assert 'mlflow' not in sys.modules, 'mlflow was imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
