"""MLflow tracking (the mlflow extra, on when track.mlflow_uri or MLFLOW_TRACKING_URI is set): a finished run, logged.

What a run logs, read from its run folder once the steps are done: the flattened configuration as params,
the train step's curves per epoch (step = epoch), the test metrics, the report and metrics.json as artifacts,
and the string-in model (train/model_text.keras) through MLflow's Keras flavour with a signature, registered
as a version of the run's model (RunConfig.model_name). When the run became its model's champion, that
version gets the registered model's `champion` alias. A sweep is a parent run with its points nested.

Tracking never fails a run: a server that is down or refuses, or mlflow missing, is one warning sentence and
the run goes on; the run folder and `rnnflow runs` have everything. mlflow is imported only here, and only
when tracking is on. Loading the logged model needs rnnflow's layers: `import tasks.export` first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

from tasks.config import RunConfig
from tasks.errors import RnnflowError
from tasks.store import RunFiles, read_json

CHAMPION_ALIAS = "champion"
MODEL_ARTIFACT = "model"
TAGS = {"run": "rnnflow.run_id", "flow_run": "prefect.flow_run_id", "model": "rnnflow.model", "sweep": "rnnflow.sweep_id"}
SIGNATURE_ROWS = 3  # test texts the model's signature is inferred from
_LOG = logging.getLogger("rnnflow.tracking")


class TrackingUnavailable(RnnflowError, RuntimeError):
    """Tracking cannot happen for this run: the message is the one warning sentence (a warning, never raised past this module)."""


def tracking_uri(config: RunConfig) -> str | None:
    return config.track.uri()


def _warn(logger: Any, what: str, error: BaseException) -> None:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    sentence = text if isinstance(error, TrackingUnavailable) else f"MLflow tracking failed while {what} ({type(error).__name__}: {text[:300]})"
    (logger or _LOG).warning("%s; the run goes on untracked, and its run folder (rnnflow runs) has everything.", sentence.rstrip("."))


def _mlflow(uri: str) -> Any:
    """mlflow, pointed at uri, after a quick check that the server answers (so a dead one costs seconds, not retries)."""
    # MLflow's client retries a refused connection for minutes by default; a down server should cost seconds.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10) as answer:
                answer.read(64)
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", None) or error
            raise TrackingUnavailable(f"The MLflow tracking server at {uri} did not answer ({reason})") from None
    try:
        import mlflow
    except ImportError:
        raise TrackingUnavailable(
            f"track.mlflow_uri is {uri} but MLflow is not installed: install the extra (uv sync --extra mlflow, or pip install 'rnnflow[mlflow]')"
        ) from None
    mlflow.set_tracking_uri(uri)
    return mlflow


def flat_params(config: RunConfig) -> dict[str, str]:
    """The configuration as MLflow params: dotted keys ("train.epochs"), values as text (notify.webhook redacted)."""
    flat: dict[str, str] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        else:
            flat[prefix] = str(node)[:6000]  # MLflow's limit on a param's value

    walk("", config.as_dict())
    return flat


def _epoch_metrics(folder: Path) -> list[tuple[str, float, int]]:
    history_file = RunFiles.HISTORY.of_run(folder)
    if not history_file.exists():
        return []
    return [(name, float(value), epoch) for name, values in read_json(history_file).items()
            for epoch, value in enumerate(values, start=1) if value is not None]


def _test_metrics(folder: Path) -> dict[str, float]:
    metrics_file = RunFiles.METRICS.of_run(folder)
    test = read_json(metrics_file).get("test", {}) if metrics_file.exists() else {}
    return {f"test_{name}": float(value) for name, value in test.items() if isinstance(value, (int, float)) and name != "n"}


def _log_artifacts(mlflow: Any, folder: Path) -> None:
    for run_file in (RunFiles.METRICS, RunFiles.REPORT_HTML, RunFiles.REPORT_MARKDOWN, RunFiles.DECISION):
        if run_file.of_run(folder).exists():
            mlflow.log_artifact(str(run_file.of_run(folder)), artifact_path=run_file.step)
    plots = folder / "report" / "plots"
    if plots.is_dir():
        mlflow.log_artifacts(str(plots), artifact_path="report/plots")


def _log_model(mlflow: Any, folder: Path, model_name: str) -> str | None:
    """model_text.keras through the Keras flavour, registered under model_name; returns the version."""
    path = RunFiles.TEXT_MODEL.of_run(folder)
    if not path.exists():
        return None
    import keras
    import numpy as np
    import pandas as pd
    import tensorflow as tf
    from mlflow.models import infer_signature

    import tasks.export  # noqa: F401  (registers the layers model_text.keras holds)

    model = keras.models.load_model(path, compile=False)
    texts = pd.read_parquet(RunFiles.TEST_TEXTS.of_run(folder), columns=["text"])["text"].head(SIGNATURE_ROWS).tolist() or ["a review"]
    predictions = np.asarray(model(tf.constant(texts)))
    signature = infer_signature(np.array(texts, dtype=str), predictions)  # a 1-D tensor of strings in
    requirements = [f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}", f"tensorflow-text=={tf.__version__.rsplit('.', 1)[0]}.*"]
    info = mlflow.keras.log_model(model, name=MODEL_ARTIFACT, signature=signature, registered_model_name=model_name,
                                  pip_requirements=requirements)
    version = getattr(info, "registered_model_version", None)
    return None if version is None else str(version)


def _champion_of(manifest: dict[str, Any]) -> bool:
    promotion = manifest.get("promotion") or {}
    return bool(promotion.get("promoted"))


def log_run(mlflow: Any, folder: Path, config: RunConfig, *, nested: bool = False) -> dict[str, Any]:
    """Log one finished run folder as an MLflow run (nested under the active one); returns what to note in the manifest."""
    from mlflow.entities import Metric

    manifest = read_json(folder / "manifest.json")
    model_name = config.model_name
    tags = {TAGS["run"]: folder.name, TAGS["flow_run"]: manifest.get("prefect_flow_run_id") or "", TAGS["model"]: model_name}
    if manifest.get("sweep_id"):
        tags[TAGS["sweep"]] = manifest["sweep_id"]
    with mlflow.start_run(run_name=folder.name, nested=nested, tags=tags) as active:
        client = mlflow.MlflowClient()
        params = flat_params(config)
        client.log_batch(active.info.run_id, params=[mlflow.entities.Param(k, v) for k, v in params.items()])
        now = int(time.time() * 1000)
        metrics = [Metric(name, value, now, step) for name, value, step in _epoch_metrics(folder)]
        metrics += [Metric(name, value, now, 0) for name, value in _test_metrics(folder).items()]
        for start in range(0, len(metrics), 500):  # log_batch's limit is 1000 metrics
            client.log_batch(active.info.run_id, metrics=metrics[start:start + 500])
        _log_artifacts(mlflow, folder)
        version = _log_model(mlflow, folder, model_name)
        record = {"uri": mlflow.get_tracking_uri(), "experiment": config.track.experiment, "experiment_id": active.info.experiment_id,
                  "run_id": active.info.run_id,
                  "model": model_name, "model_version": version}
    if version is not None and _champion_of(manifest):
        set_champion_alias(record, logger=None)
    return record


def set_champion_alias(record: dict[str, Any], logger: Any = None) -> bool:
    """Point the registered model's `champion` alias at the version a tracked run registered (its manifest's `tracking`)."""
    if not record or not record.get("model_version"):
        return False
    try:
        mlflow = _mlflow(record["uri"])
        mlflow.MlflowClient().set_registered_model_alias(record["model"], CHAMPION_ALIAS, record["model_version"])
    except Exception as error:  # noqa: BLE001 - tracking never fails a run or a promotion
        _warn(logger, "setting the champion alias", error)
        return False
    return True


@contextlib.contextmanager
def _experiment(config: RunConfig) -> Iterator[Any]:
    uri = tracking_uri(config)
    mlflow = _mlflow(uri or "")
    mlflow.set_experiment(config.track.experiment)
    yield mlflow


def track_run(folder: str | Path, config: RunConfig, logger: Any = None) -> dict[str, Any] | None:
    """Log a finished run to MLflow when tracking is on; None when off or when it failed (warned once)."""
    if not tracking_uri(config):
        return None
    try:
        with _experiment(config) as mlflow:
            return log_run(mlflow, Path(folder), config)
    except Exception as error:  # noqa: BLE001 - tracking never fails a run
        _warn(logger, "logging the run", error)
        return None


def track_sweep(sweep_folder: str | Path, config: RunConfig, points: list[tuple[Path, RunConfig]], logger: Any = None) -> dict[str, Any]:
    """A sweep as a parent MLflow run with each finished point nested under it; returns {run id: record} (empty when off or failed)."""
    records: dict[str, Any] = {}
    if not tracking_uri(config):
        return records
    sweep_id = Path(sweep_folder).name
    try:
        with _experiment(config) as mlflow:
            manifest_file = Path(sweep_folder) / "manifest.json"
            flow_run_id = read_json(manifest_file).get("prefect_flow_run_id") if manifest_file.exists() else None
            tags = {TAGS["sweep"]: sweep_id, TAGS["model"]: config.model_name, TAGS["flow_run"]: flow_run_id or ""}
            with mlflow.start_run(run_name=f"sweep-{sweep_id}", tags=tags):
                mlflow.log_params({"grid_points": str(len(points))})
                for folder, point_config in points:
                    records[folder.name] = log_run(mlflow, folder, point_config, nested=True)
    except Exception as error:  # noqa: BLE001 - tracking never fails a sweep
        _warn(logger, "logging the sweep", error)
    return records
