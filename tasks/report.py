"""The report step: a self-contained HTML page, its Markdown twin, the plots as PNG files, and Prefect artifacts.

Everything in the report comes from the upstream steps' JSON files and the run configuration.
No run id and no timestamp go in: the report is cached across runs, and the run manifest says
which run and when.
"""

from __future__ import annotations

import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.context import FlowRunContext, TaskRunContext

from tasks.caching import StepCachePolicy, produce_step
from tasks.render import (
    STYLESHEET, Table, as_number, figure_png, format_count, format_mean, format_metric, format_percent, format_value, html_figure,
    html_table, markdown_escape, markdown_fence, markdown_table, new_figure,
)
from tasks.store import RunFile, RunFiles, StepOutput, atomic_path, read_json, write_json, write_text

REPORT_HTML = RunFiles.REPORT_HTML.name
REPORT_MARKDOWN = RunFiles.REPORT_MARKDOWN.name
REPORT_DATA = "report.json"
PLOTS_DIR = "plots"

MARKDOWN_ARTIFACT_KEY = "rnnflow-report"
TABLE_ARTIFACT_KEY = "rnnflow-metrics"
LINK_ARTIFACT_KEY = "rnnflow-report-html"

TEST_METRIC_ORDER = ("accuracy", "loss", "precision", "recall", "f1", "roc_auc", "n")
CELL_NAMES = {"simple_rnn": "SimpleRNN", "lstm": "LSTM", "gru": "GRU"}
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

# Colours that read in print and for the common forms of colour blindness (matplotlib's tab10).
TRAIN_COLOUR, VALIDATION_COLOUR, MARK_COLOUR = "#1f77b4", "#ff7f0e", "#d62728"


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class ReportInputs:
    """Everything the report shows, read once from the upstream steps' files."""

    config: dict[str, Any]
    validation: dict[str, Any]
    encoding: dict[str, Any]
    training: dict[str, Any]
    history: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def test(self) -> dict[str, Any]:
        return self.metrics.get("test") or {}


def _read_upstream_json(upstream: dict[str, StepOutput], file: RunFile) -> Any:
    step = file.step
    if step not in upstream:
        raise ValueError(f"The report needs the {step} step's output and none was given: run the pipeline through {step} first.")
    path = file.of_step(upstream[step].path)
    if not path.is_file():
        raise FileNotFoundError(f"Report input {path} is missing: rerun the {step} step.")
    try:
        return read_json(path)
    except ValueError:
        raise ValueError(f"Report input {path} is not valid JSON: rerun the {step} step.") from None


def load_report_inputs(config: dict[str, Any], upstream: dict[str, StepOutput]) -> ReportInputs:
    """Read validation.json, encode.json, train.json, history.json and metrics.json from the upstream folders."""
    return ReportInputs(
        config=config or {},
        validation=_read_upstream_json(upstream, RunFiles.VALIDATION),
        encoding=_read_upstream_json(upstream, RunFiles.ENCODING),
        training=_read_upstream_json(upstream, RunFiles.TRAINING),
        history=_read_upstream_json(upstream, RunFiles.HISTORY),
        metrics=_read_upstream_json(upstream, RunFiles.METRICS),
    )


# --------------------------------------------------------------------------- formatting


def describe_model(model: dict[str, Any]) -> str:
    """One line for the header: 'Bidirectional LSTM(64), embedding 64'."""
    if not model:
        return "model not described in the configuration"
    cells = list(model.get("stack_cells") or [model.get("cell", "?")] * int(model.get("layers") or 1))
    units = list(model.get("stack_units") or [model.get("units", "?")] * len(cells))
    units += [model.get("units", "?")] * (len(cells) - len(units))
    stack = " → ".join(f"{CELL_NAMES.get(cell, cell)}({size})" for cell, size in zip(cells, units))
    if model.get("bidirectional"):
        stack = f"Bidirectional {stack}"
    if model.get("input") == "onehot":
        feeding = "one-hot input"
    else:
        feeding = f"embedding {model.get('embedding_dim', '?')}"
    return f"{stack}, {feeding}"


def _clean_summary(text: str) -> str:
    # Keras may print through rich, which leaves terminal colour codes in captured text.
    return _ANSI_ESCAPE.sub("", text or "").rstrip()


