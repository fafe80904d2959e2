"""A promotion decision (promote/decision.json) as measure/value rows: what the decision page (tasks/decision_page.py),
the Prefect artifact and the report show. Apart from tasks/promote.py, which decides, so that the page imports
these rows without importing promote, which imports the page.
"""

from __future__ import annotations

from typing import Any

from tasks.promotion_checks import baseline_rows
from tasks.render import Table, as_number, format_metric, markdown_table

PROMOTED, NOT_PROMOTED, SKIPPED = "promoted", "not_promoted", "skipped"
TITLES = {PROMOTED: "Promoted", NOT_PROMOTED: "Not promoted", SKIPPED: "Not promoted (promotion disabled)"}


def promotion_rows(decision: dict[str, Any]) -> list[list[str]]:
    """The decision as measure/value rows, for the report and the Prefect artifact."""
    champion = decision.get("champion") or {}
    rows = [
        ["Outcome", TITLES.get(decision.get("outcome"), str(decision.get("outcome")))],
        ["Model", str(decision.get("model") or "(one champion per root: decided before models)")],
        ["Reason", str(decision.get("reason", ""))],
        ["Metric", f"{decision.get('metric')} ({'higher' if decision.get('higher_is_better', True) else 'lower'} is better)"],
        ["This run", format_metric(decision.get("new"))],
    ]
    if champion.get("missing"):
        rows.append([f"Champion {champion.get('run_id')}", "its run folder is gone"])
    elif champion:
        where = "re-scored on this run's test split" if champion.get("rescored") else "same test split"
        rows.append([f"Champion {champion.get('run_id')}", f"{format_metric(champion.get('value'))} ({where})"])
        if champion.get("rescored"):
            rows.append(["Champion on its own test split", format_metric(champion.get("own_value"))])
        delta = as_number(decision.get("delta"))
        rows.append(["Delta", "n/a" if delta is None else f"{delta:+.4f}"])
    rows.append(["min_delta", format_metric(decision.get("min_delta"))])
    for floor in decision.get("floors") or []:
        rows.append([f"Floor {floor['metric']} ({floor['kind']} {floor['bound']:.4f})", f"{format_metric(floor['value'])} {'passed' if floor['passed'] else 'FAILED'}"])
    rows.extend(baseline_rows(decision.get("baseline")))
    validation = decision.get("validation") or {}
    if "text" in validation:
        rows.append(["Validation", str(validation["text"])])
    else:  # decisions recorded before the verdict: every failed check blocked
        failed = validation.get("failed_checks") or []
        rows.append(["Validation", f"all {validation.get('n_checks', 0)} checks passed" if not failed else "failed: " + ", ".join(map(str, failed))])
    rows.append(["Decided by", str(decision.get("decided_by", "")) + (" (forced)" if decision.get("forced") and "forced" not in str(decision.get("decided_by")) else "")])
    return rows


def promotion_markdown(decision: dict[str, Any]) -> str:
    title = TITLES.get(decision.get("outcome"), "Promotion")
    return f"# {title}\n\n{markdown_table(Table(['Measure', 'Value'], promotion_rows(decision)))}\n"
