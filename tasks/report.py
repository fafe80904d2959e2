"""The report step: a self-contained HTML page, its Markdown twin, the plots as PNG files, and Prefect artifacts.

Everything in the report comes from the upstream steps' files and the run configuration.
No run id and no timestamp go in: the report is cached across runs, and the run manifest says
which run and when. This module reads the inputs, makes the tables and puts the sections together;
tasks/report_plots.py draws the figures, tasks/report_sections.py writes the document (with what
happened to the run at its top: the validation verdict promotion agrees with, and a link to the
promotion decision, which is made after the report and so is not in it).
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from prefect import get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.context import FlowRunContext, TaskRunContext

from tasks.architectures import describe_model
from tasks.caching import CacheSlot, produce_step, section_data, step_task
from tasks.render import (
    Table, as_number, format_count, format_mean, format_metric, format_percent, format_value, markdown_escape, markdown_table,
)
from tasks.report_plots import Plot, build_plots, class_labels, label_order
from tasks.report_sections import (
    ReportHeader, Section, baseline_key_row, baseline_section, channels_key_row, load_mistakes, mistakes_section, render_html, render_markdown,
    report_verdict, validation_section,
)
from tasks.store import RunFile, RunFiles, StepOutput, atomic_path, read_json, write_json, write_text

if TYPE_CHECKING:  # pragma: no cover
    from tasks.config import RunConfig

REPORT_HTML = RunFiles.REPORT_HTML.name
REPORT_MARKDOWN = RunFiles.REPORT_MARKDOWN.name
REPORT_DATA = "report.json"

MARKDOWN_ARTIFACT_KEY = "rnnflow-report"
TABLE_ARTIFACT_KEY = "rnnflow-metrics"
LINK_ARTIFACT_KEY = "rnnflow-report-html"
PLOTS_ARTIFACT_KEY = "rnnflow-report-plots"
FULL_ARTIFACT_KEY = "rnnflow-report-full"  # the whole report.md, plots inline: the report itself in the UI

TEST_METRIC_ORDER = ("accuracy", "loss", "precision", "recall", "f1", "roc_auc", "n")
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


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
    mistakes: list[dict[str, Any]] | None = None  # evaluate's mistakes.parquet; None for a run evaluated before it

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
    """Read validation.json, encode.json, train.json, history.json, metrics.json and mistakes.parquet from the upstream folders."""
    return ReportInputs(
        config=config or {},
        validation=_read_upstream_json(upstream, RunFiles.VALIDATION),
        encoding=_read_upstream_json(upstream, RunFiles.ENCODING),
        training=_read_upstream_json(upstream, RunFiles.TRAINING),
        history=_read_upstream_json(upstream, RunFiles.HISTORY),
        metrics=_read_upstream_json(upstream, RunFiles.METRICS),
        mistakes=load_mistakes(upstream["evaluate"].path),
    )


# --------------------------------------------------------------------------- formatting


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
    macro, roc_auc = _averaging(inputs.metrics)
    rows = [
        ["Test accuracy", format_metric(test.get("accuracy"))],
        ["Test loss", format_metric(test.get("loss"))],
        [f"Precision{macro}", format_metric(test.get("precision"))],
        [f"Recall{macro}", format_metric(test.get("recall"))],
        [f"F1{macro}", format_metric(test.get("f1"))],
        [f"ROC AUC{roc_auc}", format_metric(test.get("roc_auc"))],
        *baseline_key_row(inputs.metrics),
        *channels_key_row(inputs.metrics),
        ["Test reviews", format_count(test.get("n"))],
        ["Epochs run", epochs],
        ["Parameters", format_count(training.get("params"))],
        ["Training time", timing],
        ["cuDNN kernels eligible", format_value(training.get("cudnn_eligible"))],
        ["Sequence length (max_len)", format_count(encoding.get("max_len"))],
        ["Vocabulary size", format_count(encoding.get("vocab_size"))],
        ["Words kept (num_words)", format_count(encoding.get("num_words"))],
        ["Reviews truncated at max_len", truncated or "n/a"],
        ["Data validation", report_verdict(inputs.config, validation)["text"]],
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


def label_balance_table(validation: dict[str, Any]) -> Table:
    label_counts = validation.get("label_counts") or {}
    labels = label_order(label_counts)
    rows = []
    for split, counts in label_counts.items():
        total = sum(counts.values())
        cells = [f"{counts.get(label, 0):,} ({format_percent(counts.get(label, 0) / total if total else None)})" for label in labels]
        rows.append([split] + cells + [f"{total:,}"])
    return Table(["Split"] + [str(label) for label in labels] + ["Total"], rows)


def _changes(changes: Any) -> str:
    """train.member_models' entry for a member as key=value pairs; "-" for a member that is the model section as it is."""
    return ", ".join(f"{key}={value}" for key, value in changes.items()) if isinstance(changes, dict) and changes else "-"