# --------------------------------------------------------------------------- tables


def key_numbers_table(inputs: ReportInputs) -> Table:
    test, training, encoding, validation = inputs.test, inputs.training, inputs.encoding, inputs.validation
    member_runs = training.get("member_runs") or []
    best = ", ".join(format_count(run.get("best_epoch")) for run in member_runs) or format_count(training.get("best_epoch"))
    members = f" over {len(member_runs)} members" if member_runs else ""
    epochs = f"{format_count(training.get('epochs_run'))}{members} (best: {best}"
    epochs += ", stopped early)" if training.get("stopped_early") else ")"
    seconds, speed = as_number(training.get("seconds")), as_number(training.get("samples_per_second"))
    timing = "n/a" if seconds is None else f"{seconds:.1f} s"
    if speed is not None:
        timing += f" ({speed:,.0f} samples/s)"
    truncated = ", ".join(f"{split} {format_percent(share)}" for split, share in (encoding.get("truncated_fraction") or {}).items())
    warnings = validation.get("warnings") or []
    checks = validation.get("checks") or []
    failed = sum(1 for check in checks if not check.get("passed", True))
    verdict = "passed" if validation.get("passed", True) else "failed"
    verdict += f" ({len(checks) - failed} of {len(checks)} checks passed, {len(warnings)} warning{'s' if len(warnings) != 1 else ''})"
    macro, roc_auc = _averaging(inputs.metrics)
    rows = [
        ["Test accuracy", format_metric(test.get("accuracy"))],
        ["Test loss", format_metric(test.get("loss"))],
        [f"Precision{macro}", format_metric(test.get("precision"))],
        [f"Recall{macro}", format_metric(test.get("recall"))],
        [f"F1{macro}", format_metric(test.get("f1"))],
        [f"ROC AUC{roc_auc}", format_metric(test.get("roc_auc"))],
        ["Test reviews", format_count(test.get("n"))],
        ["Epochs run", epochs],
        ["Parameters", format_count(training.get("params"))],
        ["Training time", timing],
        ["cuDNN kernels eligible", format_value(training.get("cudnn_eligible"))],
        ["Sequence length (max_len)", format_count(encoding.get("max_len"))],
        ["Vocabulary size", format_count(encoding.get("vocab_size"))],
        ["Words kept (num_words)", format_count(encoding.get("num_words"))],
        ["Reviews truncated at max_len", truncated or "n/a"],
        ["Data validation", verdict],
    ]
    return Table(["Measure", "Value"], rows)


def _averaging(metrics: dict[str, Any]) -> tuple[str, str]:
    """What the headline precision, recall, F1 and ROC AUC rows add to their names: "" for two classes.

    Past two classes tasks.evaluate.score averages them over the classes unweighted (macro) and
    ROC AUC one class against the rest, so the same names mean other numbers: the rows say so.
    A next_token model's precision, recall and F1 are macro over the characters; it has no ROC AUC.
    """
    if metrics.get("task") == "next_token":
        return " (macro)", ""
    if len(metrics.get("labels") or metrics.get("confusion_matrix") or []) > 2:
        return " (macro)", " (one-vs-rest macro)"
    return "", ""


def metrics_table_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The test block of metrics.json as metric/value rows, in a reader's order."""
    test = metrics.get("test") or {}
    names = [name for name in TEST_METRIC_ORDER if name in test] + [name for name in test if name not in TEST_METRIC_ORDER]
    rows = []
    for name in names:
        value = test[name]
        rows.append({"metric": name, "value": value if name == "n" else as_number(value)})
    return rows


def per_class_table(metrics: dict[str, Any]) -> Table:
    rows = [
        [str(label), format_metric(scores.get("precision")), format_metric(scores.get("recall")),
         format_metric(scores.get("f1")), format_count(scores.get("support"))]
        for label, scores in (metrics.get("per_class") or {}).items()
    ]
    return Table(["Class", "Precision", "Recall", "F1", "Support"], rows)


