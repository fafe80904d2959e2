"""The report as a document: its sections, the lines at its top that say what happened, and how it renders.

tasks/report.py reads the upstream steps' files and fills most sections from them; this module holds
the Section type, the parts of the report that say what happened to the run (the validation verdict
and the promotion line at the top, the validation checks with the passing ones folded away, the
most confident mistakes), and the HTML and Markdown renderers.

The verdict is tasks.promote.validation_verdict over the run's promote.blocking_warnings: the
report and the promotion decision say the same of validation, so a warning that keeps the run
from promotion is red at the top of the report, never a green "passed". The decision itself is
not here: the report is cached and made before promote, whose outcome changes with the champion,
so the top of the report links to the page promote writes, promote/decision.html.

The mistakes come from evaluate's mistakes.parquet, which holds each review in the model's tokens
(tasks/evaluate.py says why not as written); a run evaluated before that file gets a sentence
saying so, and a next_token model, which has no classes, gets no section.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.decision_page import DATA_DOCS_PAGE, DECISION_PAGE, validation_badge
from tasks.evaluate import MISTAKES_FILE, MISTAKES_PER_CLASS, OOV_MARK
from tasks.promote import failed_validation_checks, promote_settings, validation_verdict
from tasks.render import (
    STYLESHEET, Link, Table, format_count, format_metric, format_value, html_figure, html_link, html_table, markdown_escape,
    markdown_fence, markdown_table, shorten,
)

REVIEW_CHARACTERS = 400  # of a mistake's text shown; mistakes.parquet holds it whole
DECISION_SENTENCE = "The promotion decision (promoted or not, and why) is on its own page:"


@dataclass
class Section:
    """One heading of the report, with its blocks in order.

    A block is (kind, content): text, table, plot, pre, list (of text), subheading, link ((text, Link)),
    details ((summary, Table): folded in HTML) or verdict (a validation_verdict).
    """

    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        """The section's id in the HTML page, so a link can point into the report: 'most-confident-mistakes'."""
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")

    def add(self, kind: str, content: Any) -> "Section":
        if content:
            self.blocks.append((kind, content))
        return self


@dataclass(frozen=True)
class ReportHeader:
    """What the top of the report says before any section."""

    title: str
    model: str  # describe_model's line
    accuracy: str  # formatted
    verdict: dict[str, Any]  # validation_verdict's


# --------------------------------------------------------------------------- what happened


def _blocking_warnings(config: dict[str, Any]) -> list[str]:
    return promote_settings(config.get("promote"))["blocking_warnings"]


def report_verdict(config: dict[str, Any], validation: dict[str, Any]) -> dict[str, Any]:
    """The validation verdict promotion will reach for this run: its failed checks against its promote.blocking_warnings."""
    return validation_verdict(failed_validation_checks(validation), len(validation.get("checks") or []), _blocking_warnings(config))


def _checks_table(checks: list[dict[str, Any]], blocking_warnings: list[str]) -> Table:
    rows, classes = [], []
    for check in checks:
        passed = bool(check.get("passed", False))
        severity = str(check.get("severity", ""))
        blocks = not passed and severity != "error" and check.get("check") in blocking_warnings
        result = "passed" if passed else ("FAILED, blocks promotion" if blocks else "FAILED")
        rows.append([
            str(check.get("check", "")), str(check.get("split", "") or "–"), format_value(check.get("observed")),
            format_value(check.get("bound")), severity, result, str(check.get("message", "") or ""),
        ])
        classes.append("" if passed else ("fail" if severity == "error" or blocks else "warn"))
    return Table(["Check", "Split", "Observed", "Bound", "Severity", "Result", "Message"], rows, classes)


def validation_section(validation: dict[str, Any], config: dict[str, Any]) -> Section:
    """The checks: the verdict, the failed ones in full, the passing ones folded, the warnings, and the Data Docs."""
    blocking = _blocking_warnings(config)
    section = Section("Data validation").add("verdict", report_verdict(config, validation))
    checks = [check for check in validation.get("checks") or [] if isinstance(check, dict)]
    failed = [check for check in checks if not check.get("passed", False)]  # as tasks.promote.failed_validation_checks counts
    passed = [check for check in checks if check.get("passed", False)]
    if failed:
        section.add("text", f"{len(failed)} check{'s' if len(failed) != 1 else ''} failed:").add("table", _checks_table(failed, blocking))
    else:
        section.add("text", "No check failed.")
    if passed:
        section.add("details", (f"{len(passed)} check{'s' if len(passed) != 1 else ''} passed", _checks_table(passed, blocking)))
    warnings = [str(warning) for warning in validation.get("warnings") or []]
    section.add("text", "Warnings:" if warnings else "No warnings.").add("list", warnings)
    data_docs = Link("validate/data_docs/index.html", DATA_DOCS_PAGE)
    section.add("link", ("Every check as Great Expectations shows it, in its Data Docs:", data_docs))
    return section