def bag_starts_sentence(starts: list[dict[str, Any]]) -> str:
    """model.ngram_start logistic: the C each member's validation rows chose for its bag's regression (train.json's bag_starts)."""
    def chosen(start: dict[str, Any]) -> str:
        c = f"{float(start.get('c', float('nan'))):g}"
        return f"C {c} (val accuracy {float(start.get('val_accuracy', {}).get(c, float('nan'))):.4f})"

    which = "Each bag" if len(starts) > 1 else "The bag"
    return (f"{which} of n-grams started from an NB-weighted logistic regression on its training rows, C chosen of "
            f"{', '.join(starts[0].get('val_accuracy', {}))} on its validation rows: {', '.join(chosen(s) for s in starts)}.")


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
    labels = class_labels(metrics, len(matrix))
    rows = [[f"true {label}"] + [format_count(count) for count in row] for label, row in zip(labels, matrix)]
    return Table(["true / predicted"] + [str(label) for label in labels], rows)


def by_length_table(metrics: dict[str, Any]) -> Table:
    rows = [[str(bucket.get("bucket", "")), format_count(bucket.get("n")), format_metric(bucket.get("accuracy"))]
            for bucket in metrics.get("by_length") or []]
    return Table(["Review length (tokens)", "Reviews", "Accuracy"], rows)


# --------------------------------------------------------------------------- the report document


def report_title(config: dict[str, Any]) -> str:
    return f"rnnflow report: preset {config.get('preset', 'unknown')}"


def build_sections(inputs: ReportInputs, plots: dict[str, Plot]) -> list[Section]:
    metrics, validation, encoding, training = inputs.metrics, inputs.validation, inputs.encoding, inputs.training
    sections = [Section("Key numbers").add("table", key_numbers_table(inputs)).add("table", per_class_table(metrics))]

    sections.extend(section for section in [baseline_section(metrics)] if section is not None)
    sections.append(validation_section(validation, inputs.config))

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
    kept = {"val_accuracy": " (highest val accuracy)", "val_loss": " (lowest val loss)"}.get(training.get("monitor"), "")  # train.monitor
    processes = int(as_number(training.get("member_processes")) or 1)
    member_runs = training.get("member_runs") or []
    if member_runs:
        learning.add("text", f"{format_count(training.get('epochs_run'))} epochs run over all members{stopped}; "
                             f"{format_count(training.get('params'))} parameters in all.")
        together = "one after another" if processes == 1 else f"{processes} at a time"
        learning.add("text", f"{len(member_runs)} members trained {together}, each stopping early on its own "
                             f"{format_count(member_runs[0].get('validation_rows'))} validation rows of train and val{kept}; "
                             "the model averages their probabilities. The curves below are member 1's.")
        learning.add("table", members_table(member_runs, metrics.get("members") or []))
    else:
        learning.add("text", f"Best epoch {format_count(training.get('best_epoch'))}{kept} of {format_count(training.get('epochs_run'))} run{stopped}; "
                             f"{format_count(training.get('params'))} parameters.")
    starts = [start for start in training.get("bag_starts") or [] if start and start.get("start") == "logistic"]
    if starts:
        learning.add("text", bag_starts_sentence(starts))
    if training.get("refit"):  # train.refit: the model saved is not the one these curves and val figures describe
        refits = training["refit"]
        learning.add("text", f"The model saved was fitted again from its start (train.refit) on {format_count(refits[0].get('rows'))} rows of train "
                             f"and val together, for {', '.join(format_count(r.get('epochs')) for r in refits)} epochs, as the fit above kept; "
                             "the figures and curves here are that fit's, as no rows are left to judge the refit on.")
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
    mistakes = mistakes_section(inputs.mistakes, metrics)
    if mistakes is not None:
        sections.append(mistakes)

    sections.append(Section("Model").add("pre", _clean_summary(str(training.get("model_summary") or "")) or "No model summary recorded."))
    sections.append(Section("Configuration").add("pre", config_text(inputs.config)))
    return sections