def validation_checks_table(validation: dict[str, Any]) -> Table:
    rows, classes = [], []
    for check in validation.get("checks") or []:
        passed = bool(check.get("passed", False))
        severity = str(check.get("severity", ""))
        rows.append([
            str(check.get("check", "")), str(check.get("split", "") or "–"), format_value(check.get("observed")),
            format_value(check.get("bound")), severity, "passed" if passed else "FAILED", str(check.get("message", "") or ""),
        ])
        classes.append("" if passed else ("fail" if severity == "error" else "warn"))
    return Table(["Check", "Split", "Observed", "Bound", "Severity", "Result", "Message"], rows, classes)


def length_stats_table(validation: dict[str, Any], encoding: dict[str, Any]) -> Table:
    stats = validation.get("length_stats") or {}
    truncated = encoding.get("truncated_fraction") or {}
    rows = []
    for split in list(stats) + [split for split in truncated if split not in stats]:
        numbers = stats.get(split) or {}
        cells = [format_count(numbers.get("min")), format_mean(numbers.get("mean"))]
        cells += [format_count(numbers.get(column)) for column in ("median", "p90", "p99", "max")]
        rows.append([split] + cells + [format_percent(truncated.get(split))])
    return Table(["Split", "Min", "Mean", "Median", "p90", "p99", "Max", "Truncated at max_len"], rows)


def text_coverage_table(validation: dict[str, Any], encoding: dict[str, Any]) -> Table:
    """Per split: how much of each review's text reaches some token (validate's kept_share), and how many
    tokens fall outside the vocabulary (encode's oov_share). Runs from before those figures get no rows."""
    kept = validation.get("kept_share") or {}
    oov = encoding.get("oov_share") or {}
    rows = []
    for split in list(kept) + [split for split in oov if split not in kept]:
        shares = kept.get(split) if isinstance(kept.get(split), dict) else {}
        rows.append([split, format_percent(shares.get("median")), format_percent(shares.get("mean")), format_percent(oov.get(split))])
    return Table(["Split", "Median kept share", "Mean kept share", "Out-of-vocabulary share"], rows)


def _label_order(label_counts: dict[str, dict[str, int]]) -> list[str]:
    labels: list[str] = []
    for counts in label_counts.values():
        labels += [label for label in counts if label not in labels]
    return labels


def label_balance_table(validation: dict[str, Any]) -> Table:
    label_counts = validation.get("label_counts") or {}
    labels = _label_order(label_counts)
    rows = []
    for split, counts in label_counts.items():
        total = sum(counts.values())
        cells = [f"{counts.get(label, 0):,} ({format_percent(counts.get(label, 0) / total if total else None)})" for label in labels]
        rows.append([split] + cells + [f"{total:,}"])
    return Table(["Split"] + [str(label) for label in labels] + ["Total"], rows)


def _series(history: dict[str, Any], name: str) -> list[float | None]:
    return [as_number(value) for value in history.get(name) or []]


def _changes(changes: Any) -> str:
    """train.member_models' entry for a member as key=value pairs; "-" for a member that is the model section as it is."""
    return ", ".join(f"{key}={value}" for key, value in changes.items()) if isinstance(changes, dict) and changes else "-"


def members_table(member_runs: list[dict[str, Any]], scored: list[dict[str, Any]]) -> Table:
    """One row per member of an averaged model: its training, and its test accuracy alone (evaluate's metrics.json)."""
    rows = []
    for index, run in enumerate(member_runs):
        alone = scored[index] if index < len(scored) else {}
        rows.append([
            str(index + 1), format_count(run.get("seed")), _changes(run.get("model_changes")), f"{format_count(run.get('best_epoch'))} of {format_count(run.get('epochs_run'))}",
            format_metric(run.get("best_val_accuracy")), format_metric(alone.get("accuracy")), format_metric(alone.get("roc_auc")),
        ])
    return Table(["Member", "Seed", "Model changes", "Best epoch", "Val accuracy", "Test accuracy alone", "Test ROC AUC alone"], rows)


_HISTORY_FORMAT = {"learning_rate": lambda value: f"{value:.2g}"}  # columns not shown as format_metric's four decimals


