"""Alerts (tasks/notify.py): a failed flow run POSTs its run id, failed step and sentence to an HTTP receiver on
127.0.0.1, through notify.webhook and through a Prefect notification block; the webhook URL is never recorded."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.bucket_fixtures import free_port
from tests.helpers import logged, tiny_config

SECRET = "T000-s3cr3t-token"


@pytest.fixture
def receiver():
    """An HTTP server on 127.0.0.1 that keeps every POST: (path, JSON body)."""
    received: list[tuple[str, dict]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append((self.path, json.loads(body or b"{}")))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield SimpleNamespace(url=f"http://127.0.0.1:{server.server_port}", received=received)
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_a_failed_run_alerts_the_webhook_and_the_block_and_records_no_secret(prefect_api, receiver, tmp_path, caplog):
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client

    from flows.pipeline import rnnflow_pipeline

    CustomWebhookNotificationBlock(name="rnnflow-alert", url=f"{receiver.url}/block", json_data={"text": "{{body}}"},
                                   allow_private_urls=True).save(
        "rnnflow-test", overwrite=True)
    webhook = f"{receiver.url}/hook/{SECRET}"
    config = tiny_config("data.source=table", f"data.path={tmp_path / 'missing.csv'}", "data.retries=0",
                         f"notify.webhook={webhook}", "notify.block=custom-webhook/rnnflow-test")
    root = tmp_path / "artifacts"
    with caplog.at_level(logging.DEBUG):
        state = rnnflow_pipeline(config=config, artifacts_root=str(root), return_state=True)
    assert state.is_failed()

    (folder,) = (root / "runs").iterdir()
    manifest = json.loads((folder / "manifest.json").read_text())
    paths = [path for path, _ in receiver.received]
    assert sorted(paths) == sorted([f"/hook/{SECRET}", "/block"])
    alert = dict(receiver.received)[f"/hook/{SECRET}"]
    assert alert["run_id"] == folder.name and alert["failed_step"] == "ingest"
    assert alert["flow_run_id"] == manifest["prefect_flow_run_id"] and alert["state"] == "Failed"
    assert "missing.csv" in alert["error"] and alert["model"] == config.model_name
    assert alert["text"].endswith(f"run {folder.name}: step ingest failed: {alert['error']}")
    assert dict(receiver.received)["/block"]["text"] == alert["text"]

    with get_client(sync_client=True) as client:
        parameters = client.read_flow_run(manifest["prefect_flow_run_id"]).parameters
    recorded = [json.dumps(parameters), json.dumps(manifest), (folder / "run.log").read_text(), caplog.text, json.dumps(alert)]
    assert not [text for text in recorded if SECRET in text]
    assert manifest["config"]["notify"]["webhook"] == "(set, not recorded)"


def test_a_receiver_that_is_down_is_one_warning(monkeypatch, capsys):
    from prefect.states import Failed

    from tasks.notify import notify_failure

    monkeypatch.setenv("RNNFLOW_NOTIFY_WEBHOOK", f"http://127.0.0.1:{free_port()}/{SECRET}")  # nothing listens there
    flow_run = SimpleNamespace(id="0000", name="demo-gru-1", parameters={})
    with logged("rnnflow.notify") as records:
        notify_failure(SimpleNamespace(name="rnnflow"), flow_run, Failed(message="step train failed: out of memory"))
    warnings = [record.getMessage() for record in records if record.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("Could not send the failure alert to notify.webhook (or RNNFLOW_NOTIFY_WEBHOOK) (")
    assert SECRET not in warnings[0] and SECRET not in capsys.readouterr().err


def test_the_webhook_is_never_dumped_nor_echoed_in_an_error():
    from tasks.config import ConfigError, RunConfig, load_config

    config = tiny_config(f"notify.webhook=https://hooks.example/{SECRET}")
    assert config.notify.webhook_url() == f"https://hooks.example/{SECRET}"
    assert SECRET not in json.dumps(config.as_dict()) and SECRET not in repr(config)
    assert RunConfig.model_validate(config.as_dict()).notify.webhook is None  # a recorded config: the URL comes from the environment
    with pytest.raises(ConfigError) as error:
        load_config("demo", overrides=[f"notify.webhook=hooks.example/{SECRET}"])
    assert "should be an http:// or https:// URL" in str(error.value) and SECRET not in str(error.value)
