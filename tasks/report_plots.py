"""The report's figures: each drawn from one upstream document's numbers, as PNG bytes.

A function returns None when its numbers are absent (a run from before them, a next_token model's
confusion matrix), so the report leaves the figure out rather than draw an empty one. What the
report says around the figures is in tasks/report.py; how a figure becomes PNG is tasks/render.py's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tasks.render import as_number, figure_png, format_count, format_metric, format_percent, new_figure

if TYPE_CHECKING:  # pragma: no cover
    from tasks.report import ReportInputs

PLOTS_DIR = "plots"

# Colours that read in print and for the common forms of colour blindness (matplotlib's tab10).
TRAIN_COLOUR, VALIDATION_COLOUR, MARK_COLOUR = "#1f77b4", "#ff7f0e", "#d62728"


def label_order(label_counts: dict[str, dict[str, int]]) -> list[str]:
    labels: list[str] = []
    for counts in label_counts.values():
        labels += [label for label in counts if label not in labels]
    return labels


def class_labels(metrics: dict[str, Any], size: int) -> list[str]:
    labels = [str(label) for label in metrics.get("labels") or []]
    return labels[:size] + [str(index) for index in range(len(labels), size)]


def _series(history: dict[str, Any], name: str) -> list[float | None]:
    return [as_number(value) for value in history.get(name) or []]

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
    labels = label_order(label_counts)
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
    labels = class_labels(metrics, size)
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