def history_table(history: dict[str, Any], best_epoch: Any) -> Table:
    names = [name for name in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate") if history.get(name)]
    epochs = max((len(history[name]) for name in names), default=0)
    rows, classes = [], []
    for index in range(epochs):
        epoch = index + 1
        values = [_HISTORY_FORMAT.get(name, format_metric)(history[name][index]) if index < len(history[name]) else "n/a" for name in names]
        is_best = as_number(best_epoch) == epoch
        rows.append([f"{epoch}{' (best)' if is_best else ''}"] + values)
        classes.append("best" if is_best else "")
    return Table(["Epoch"] + names, rows, classes)


def confusion_table(metrics: dict[str, Any]) -> Table:
    matrix = metrics.get("confusion_matrix") or []
    labels = _class_labels(metrics, len(matrix))
    rows = [[f"true {label}"] + [format_count(count) for count in row] for label, row in zip(labels, matrix)]
    return Table(["true / predicted"] + [str(label) for label in labels], rows)


def by_length_table(metrics: dict[str, Any]) -> Table:
    rows = [[str(bucket.get("bucket", "")), format_count(bucket.get("n")), format_metric(bucket.get("accuracy"))]
            for bucket in metrics.get("by_length") or []]
    return Table(["Review length (tokens)", "Reviews", "Accuracy"], rows)


def _class_labels(metrics: dict[str, Any], size: int) -> list[str]:
    labels = [str(label) for label in metrics.get("labels") or []]
    return labels[:size] + [str(index) for index in range(len(labels), size)]


# --------------------------------------------------------------------------- plots


@dataclass(frozen=True)
class Plot:
    name: str  # file stem under plots/
    title: str
    png: bytes

    @property
    def filename(self) -> str:
        return f"{PLOTS_DIR}/{self.name}.png"


def plot_length_histogram(encoding: dict[str, Any]) -> bytes | None:
    histogram = encoding.get("length_histogram") or {}
    edges, counts = histogram.get("edges") or [], histogram.get("counts") or []
    if not counts or len(edges) != len(counts) + 1:
        return None
    figure = new_figure()
    axes = figure.add_subplot()
    axes.stairs(counts, edges, fill=True, color=TRAIN_COLOUR, alpha=0.75, label="train reviews")
    max_len = as_number(encoding.get("max_len"))
    if max_len is not None:
        share = (encoding.get("truncated_fraction") or {}).get("train")
        note = f" ({format_percent(share)} of train truncated)" if as_number(share) is not None else ""
        axes.axvline(max_len, color=MARK_COLOUR, linestyle="--", linewidth=2, label=f"max_len = {int(max_len):,}{note}")
    axes.set_xlabel("review length (tokens)")
    axes.set_ylabel("reviews")
    axes.set_title("Training review lengths")
    axes.legend(loc="best", framealpha=0.9)
    return figure_png(figure)


# Past this many classes the label balance plot groups its bars by class (a colour per split), the
# confusion matrix drops the row percentages: a colour per class would repeat (tab10 has ten) and
# a legend of them would cover the bars; two lines of text per cell would not fit.
MANY_CLASSES = 6


def plot_label_balance(validation: dict[str, Any]) -> bytes | None:
    label_counts = validation.get("label_counts") or {}
    labels = _label_order(label_counts)
    if not labels:
        return None
    if len(labels) > MANY_CLASSES:
        return _plot_label_balance_by_class(label_counts, labels)
    splits = list(label_counts)
    figure = new_figure()
    axes = figure.add_subplot()
    width = 0.8 / len(labels)
    for position, label in enumerate(labels):
        shares = []
        for split in splits:
            total = sum(label_counts[split].values())
            shares.append(label_counts[split].get(label, 0) / total if total else 0.0)
        xs = [index + (position - (len(labels) - 1) / 2) * width for index in range(len(splits))]
        bars = axes.bar(xs, shares, width=width * 0.95, label=str(label))
        axes.bar_label(bars, labels=[f"{share:.0%}" for share in shares], fontsize=8)
    axes.set_xticks(range(len(splits)), splits)
    axes.set_ylim(0, 1.1)
    axes.set_ylabel("share of reviews")
    axes.set_title("Label balance per split")
    axes.legend(loc="upper right", ncols=min(len(labels), 4))
    return figure_png(figure)


def _plot_label_balance_by_class(label_counts: dict[str, dict[str, int]], labels: list[str]) -> bytes:
    """Many classes: one group of bars per class, one bar (and colour) per split; the numbers are in the table below."""
    splits = list(label_counts)
    figure = new_figure(max(7.0, min(14.0, 1.5 + 0.55 * len(labels))), 4.2)
    axes = figure.add_subplot()
    width = 0.8 / len(splits)
    for position, split in enumerate(splits):
        total = sum(label_counts[split].values())
        shares = [label_counts[split].get(label, 0) / total if total else 0.0 for label in labels]
        xs = [index + (position - (len(splits) - 1) / 2) * width for index in range(len(labels))]
        axes.bar(xs, shares, width=width * 0.95, label=str(split))
    axes.set_xticks(range(len(labels)), [str(label) for label in labels], rotation=45, ha="right", rotation_mode="anchor")
    axes.set_ylabel("share of reviews")
    axes.set_title("Label balance per split")
    axes.legend(loc="upper right", ncols=len(splits))
    axes.set_ylim(0, axes.get_ylim()[1] * 1.15)  # room for the legend above the tallest bar
    return figure_png(figure)


def plot_learning_curves(history: dict[str, Any], best_epoch: Any) -> bytes | None:
    panels = [(metric, [name for name in (metric, f"val_{metric}") if history.get(name)]) for metric in ("loss", "accuracy")]
    panels = [(metric, names) for metric, names in panels if names]
    if not panels:
        return None
    figure = new_figure(9.0, 3.6)
    best = as_number(best_epoch)
    for index, (metric, names) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), index + 1)
        for name in names:
            values = _series(history, name)
            epochs = list(range(1, len(values) + 1))
            training = not name.startswith("val_")
            axes.plot(epochs, [math.nan if v is None else v for v in values], marker="o",
                      color=TRAIN_COLOUR if training else VALIDATION_COLOUR, label="train" if training else "validation")
        if best is not None:
            axes.axvline(best, color=MARK_COLOUR, linestyle="--", linewidth=1.5, label=f"best epoch {int(best)}")
        axes.set_xlabel("epoch")
        axes.set_ylabel(metric)
        axes.set_title(metric.capitalize())
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.legend()
    return figure_png(figure)


