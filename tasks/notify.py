"""Alerts: a failed or crashed flow run tells notify.webhook (a JSON POST) and/or a Prefect notification block.

A flow hook, so any flow attaches it in one line (the training flow and the sweep do):

    @flow(name="...", on_failure=[notify_failure], on_crashed=[notify_failure])

It finds where to send from the flow run's `config` parameter (a RunConfig: notify.webhook, notify.block),
else from RNNFLOW_NOTIFY_WEBHOOK; a flow that knows its rnnflow run id tells it with note_run_id(run_id).
The alert carries the run id, the failed step and the one sentence of the failure. The webhook URL may hold a
secret: it is never logged, recorded or put in the alert. Alerting never fails anything: a receiver that is
down or refuses is one warning line.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from typing import Any

from tasks.config import RunConfig
from tasks.config_reporting import WEBHOOK_ENV, NotifyConfig
from tasks.logs import one_line

TIMEOUT_SECONDS = 10
_RUN_IDS: dict[str, str] = {}  # Prefect flow run id -> the rnnflow run id it works on (note_run_id)
_LOG = logging.getLogger("rnnflow.notify")


def note_run_id(run_id: str) -> None:
    """Tell a later alert of this flow run which rnnflow run (run folder) it is about."""
    from prefect.runtime import flow_run

    if flow_run.id:
        _RUN_IDS[str(flow_run.id)] = run_id


def _run_config(flow_run: Any) -> RunConfig | None:
    """The flow run's configuration: the live object (with the webhook), else its recorded parameter (without)."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    live = (context.parameters or {}).get("config") if context is not None and context.parameters else None
    if isinstance(live, RunConfig):
        return live
    recorded = (getattr(flow_run, "parameters", None) or {}).get("config")
    try:
        return RunConfig.model_validate(recorded) if isinstance(recorded, dict) else None
    except ValueError:
        return None


def _failure(state: Any) -> tuple[str | None, str]:
    """(the step that failed, the one sentence) from the flow run's final state."""
    try:
        error = state.result(raise_on_failure=False)
    except Exception as raised:  # noqa: BLE001 - a crashed state's result can raise itself
        error = raised
    if isinstance(error, BaseException):
        return getattr(error, "step", None), getattr(error, "reason", None) or one_line(error)
    return None, one_line(state.message or f"the flow run ended {state.name}")


def alert_body(flow: Any, flow_run: Any, state: Any, config: RunConfig | None) -> dict[str, Any]:
    """The alert, as the webhook gets it (JSON) and a block's message is written from."""
    step, sentence = _failure(state)
    run_id = _RUN_IDS.get(str(flow_run.id))
    where = f"step {step} failed" if step else "it failed"
    model = config.model_name if config is not None else None
    text = f"rnnflow: flow run {flow_run.name} ({flow.name}) {state.name.lower()}" + (f", run {run_id}" if run_id else "") + f": {where}: {sentence}"
    return {
        "text": text, "flow": flow.name, "flow_run_id": str(flow_run.id), "flow_run_name": flow_run.name, "state": state.name,
        "run_id": run_id, "failed_step": step, "error": sentence, "model": model,
        "data": None if config is None else {"source": config.data.source, "path": config.data.path},
    }


def post_webhook(url: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as answer:
        answer.read(1024)


def notify_block(name: str, body: dict[str, Any]) -> None:
    """Send the alert through a saved Prefect notification block ("type-slug/name", as `prefect block ls` shows)."""
    from prefect.blocks.core import Block

    block = Block.load(name)
    block.notify(body["text"], subject=f"rnnflow: {body['flow_run_name']} {body['state'].lower()}")


def _warn(what: str, error: BaseException) -> None:
    # urllib's errors name the reason, not the URL: the secret stays out of the line.
    reason = getattr(error, "reason", None) or error
    _logger().warning("Could not send the failure alert to %s (%s); the run's state and log have the failure.", what, one_line(reason))


def _logger() -> Any:
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return _LOG


def notify_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """Prefect on_failure / on_crashed hook: alert each configured target; a target that fails is one warning."""
    config = _run_config(flow_run)
    settings = config.notify if config is not None else NotifyConfig()
    url = settings.webhook_url()
    if not url and not settings.block:
        return
    body = alert_body(flow, flow_run, state, config)
    if url:
        try:
            post_webhook(url, body)
        except Exception as error:  # noqa: BLE001 - an alert never fails anything
            _warn(f"notify.webhook (or {WEBHOOK_ENV})", error)
    if settings.block:
        try:
            notify_block(settings.block, body)
        except Exception as error:  # noqa: BLE001
            _warn(f"the Prefect notification block {settings.block!r}", error)