BASELINE_METRICS = ("accuracy", "f1", "roc_auc", "loss")


def baseline_key_row(metrics: dict[str, Any]) -> list[list[str]]:
    """The key numbers' row for the linear baseline (metrics.json's `baseline`): its test accuracy and the model's difference."""
    baseline = metrics.get("baseline")
    if not baseline:
        return []
    accuracy, difference = (baseline.get("test") or {}).get("accuracy"), (baseline.get("difference") or {}).get("accuracy")
    shown = "n/a" if difference is None else f"{difference:+.4f}"
    return [["Linear baseline test accuracy", f"{format_metric(accuracy)} (this model {shown}; {baseline.get('analyzer')} n-grams, "
                                              f"fitted in {format_value(baseline.get('fit_seconds'))} s)"]]


def channels_key_row(metrics: dict[str, Any]) -> list[list[str]]:
    """The key numbers' row for a model with a bag of n-grams (metrics.json's `channels`): its recurrence and its bag apart."""
    channels = metrics.get("channels")
    if not channels:
        return []
    return [["Recurrence alone / bag alone", f"{format_metric(channels.get('recurrent_accuracy'))} / "
                                             f"{format_metric(channels.get('bag_accuracy'))} test accuracy (the other's logits left out)"]]


def baseline_section(metrics: dict[str, Any]) -> Section | None:
    """The recurrent model beside the linear baseline fitted on the same train split and scored on the same test split."""
    baseline = metrics.get("baseline")
    if not baseline:
        return None
    test, theirs, difference = metrics.get("test") or {}, baseline.get("test") or {}, baseline.get("difference") or {}
    rows = [[name, format_metric(test.get(name)), format_metric(theirs.get(name)),
             "n/a" if difference.get(name) is None else f"{difference[name]:+.4f}"] for name in BASELINE_METRICS]
    validation = (baseline.get("validation") or {}).get("accuracy")
    section = Section("Linear baseline")
    section.add("text", f"{baseline.get('model', 'A linear model')}, fitted on the same train split in "
                        f"{format_value(baseline.get('fit_seconds'))} s, validation accuracy {format_metric(validation)}: "
                        f"{baseline.get('why', '')}. It is a yardstick, not part of the exported model.")
    channels = metrics.get("channels")
    if channels:  # a model with a bag of n-grams beside its recurrence (model.ngrams): which of the two decides
        section.add("text", f"This model adds a bag of n-grams' logits to its recurrent layers'. With the bag left out, its recurrent "
                            f"layers alone read {format_metric(channels.get('recurrent_accuracy'))} of the test reviews right; its "
                            f"bag alone {format_metric(channels.get('bag_accuracy'))} (metrics.json's channels).")
    return section.add("table", Table(["Test metric", "This model", "Baseline", "Difference"], rows))


def load_mistakes(evaluate_dir: Path) -> list[dict[str, Any]] | None:
    """evaluate's mistakes.parquet as rows, or None for a run evaluated before the file."""
    import pyarrow.parquet as pq

    path = Path(evaluate_dir) / MISTAKES_FILE
    return pq.read_table(path).to_pylist() if path.is_file() else None


def _mistakes_table(rows: list[dict[str, Any]], labels: list[str]) -> Table:
    def name(index: Any) -> str:
        return labels[index] if isinstance(index, int) and 0 <= index < len(labels) else str(index)

    def review(row: dict[str, Any]) -> str:  # as written; in the model's tokens where the test texts were not at hand
        for key in ("text", "tokens"):
            if isinstance(row.get(key), str):
                return shorten(row[key], REVIEW_CHARACTERS)
        return "(not recorded)"

    cells = [[str(row.get("row")), name(row.get("label")), name(row.get("predicted")), format_metric(row.get("probability")), review(row)]
             for row in rows]
    return Table(["Row", "True", "Predicted", "Probability", "Review"], cells, css_class="mistakes")