def plot_confusion_matrix(metrics: dict[str, Any]) -> bytes | None:
    matrix = metrics.get("confusion_matrix") or []
    if not matrix:
        return None
    size = len(matrix)
    labels = _class_labels(metrics, size)
    many = size > MANY_CLASSES
    # Grows with the classes up to about a page's width: 20 classes would otherwise draw 28 inches wide.
    figure = new_figure(min(1.6 + 1.3 * size, 13.0), min(1.0 + 1.2 * size, 12.0))
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues")
    peak = max((max(row) for row in matrix if row), default=0) or 1
    for true_index, row in enumerate(matrix):
        total = sum(row) or 1
        for predicted_index, count in enumerate(row):
            colour = "white" if count > peak / 2 else "black"
            text = f"{count:,}" if many else f"{count:,}\n{count / total:.0%}"
            axes.text(predicted_index, true_index, text, ha="center", va="center", color=colour, fontsize=7 if many else 9)
    if many:
        axes.set_xticks(range(size), labels, rotation=45, ha="right", rotation_mode="anchor")
    else:
        axes.set_xticks(range(size), labels)
    axes.set_yticks(range(size), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title("Confusion matrix (test)")
    figure.colorbar(image, ax=axes, shrink=0.8)
    return figure_png(figure)


def plot_roc_curve(metrics: dict[str, Any]) -> bytes | None:
    curve = metrics.get("roc_curve") or {}
    fpr, tpr = curve.get("fpr") or [], curve.get("tpr") or []
    if not fpr or len(fpr) != len(tpr):
        return None
    figure = new_figure(4.6, 4.2)
    axes = figure.add_subplot()
    auc = format_metric((metrics.get("test") or {}).get("roc_auc"))
    axes.plot(fpr, tpr, color=TRAIN_COLOUR, linewidth=2, label=f"model (AUC {auc})")
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.01)
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.set_title("ROC curve (test)")
    axes.legend(loc="lower right")
    return figure_png(figure)


