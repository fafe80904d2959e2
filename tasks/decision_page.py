"""promote/decision.html: the promotion decision as a page a reader opens beside the report.

The report is cached and made before promote, so it cannot say whether its run was promoted (that
changes with the champion); it links here instead. This page is made by the promote step from its
decision (tasks/promote.py `decide`), never cached, and links back to the report, to the Data Docs
and, when the user runs a Prefect server of their own, to the flow run in Prefect's UI.

Every page of a run folder sits one folder deep (report/report.html, promote/decision.html), so the
links between them are relative ones that hold wherever the folder is copied or served from.

tasks/promote.py imports this module; the decision's rows and titles come from tasks/decision_rows.py, which both import.
"""

from __future__ import annotations

import html
import sys
from typing import Any

from tasks.decision_rows import TITLES, promotion_rows
from tasks.render import STYLESHEET, Table, html_badge, html_link, html_table

REPORT_PAGE = "../report/report.html"
DECISION_PAGE = "../promote/decision.html"
DATA_DOCS_PAGE = "../validate/data_docs/index.html"

# tasks.promote.validation_verdict's status -> badge tone: a warning that blocks promotion is as red as an error.
VERDICT_TONES = {"passed": "ok", "warnings": "warn", "blocked": "bad", "failed": "bad"}
OUTCOME_TONES = {"promoted": "ok", "not_promoted": "bad", "skipped": "neutral"}

_PAGE_STYLE = """
h1.ok { color: #05603a; } h1.bad { color: #912018; } h1.neutral { color: #344054; }
.reason { font-size: 1.1rem; margin: 0.4rem 0 0.6rem; }
"""


def validation_badge(verdict: dict[str, Any]) -> str:
    """The verdict's text in a badge coloured by its status (HTML)."""
    return html_badge(str(verdict.get("text", "")), VERDICT_TONES.get(str(verdict.get("status")), "neutral"))


def _links(prefect_run_url: str | None) -> list[str]:
    report = html_link("The run's report", REPORT_PAGE)
    data_docs = html_link("Great Expectations Data Docs", DATA_DOCS_PAGE)
    items = [f"{report}: metrics, plots, the most confident mistakes",
             f"{data_docs}: every validation check, as Great Expectations shows it"]
    # Only a web address: the page must not carry a javascript: or file: link made from a setting.
    if prefect_run_url and prefect_run_url.startswith(("http://", "https://")):
        items.append(f"{html_link('The flow run in the Prefect UI', prefect_run_url)}: its tasks, logs and artifacts")
    return items


def render_decision_page(decision: dict[str, Any], *, run_id: str, model: str, prefect_run_url: str | None = None) -> str:
    """The decision as one self-contained HTML page: its outcome, why, the model, the validation verdict, the numbers, links."""
    outcome = str(decision.get("outcome"))
    title = TITLES.get(outcome, "Promotion")
    verdict = decision.get("validation") or {}
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(f'{title}: run {run_id}')}</title><style>{STYLESHEET}{_PAGE_STYLE}</style></head><body>",
        f'<header><h1 class="{OUTCOME_TONES.get(outcome, "neutral")}">{html.escape(title)}</h1>',
        f'<p class="reason"><strong>Why:</strong> {html.escape(str(decision.get("reason") or "no reason recorded"))}</p>',
        f'<p class="subtitle">Run <strong>{html.escape(run_id)}</strong> · model <strong>{html.escape(model)}</strong>: '
        "the run competes for this model's champion only</p>",
    ]
    if "text" in verdict:  # decisions recorded before the verdict have none
        parts.append(f'<p class="verdict"><strong>Validation:</strong> {validation_badge(verdict)}</p>')
    parts += [
        "</header>",
        "<section><h2>The decision</h2>",
        html_table(Table(["Measure", "Value"], promotion_rows(decision), number_columns=frozenset())),
        "</section>",
        *_data_section(decision.get("data_vs_champion")),
        "<section><h2>More about this run</h2><ul>",
        *(f"<li>{item}</li>" for item in _links(prefect_run_url)),
        "</ul></section>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _temporary_server_urls() -> set[str]:
    """The API addresses of Prefect temporary servers running in this process (rnnflow's or Prefect's own)."""
    module = sys.modules.get("prefect.server.api.server")
    if module is None:  # never imported: no temporary server was started here
        return set()
    servers = getattr(module.SubprocessASGIServer, "_instances", {}).values()
    return {str(server.api_url).rstrip("/") for server in servers if getattr(server, "running", False)}


def _data_section(data: dict[str, Any] | None) -> list[str]:
    """This run's data against the champion's (tasks/champion_data.py), when there was a champion to compare with."""
    if not data:
        return []
    from tasks.champion_data import figure_cells

    parts = [f"<section><h2>This run's data against champion {html.escape(str(data['champion_run']))}'s</h2>",
             f"<p>{html.escape(str(data['note']))}. The same figures and bounds as <code>rnnflow score</code>'s drift check; "
             "shown, not deciding.</p>"]
    if data["rows"]:
        parts.append(html_table(Table(["Figure", "This run", "Champion", "Bound", "Outcome"],
                                      [figure_cells(row) for row in data["rows"]], number_columns=frozenset())))
    return [*parts, "</section>"]


def current_flow_run_url() -> str | None:
    """prefect_flow_run_url of the flow run this code runs in (None outside one)."""
    from prefect.runtime import flow_run

    return prefect_flow_run_url(str(flow_run.id) if flow_run.id else None)


def prefect_flow_run_url(flow_run_id: str | None) -> str | None:
    """The flow run's page in Prefect's UI when the flow reports to a Prefect server of the user's own; else None.

    Own: PREFECT_API_URL is set (its UI address is PREFECT_UI_URL, which Prefect derives from the API
    address unless it is set too). Without it, `rnnflow run` reports to a temporary server that shows no
    UI and dies with the process (flows/prefect_server.py), as does a sweep's (flows/sweep.py sets
    PREFECT_API_URL to one while it runs): a link to either would be dead by the time anyone opens it.
    """
    if not flow_run_id:
        return None
    from prefect.settings import PREFECT_API_URL
    from prefect.utilities.urls import url_for

    api_url = PREFECT_API_URL.value()
    if not api_url or str(api_url).rstrip("/") in _temporary_server_urls():
        return None
    return url_for("flow-run", obj_id=str(flow_run_id)) or None
