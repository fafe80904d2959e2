"""A scoring run's short summary: summary.md and summary.html in its scores/<id>/ folder, and its Prefect artifacts.

Both say the same: the input and its rows, the champion that labelled them (run and model sha256), the
predicted labels, and every drift figure beside the reference's, failed ones first in words.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from tasks.store import write_text

MARKDOWN_ARTIFACT_KEY = "rnnflow-score-summary"
TABLE_ARTIFACT_KEY = "rnnflow-score-drift"


def _value(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:.0f}" if abs(value) >= 10 or float(value).is_integer() else f"{value:.3f}"


def drift_table(manifest: dict[str, Any]) -> list[dict[str, str]]:
    """One row per drift figure: figure, value, reference, bound, outcome."""
    rows = []
    for row in manifest["drift"]["figures"]:
        outcome = "no reference" if not manifest["drift"]["reference"] else ("ok" if row["passed"] else "DRIFT")
        rows.append({"figure": row["figure"], "value": _value(row["value"]), "reference": _value(row["reference"]),
                     "bound": row.get("bound") or "–", "outcome": outcome})
    return rows


def _headline(manifest: dict[str, Any]) -> list[str]:
    champion, source, drift = manifest["champion"], manifest["input"], manifest["drift"]
    counts = ", ".join(f"{label} {n:,}" for label, n in manifest["label_counts"].items())
    lines = [
        f"Input: {source['location']} ({manifest['rows']:,} rows, column {source['text_column']!r}, sha256 {source['fingerprint'][:12]})",
        f"Champion: model {champion['model']}, run {champion['run_id']}, model.keras sha256 {champion['model_sha256'][:12]}",
        f"Labels: {counts}; {manifest['empty']:,} text(s) with no words kept with the model's guess (column empty)",
    ]
    if not drift["reference"]:
        lines.append(f"Drift: not checked: {drift['warning']}")
    elif drift["failed"]:
        lines.append(f"Drift: {len(drift['failed'])} of {len(drift['figures'])} figures out of bounds (score.on_drift: {manifest['on_drift']})")
    else:
        lines.append(f"Drift: none; all {len(drift['figures'])} figures within bounds")
    return lines


def summary_markdown(manifest: dict[str, Any]) -> str:
    lines = [f"# Scoring run {manifest['score_id']}", ""] + [f"- {line}" for line in _headline(manifest)] + [""]
    lines += [f"- {message}" for message in manifest["drift"]["failed"]]
    rows = drift_table(manifest)
    lines += ["", "| figure | value | reference | bound | outcome |", "|---|---|---|---|---|"]
    lines += [f"| {r['figure']} | {r['value']} | {r['reference']} | {r['bound']} | {r['outcome']} |" for r in rows]
    lines += ["", "Files: predictions.parquet (row, label, probabilities), figures.parquet, drift.json, data_docs/index.html, manifest.json", ""]
    return "\n".join(lines)


def summary_html(manifest: dict[str, Any]) -> str:
    esc = html.escape
    items = "".join(f"<li>{esc(line)}</li>" for line in _headline(manifest))
    failed = "".join(f"<li class='bad'>{esc(message)}</li>" for message in manifest["drift"]["failed"])
    body = "".join(
        f"<tr class='{'bad' if r['outcome'] == 'DRIFT' else ''}'>" + "".join(f"<td>{esc(r[k])}</td>" for k in ("figure", "value", "reference", "bound", "outcome")) + "</tr>"
        for r in drift_table(manifest)
    )
    docs = "<p>Great Expectations: <a href='data_docs/index.html'>Data Docs</a> of the drift suite.</p>" if manifest["drift"]["reference"] else ""
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>rnnflow score " + esc(manifest["score_id"]) + "</title><style>"
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:60em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.3em .7em;text-align:left}th{background:#f3f3f3}.bad{color:#a00;font-weight:600}"
        "</style></head><body>"
        f"<h1>Scoring run {esc(manifest['score_id'])}</h1><ul>{items}</ul>"
        + (f"<h2>Drift</h2><ul>{failed}</ul>" if failed else "")
        + "<h2>Drift figures against the champion's reference</h2><table><tr><th>figure</th><th>value</th><th>reference</th>"
        f"<th>bound</th><th>outcome</th></tr>{body}</table>{docs}"
        "<p>Files: predictions.parquet (row, label, probabilities), figures.parquet, drift.json, manifest.json</p></body></html>"
    )


def write_summary(folder: Path, manifest: dict[str, Any]) -> None:
    write_text(Path(folder) / "summary.md", summary_markdown(manifest))
    write_text(Path(folder) / "summary.html", summary_html(manifest))


def publish_artifacts(manifest: dict[str, Any]) -> None:
    """The summary and the drift table as Prefect artifacts (keys: lowercase, digits, dashes, so the UI lists them)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    create_markdown_artifact(markdown=summary_markdown(manifest), key=MARKDOWN_ARTIFACT_KEY, description="rnnflow scoring run")
    create_table_artifact(table=drift_table(manifest), key=TABLE_ARTIFACT_KEY, description="Drift figures against the champion's reference")