def plot_accuracy_by_length(metrics: dict[str, Any]) -> bytes | None:
    buckets = metrics.get("by_length") or []
    if not buckets:
        return None
    figure = new_figure()
    axes = figure.add_subplot()
    names = [str(bucket.get("bucket", "")) for bucket in buckets]
    accuracies = [as_number(bucket.get("accuracy")) or 0.0 for bucket in buckets]
    bars = axes.bar(range(len(names)), accuracies, color=TRAIN_COLOUR)
    texts = [f"{accuracy:.3f}\nn={format_count(bucket.get('n'))}" for accuracy, bucket in zip(accuracies, buckets)]
    axes.bar_label(bars, labels=texts, label_type="center", color="white", fontsize=9)
    overall = as_number((metrics.get("test") or {}).get("accuracy"))
    if overall is not None:
        axes.axhline(overall, color=MARK_COLOUR, linestyle="--", label=f"overall {overall:.4f}")
        axes.legend(loc="upper right")
    axes.set_xticks(range(len(names)), names)
    axes.set_ylim(0, 1.2)
    axes.set_xlabel("review length (tokens)")
    axes.set_ylabel("accuracy")
    axes.set_title("Test accuracy by review length")
    return figure_png(figure)


def build_plots(inputs: ReportInputs) -> dict[str, Plot]:
    """Every figure the data allows, by name; a figure whose data is absent is left out."""
    candidates = [
        ("length_histogram", "Training review lengths", lambda: plot_length_histogram(inputs.encoding)),
        ("label_balance", "Label balance per split", lambda: plot_label_balance(inputs.validation)),
        ("learning_curves", "Learning curves", lambda: plot_learning_curves(inputs.history, inputs.training.get("best_epoch"))),
        ("confusion_matrix", "Confusion matrix", lambda: plot_confusion_matrix(inputs.metrics)),
        ("roc_curve", "ROC curve", lambda: plot_roc_curve(inputs.metrics)),
        ("accuracy_by_length", "Accuracy by review length", lambda: plot_accuracy_by_length(inputs.metrics)),
    ]
    plots = {}
    for name, title, draw in candidates:
        png = draw()
        if png is not None:
            plots[name] = Plot(name, title, png)
    return plots


# --------------------------------------------------------------------------- the report document


@dataclass
class Section:
    """One heading of the report, with its text, tables, figures and preformatted blocks in order."""

    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)  # (kind, content): text | table | plot | pre | list

    def add(self, kind: str, content: Any) -> "Section":
        if content:
            self.blocks.append((kind, content))
        return self


def report_title(config: dict[str, Any]) -> str:
    return f"rnnflow report: preset {config.get('preset', 'unknown')}"