def config_text(config: dict[str, Any]) -> str:
    try:
        return yaml.safe_dump(config, sort_keys=False, allow_unicode=True).rstrip()
    except yaml.YAMLError:
        return json.dumps(config, indent=2, default=str)


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
    header = ReportHeader(report_title(inputs.config), describe_model(inputs.config.get("model") or {}),
                          format_metric(inputs.test.get("accuracy")), report_verdict(inputs.config, inputs.validation))
    write_text(out_dir / REPORT_HTML, render_html(header, sections))
    write_text(out_dir / REPORT_MARKDOWN, render_markdown(header, sections))
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


def plots_markdown(output: StepOutput) -> str:
    """The report's plots as a markdown artifact: each PNG inline (a data: URI), as the Prefect UI renders it
    whether or not the browser can reach the machine that ran the flow."""
    data = read_json(output.file(REPORT_DATA))
    parts = [f"# Plots: {markdown_escape(data.get('title', 'rnnflow report'))}"]
    for name in data.get("plots", []):  # relative to the report's folder: "plots/roc_curve.png"
        path = output.path / name
        if path.exists():
            encoded = base64.b64encode(path.read_bytes()).decode("ascii")
            parts.append(f"### {markdown_escape(path.stem.replace('_', ' '))}\n\n![{path.name}](data:image/png;base64,{encoded})")
    return "\n\n".join(parts) + "\n"


def full_markdown(output: StepOutput) -> str:
    """report.md whole, each plot it links (plots/NAME.png) inline as a data: URI: the report readable in Prefect's UI
    from any browser, where report.html's file:// link only opens on the machine that ran the flow."""
    def inline(match: re.Match[str]) -> str:
        path = output.path / match.group(2)
        if not path.is_file():
            return match.group(0)
        return f"![{match.group(1)}](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode('ascii')})"

    return re.sub(r"!\[([^\]]*)\]\((plots/[^)\s]+\.png)\)", inline, output.file(REPORT_MARKDOWN).read_text(encoding="utf-8"))


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
        create_markdown_artifact(markdown=plots_markdown(output), key=PLOTS_ARTIFACT_KEY, description="The report's plots")
        create_markdown_artifact(markdown=full_markdown(output), key=FULL_ARTIFACT_KEY, description="The whole report, plots inline")
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


@step_task("report")
def report_task(config: "RunConfig", *, validate: StepOutput, encode: StepOutput, train: StepOutput, evaluate: StepOutput,
                slot: CacheSlot) -> StepOutput:
    """config: the run's, shown without its reporting sections. The artifacts are published by the flow from the run
    folder (publish_run_report), so a cached report shows too."""
    upstream = {"validate": validate, "encode": encode, "train": train, "evaluate": evaluate}
    return produce_step(slot, lambda out: write_report(section_data("config", config), upstream, out))


def publish_run_report(run: Any, output: StepOutput) -> None:
    """After the report step (flows/pipeline.py): publish from the run folder, so the link outlives the cache
    and a cached report shows too."""
    publish_report_artifacts(run.step_output("report"), {"evaluate": run.step_output("evaluate")})