def mistakes_section(mistakes: list[dict[str, Any]] | None, metrics: dict[str, Any]) -> Section | None:
    """Per true class, the test reviews the model got wrong with the highest probability; None for a next_token model."""
    if metrics.get("task") == "next_token":
        return None
    section = Section("Most confident mistakes")
    if mistakes is None:
        return section.add("text", "Not recorded: this run's evaluate step is from before evaluate/mistakes.parquet; "
                                   "run the pipeline again from the evaluate step to list them.")
    labels = [str(label) for label in metrics.get("labels") or []]
    matrix = metrics.get("confusion_matrix") or []
    section.add("text", f"For each true class, the {MISTAKES_PER_CLASS} test reviews misclassified with the highest predicted "
                        "probability (of the wrong class), as written, cut at "
                        f"{REVIEW_CHARACTERS} characters. Row: the review's place in ingest/test.parquet, counted from 0; "
                        f"evaluate/mistakes.parquet also has each in the model's tokens ({OOV_MARK}: outside the vocabulary).")
    for index, label in enumerate(labels):
        rows = [row for row in mistakes if row.get("label") == index]
        wrong = sum(matrix[index]) - matrix[index][index] if index < len(matrix) and index < len(matrix[index]) else len(rows)
        if not rows:
            section.add("subheading", f"True class {label}: no review misclassified")
            continue
        section.add("subheading", f"True class {label}: the {len(rows)} most confident of {format_count(wrong)} misclassified")
        section.add("table", _mistakes_table(rows, labels))
    return section


# --------------------------------------------------------------------------- HTML


def _html_block(kind: str, content: Any) -> str:
    if kind == "table":
        return html_table(content)
    if kind == "plot":
        return html_figure(content.png, content.title)
    if kind == "pre":
        return f"<pre>{html.escape(content)}</pre>"
    if kind == "list":
        return "<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in content) + "</ul>"
    if kind == "subheading":
        return f"<h3>{html.escape(content)}</h3>"
    if kind == "link":
        text, link = content
        return f"<p>{html.escape(text)} {html_link(link.text, link.href)}</p>"
    if kind == "details":
        summary, table = content
        return f"<details><summary>{html.escape(summary)}</summary>{html_table(table)}</details>"
    if kind == "verdict":
        return f'<p class="verdict"><strong>Verdict:</strong> {validation_badge(content)}</p>'
    return f"<p>{html.escape(str(content))}</p>"


def render_html(header: ReportHeader, sections: list[Section]) -> str:
    """The whole report as one HTML page: inline CSS, plots as data URIs, nothing fetched from elsewhere."""
    title = html.escape(header.title)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{title}</title><style>{STYLESHEET}</style></head><body>",
        f"<header><h1>{title}</h1>",
        f'<p class="subtitle">Model: <strong>{html.escape(header.model)}</strong> · '
        f"test accuracy <strong>{html.escape(header.accuracy)}</strong></p>",
        f'<p class="verdict"><strong>Validation:</strong> {validation_badge(header.verdict)} · '
        f"{html_link('Data Docs', DATA_DOCS_PAGE)}</p>",
        f'<p class="verdict"><strong>Promotion:</strong> {html.escape(DECISION_SENTENCE)} '
        f"{html_link('promote/decision.html', DECISION_PAGE)}</p></header>",
    ]
    for section in sections:
        parts.append(f'<section id="{section.anchor}"><h2>{html.escape(section.title)}</h2>')
        parts.extend(_html_block(kind, content) for kind, content in section.blocks)
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------- Markdown


def _markdown_block(kind: str, content: Any, section_title: str) -> str:
    if kind == "table":
        return markdown_table(content)
    if kind == "plot":
        return f"![{content.title}]({content.filename})"
    if kind == "pre":
        return markdown_fence(content, "yaml" if section_title == "Configuration" else "text")
    if kind == "list":
        return "\n".join(f"- {markdown_escape(item)}" for item in content)
    if kind == "subheading":
        return f"### {markdown_escape(content)}"
    if kind == "link":
        text, link = content
        return f"{markdown_escape(text)} [{markdown_escape(link.text)}]({link.href})"
    if kind == "details":
        summary, table = content
        return f"{markdown_escape(summary)}:\n\n{markdown_table(table)}"
    if kind == "verdict":
        return f"Verdict: {markdown_escape(str(content.get('text', '')))}"
    return markdown_escape(str(content))


def render_markdown(header: ReportHeader, sections: list[Section]) -> str:
    """The same report in Markdown; figures are links to the PNG files under plots/."""
    parts = [
        f"# {markdown_escape(header.title)}",
        f"Model: **{markdown_escape(header.model)}** · test accuracy **{markdown_escape(header.accuracy)}**  \n"
        f"**Validation:** {markdown_escape(str(header.verdict.get('text', '')))} · [Data Docs]({DATA_DOCS_PAGE})  \n"
        f"**Promotion:** {DECISION_SENTENCE} [promote/decision.html]({DECISION_PAGE})",
    ]
    for section in sections:
        parts.append(f"## {section.title}")
        parts.extend(_markdown_block(kind, content, section.title) for kind, content in section.blocks)
    return "\n\n".join(parts) + "\n"