def build_sections(inputs: ReportInputs, plots: dict[str, Plot]) -> list[Section]:
    metrics, validation, encoding, training = inputs.metrics, inputs.validation, inputs.encoding, inputs.training
    sections = [Section("Key numbers").add("table", key_numbers_table(inputs)).add("table", per_class_table(metrics))]

    checks = Section("Data validation")
    failed = [check for check in validation.get("checks") or [] if not check.get("passed", True)]
    if not validation.get("passed", True):
        verdict = "Validation failed: see the rows marked FAILED with severity error."
    elif failed:
        verdict = f"Validation passed: no error failed; {len(failed)} warning check{'s' if len(failed) != 1 else ''} failed (highlighted)."
    else:
        verdict = "All checks passed."
    checks.add("text", verdict)
    checks.add("table", validation_checks_table(validation))
    warnings = [str(warning) for warning in validation.get("warnings") or []]
    checks.add("text", "Warnings:" if warnings else "No warnings.").add("list", warnings)
    sections.append(checks)

    data = Section("Data")
    data.add("plot", plots.get("length_histogram")).add("table", length_stats_table(validation, encoding))
    data.add("text", f"Sequences are {encoding.get('padding', '?')}-padded and {encoding.get('truncating', '?')}-truncated to "
                     f"max_len {format_count(encoding.get('max_len'))} tokens ({encoding.get('tokenizer', '?')} tokenizer).")
    coverage = text_coverage_table(validation, encoding)
    if coverage:
        data.add("text", "Text coverage: the share of each review's non-space characters that end up in some token "
                         "(median and mean over the reviews), and the share of tokens outside the vocabulary.")
        data.add("table", coverage)
    data.add("plot", plots.get("label_balance")).add("table", label_balance_table(validation))
    sections.append(data)

    learning = Section("Training")
    stopped = ", stopped early" if training.get("stopped_early") else ""
    member_runs = training.get("member_runs") or []
    if member_runs:
        learning.add("text", f"{format_count(training.get('epochs_run'))} epochs run over all members{stopped}; "
                             f"{format_count(training.get('params'))} parameters in all.")
        learning.add("text", f"{len(member_runs)} members trained one after another, each stopping early on its own "
                             f"{format_count(member_runs[0].get('validation_rows'))} validation rows of train and val; "
                             "the model averages their probabilities. The curves below are member 1's.")
        learning.add("table", members_table(member_runs, metrics.get("members") or []))
    else:
        learning.add("text", f"Best epoch {format_count(training.get('best_epoch'))} of {format_count(training.get('epochs_run'))} run{stopped}; "
                             f"{format_count(training.get('params'))} parameters.")
    learning.add("plot", plots.get("learning_curves")).add("table", history_table(inputs.history, training.get("best_epoch")))
    sections.append(learning)

    evaluation = Section("Evaluation on the test split")
    if metrics.get("task") == "next_token":
        evaluation.add("text", f"A next_token model: accuracy is how often its likeliest next character was the right one, over "
                               f"{format_count(inputs.test.get('steps'))} characters of {format_count(inputs.test.get('n'))} test texts "
                               f"(padding excluded; the end of each text counts); precision, recall and F1 are macro over the "
                               f"characters. No confusion matrix or ROC curve: the classes are the whole vocabulary.")
    evaluation.add("plot", plots.get("confusion_matrix")).add("table", confusion_table(metrics))
    if "roc_curve" in plots:
        evaluation.add("plot", plots["roc_curve"])
    elif metrics.get("task") != "next_token":  # for next_token the text above says why there is none
        classes = len(metrics.get("confusion_matrix") or metrics.get("labels") or [])
        evaluation.add("text", f"No ROC curve: it is drawn for two classes, and this model has {classes}.")
    evaluation.add("plot", plots.get("accuracy_by_length")).add("table", by_length_table(metrics))
    sections.append(evaluation)

    sections.append(Section("Model").add("pre", _clean_summary(str(training.get("model_summary") or "")) or "No model summary recorded."))
    sections.append(Section("Configuration").add("pre", config_text(inputs.config)))
    return sections


def config_text(config: dict[str, Any]) -> str:
    try:
        return yaml.safe_dump(config, sort_keys=False, allow_unicode=True).rstrip()
    except yaml.YAMLError:
        return json.dumps(config, indent=2, default=str)


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
    return f"<p>{html.escape(str(content))}</p>"


def render_html(inputs: ReportInputs, sections: list[Section]) -> str:
    """The whole report as one HTML page: inline CSS, plots as data URIs, nothing fetched from elsewhere."""
    title = html.escape(report_title(inputs.config))
    model = html.escape(describe_model(inputs.config.get("model") or {}))
    passed = inputs.validation.get("passed", True)
    badge = '<span class="badge ok">validation passed</span>' if passed else '<span class="badge bad">validation failed</span>'
    accuracy = html.escape(format_metric(inputs.test.get("accuracy")))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{title}</title><style>{STYLESHEET}</style></head><body>",
        f"<header><h1>{title}</h1>",
        f'<p class="subtitle">Model: <strong>{model}</strong> · test accuracy <strong>{accuracy}</strong> · {badge}</p></header>',
    ]
    for section in sections:
        parts.append(f"<section><h2>{html.escape(section.title)}</h2>")
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
    return markdown_escape(str(content))


def render_markdown(inputs: ReportInputs, sections: list[Section]) -> str:
    """The same report in Markdown; figures are links to the PNG files under plots/."""
    passed = "passed" if inputs.validation.get("passed", True) else "failed"
    parts = [
        f"# {markdown_escape(report_title(inputs.config))}",
        f"Model: **{markdown_escape(describe_model(inputs.config.get('model') or {}))}** · "
        f"test accuracy **{format_metric(inputs.test.get('accuracy'))}** · validation {passed}",
    ]
    for section in sections:
        parts.append(f"## {section.title}")
        parts.extend(_markdown_block(kind, content, section.title) for kind, content in section.blocks)
    return "\n\n".join(parts) + "\n"


