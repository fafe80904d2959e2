"""What tells flow runs apart in the Prefect UI's runs list: tags with the model, the data set and, once done,
the test accuracy; and, for a tracked run, a link to its report where a browser can open it (MLflow's UI).

Labels are a view: a failure to set one is one warning line, never a failed run.
"""

from __future__ import annotations

import time
from typing import Any

from tasks.architectures import run_name_label
from tasks.config import RunConfig


def data_set(config: RunConfig) -> str:
    """"synthetic", or the source and the input's file name: "imdb:aclImdb_v1.tar.gz", "table:ko_reviews_train.tsv"."""
    if config.data.source == "synthetic":
        return "synthetic"
    return f"{config.data.source}:{config.data.path.rstrip('/').rsplit('/', 1)[-1]}"


def flow_run_name(config: dict[str, Any]) -> str:
    """A flow run's name in the Prefect UI: preset, model (the registry's run_name_label) and start time, "default-lstm-20261206-041500"."""
    return f"{config.get('preset', 'default')}-{run_name_label(config.get('model') or {})}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_tags(config: RunConfig) -> list[str]:
    """The flow run's tags, set once it starts. Not a `prefect.tags` context around the call: its task runs would carry
    them too, and Prefect asks the server for tag concurrency slots before every tagged task run (0.2-0.4 s a step)."""
    return [f"preset:{config.preset}", f"cell:{config.model.cell}", f"model:{config.model_name}", f"data:{data_set(config)}"]


def add_flow_run_tags(tags: list[str], logger: Any) -> bool:
    """Add tags to the current flow run (kept with those it has); outside a flow run, nothing."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    if not flow_run.id:
        return False
    try:
        with get_client(sync_client=True) as client:
            current = client.read_flow_run(flow_run.id).tags or []
            client.update_flow_run(flow_run.id, tags=[*current, *(tag for tag in tags if tag not in current)])
    except Exception as error:  # noqa: BLE001 - a label is a view; the run goes on
        logger.warning("Could not tag the flow run in Prefect (%s: %s).", type(error).__name__, str(error).splitlines()[0] if str(error) else "")
        return False
    return True


def mlflow_report_url(record: dict[str, Any], experiment_id: str) -> str:
    """The report.html a tracked run logged, opened in MLflow's UI (which renders HTML artifacts)."""
    return f"{record['uri'].rstrip('/')}/#/experiments/{experiment_id}/runs/{record['run_id']}/artifacts/report/report.html"


def publish_tracked_report_link(record: dict[str, Any], logger: Any) -> bool:
    """A link artifact to the tracked run's report in MLflow, beside the report's file:// link (the same key, a newer version)."""
    from prefect.artifacts import create_link_artifact

    from tasks.report import LINK_ARTIFACT_KEY

    try:
        create_link_artifact(link=mlflow_report_url(record, record["experiment_id"]), link_text="report.html in MLflow", key=LINK_ARTIFACT_KEY,
                             description="The HTML report, logged with the run to MLflow: opens from any browser that reaches the server")
    except Exception as error:  # noqa: BLE001
        logger.warning("Could not publish the report's MLflow link to Prefect (%s).", error)
        return False
    return True