# --------------------------------------------------------------------------- the step


def _write_bytes(target: Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_report(config: dict, upstream: dict[str, StepOutput], out_dir: Path) -> dict:
    """Write report.html, report.md, report.json and plots/*.png into out_dir; return the headline metrics."""
    out_dir = Path(out_dir)
    inputs = load_report_inputs(config, upstream)
    plots = build_plots(inputs)
    for plot in plots.values():
        _write_bytes(out_dir / plot.filename, plot.png)
    sections = build_sections(inputs, plots)
    write_text(out_dir / REPORT_HTML, render_html(inputs, sections))
    write_text(out_dir / REPORT_MARKDOWN, render_markdown(inputs, sections))
    # The headline as data, so the Prefect artifacts (and other tools) show what the report shows.
    key_numbers = key_numbers_table(inputs)
    write_json(out_dir / REPORT_DATA, {
        "title": report_title(inputs.config),
        "model": describe_model(inputs.config.get("model") or {}),
        "key_numbers": [{"measure": measure, "value": value} for measure, value in key_numbers.rows],
        "plots": [plot.filename for plot in plots.values()],
    })
    test = inputs.test
    return {
        "accuracy": as_number(test.get("accuracy")),
        "f1": as_number(test.get("f1")),
        "roc_auc": as_number(test.get("roc_auc")),
        "loss": as_number(test.get("loss")),
        "report": REPORT_HTML,
    }


def _in_prefect_run() -> bool:
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def artifact_markdown(output: StepOutput) -> str:
    """The markdown artifact: the report's title, model line and key numbers table."""
    data = read_json(output.file(REPORT_DATA))
    table = Table(["Measure", "Value"], [[row["measure"], row["value"]] for row in data.get("key_numbers", [])])
    return "\n\n".join([
        f"# {markdown_escape(data.get('title', 'rnnflow report'))}",
        f"Model: **{markdown_escape(data.get('model', ''))}**",
        markdown_table(table),
        f"Full report: `{output.file(REPORT_HTML)}`",
    ]) + "\n"


def publish_report_artifacts(output: StepOutput, upstream: dict[str, StepOutput]) -> bool:
    """Show the report in Prefect's UI (key numbers, test metrics, a link to report.html); only inside a run.

    The flow calls this after the report step with pointers into the run folder, whether the
    report was computed or cached, so every flow run in the UI carries its report.

    Returns whether artifacts were created. A failure to publish is logged, not raised: the
    report files are already written and are the record; the artifacts are a view of them.
    """
    if not _in_prefect_run():
        return False
    try:
        metrics = _read_upstream_json(upstream, RunFiles.METRICS)
        create_markdown_artifact(
            markdown=artifact_markdown(output), key=MARKDOWN_ARTIFACT_KEY, description="Key numbers of the rnnflow report"
        )
        create_table_artifact(table=metrics_table_rows(metrics), key=TABLE_ARTIFACT_KEY, description="Test-split metrics")
        create_link_artifact(
            link=output.file(REPORT_HTML).resolve().as_uri(),
            link_text=REPORT_HTML,
            key=LINK_ARTIFACT_KEY,
            description="The self-contained HTML report (a file on the machine that ran the flow)",
        )
    except Exception as error:  # noqa: BLE001 - see the docstring
        get_run_logger().warning("Could not publish the report artifacts to Prefect (%s); the report files are at %s.", error, output.path)
        return False
    return True


@task(name="report", cache_policy=StepCachePolicy(step="report"))
def report_task(root: str, section: dict, upstream: dict) -> StepOutput:
    # The artifacts are published by the flow from the run folder, so a cached report shows too.
    return produce_step(root, "report", section, upstream, lambda out: write_report(section["config"], upstream, out))


def publish_run_report(run: Any, output: StepOutput) -> None:
    """After the report step (tasks/steps.py `after`): publish from the run folder, so the link outlives the cache
    and a cached report shows too."""
    publish_report_artifacts(run.step_output("report"), {"evaluate": run.step_output("evaluate")})
