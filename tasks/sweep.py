"""A grid sweep: parse the grid, expand it into validated run configurations, and compare the finished points.

    rnnflow sweep --grid model.cell=lstm,gru --grid model.units=32,64

The points share one ingest, validate and encode (the flow in flows/sweep.py runs them once),
so only model.* and train.* keys can vary. Each point is a run folder of its own under
<root>/runs/; the sweep's folder <root>/sweeps/<sweep-id>/ holds its manifest (the shared
steps, the grid, the points' run ids), sweep.json and sweep.html (a table and a plot of every
point's validation and test accuracy and training time, the best one marked).

The best point is chosen on validation figures only (best_row): the test split judges the chosen
point once, and a point picked for its test accuracy would carry a test figure flattered by the
choice. Test columns are shown beside, for reference.
"""

from __future__ import annotations

import html
import itertools
import json
import math
from pathlib import Path
from typing import Any, Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.config import ConfigError, RunConfig, load_config, parse_override
from tasks.render import STYLESHEET, Link, Table, as_number, figure_png, format_decimals, format_metric, html_table, new_figure, png_data_uri
from tasks.store import MANIFEST_FILE, ArtifactStore, RunFiles, RunRecord, read_json, write_json, write_text

SWEEPABLE_SECTIONS = ("model", "train")
SWEEP_MANIFEST = MANIFEST_FILE
SWEEP_JSON = "sweep.json"
SWEEP_HTML = "sweep.html"
ARTIFACT_KEY = "rnnflow-sweep"
# The key of a point's run manifest where its sweep task notes the validation figures it is compared on
# (read where train.json lies: a worker with a bucket root leaves no train/ folder in the flow's mirror).
POINT_VALIDATION = "sweep_validation"
CHOSEN_ON = "validation accuracy"
TIE_BREAKS = "lower validation loss, then shorter training"

Grid = dict[str, list[Any]]


# --------------------------------------------------------------------------- the grid


def _split_values(raw: str) -> list[str]:
    """Split on commas outside brackets, so list values survive: model.stack_units=[64,32],[32,16]."""
    pieces, depth, current = [], 0, ""
    for char in raw:
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        if char == "," and depth == 0:
            pieces.append(current.strip())
            current = ""
        else:
            current += char
    pieces.append(current.strip())
    return pieces


def parse_grid(items: Sequence[str]) -> Grid:
    """--grid SECTION.KEY=V1,V2 items as {key: [values]}, values read like --set values (64 a number, true a bool).

    Raises ConfigError (one sentence) for an item without values, an empty value, a key outside
    model.* and train.*, or a key given twice. Whether the key exists and each value fits is
    checked against the configuration by point_configs.
    """
    if not items:
        raise ConfigError("A sweep needs at least one --grid SECTION.KEY=V1,V2, for example --grid model.cell=lstm,gru.")
    grid: Grid = {}
    for item in items:
        dotted, _, raw = item.partition("=")
        key = dotted.strip()
        if not raw.strip():
            raise ConfigError(f"--grid {item!r} needs values: write KEY=V1,V2, for example --grid {key or 'model.cell'}=lstm,gru.")
        parts = key.split(".")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"--grid {item!r} must name a section and a key, for example --grid model.units=32,64.")
        if parts[0] not in SWEEPABLE_SECTIONS:
            raise ConfigError(
                f"--grid {key}: the points of a sweep share one ingest, validate and encode, so only "
                f"{' and '.join(s + '.*' for s in SWEEPABLE_SECTIONS)} keys can vary; set {key} with --set, or run one sweep per value."
            )
        if key in grid:
            raise ConfigError(f"--grid {key} is given twice: list all its values in one --grid {key}=V1,V2.")
        values = []
        for piece in _split_values(raw):
            if not piece:
                raise ConfigError(f"--grid {item!r} has an empty value: separate values with single commas, e.g. {key}=32,64.")
            values.append(parse_override(f"{key}={piece}")[1])
        grid[key] = values
    return grid


def grid_points(grid: Grid) -> list[dict[str, Any]]:
    """Every combination of the grid's values (the cartesian product), the first key varying slowest."""
    keys = list(grid)
    return [dict(zip(keys, combination)) for combination in itertools.product(*(grid[k] for k in keys))]


def _value_at(config: RunConfig, key: str) -> Any:
    node: Any = config.as_dict()
    for part in key.split("."):
        node = node[part]
    return node


def _overrides(point: dict[str, Any]) -> list[str]:
    # JSON is YAML: the parsed value goes back through load_config exactly as it was read.
    return [f"{key}={json.dumps(value)}" for key, value in point.items()]


def _checked(base: RunConfig, point: dict[str, Any]) -> RunConfig:
    try:
        return load_config(base=base.as_dict(), overrides=_overrides(point))
    except ConfigError as error:
        # load_config names its override layer '--set'; here the values came from --grid.
        raise ConfigError(str(error).replace(" in --set", " in --grid")) from None


def point_configs(base: RunConfig, grid: Grid) -> list[tuple[dict[str, Any], RunConfig]]:
    """(grid point, its whole run configuration) for every point, validated by load_config.

    The point's values are read back from its validated configuration (32.0 becomes 32), so
    the manifest records what the run used. Raises ConfigError for an unknown key, a value of
    the wrong type, a value listed twice, or a combination the configuration rejects.
    """
    for key, values in grid.items():
        seen: list[Any] = []
        for value in values:
            resolved = _value_at(_checked(base, {key: value}), key)
            if resolved in seen:
                raise ConfigError(f"--grid {key} lists {json.dumps(resolved)} twice: give each value once.")
            seen.append(resolved)
    result = []
    for point in grid_points(grid):
        config = _checked(base, point)
        result.append(({key: _value_at(config, key) for key in point}, config))
    return result


def point_label(point: dict[str, Any]) -> str:
    """'cell=lstm, units=32': the grid point as a short label (the section is left out)."""
    return ", ".join(f"{key.split('.')[-1]}={_format_value(value)}" for key, value in point.items())


def _format_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


# --------------------------------------------------------------------------- the sweep's folder


def sweeps_dir(store: ArtifactStore) -> Path:
    return store.root / "sweeps"


def start_sweep(store: ArtifactStore, config: RunConfig, grid: Grid, *, sweep_id: str, task_runner: dict[str, Any], flow_run_id: str | None) -> RunRecord:
    """Create <root>/sweeps/<sweep-id>/ and its manifest: the record the shared steps are linked into."""
    folder = sweeps_dir(store) / sweep_id
    return RunRecord.create(folder, {"sweep_id": sweep_id}, config=config.as_dict(), flow_run_id=flow_run_id, store=store,
                            task_runner=task_runner, grid=grid, points=[])


def validation_figures(training: dict[str, Any]) -> dict[str, float | None]:
    """A point's validation accuracy and loss, from its train.json: the figures the sweep chooses on.

    One model: val_accuracy and val_loss of the epoch whose weights it kept (train.json
    best_val_accuracy, best_val_loss; early stopping and the checkpoint both keep the epoch of
    the best train.monitor). Several members (train.members > 1): the mean over the members of each one's
    kept-epoch figures, which train.json records under the same keys. The averaged ensemble has no
    validation figure of its own: each member validates on its own block of rows and the other
    members train on that block, so no labelled row is unseen by the ensemble. The mean of its
    members understates an ensemble (averaging usually beats its members), so against a single
    model it is a cautious comparison. NaN (a fit that diverged) counts as no figure.
    """
    return {"val_accuracy": as_number(training.get("best_val_accuracy")), "val_loss": as_number(training.get("best_val_loss"))}


def point_validation(run_folder: Path) -> dict[str, float | None]:
    """validation_figures of the run folder's train/train.json (None each where the folder has none)."""
    training = RunFiles.TRAINING.of_run(run_folder)
    return validation_figures(read_json(training) if training.is_file() else {})


def _recorded_validation(run_folder: Path, manifest: dict[str, Any]) -> dict[str, float | None]:
    """What the point's sweep task noted in its manifest; else its train.json, where the folder holds one."""
    recorded = manifest.get(POINT_VALIDATION)
    if not isinstance(recorded, dict):
        recorded = point_validation(run_folder)
    return {key: as_number(recorded.get(key)) for key in ("val_accuracy", "val_loss")}


def point_row(run_folder: Path, point: dict[str, Any]) -> dict[str, Any]:
    """One point's line of the comparison, from its run folder's manifest (and train.json, if the manifest lacks its figures)."""
    manifest = read_json(Path(run_folder) / MANIFEST_FILE)
    steps = manifest.get("steps") or {}
    validation = _recorded_validation(Path(run_folder), manifest)
    evaluate = (steps.get("evaluate") or {}).get("summary") or {}
    train = (steps.get("train") or {}).get("summary") or {}
    failed = [(name, entry.get("error")) for name, entry in steps.items() if entry.get("status") == "failed"]
    return {
        "run_id": manifest["run_id"],
        "grid_point": point,
        "status": manifest.get("status"),
        "error": f"step {failed[0][0]} failed: {failed[0][1]}" if failed else manifest.get("error"),
        "val_accuracy": validation.get("val_accuracy"),
        "val_loss": validation.get("val_loss"),
        "test_accuracy": evaluate.get("accuracy"),
        "test_f1": evaluate.get("f1"),
        "test_roc_auc": evaluate.get("roc_auc"),
        # The fit's own time, recorded by train: the same whether this run trained or took it from the cache.
        "train_seconds": train.get("seconds"),
        "train_status": (steps.get("train") or {}).get("status"),
        "epochs_run": train.get("epochs_run"),
        "params": train.get("params"),
        "promotion": (manifest.get("promotion") or {}).get("outcome"),
    }


def best_row(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The completed point with the highest validation accuracy (validation_figures); on a tie, the lower
    validation loss, then the faster to train. Test figures play no part; a point without a validation
    accuracy cannot be best."""
    scored = [row for row in rows if row["status"] == "completed" and as_number(row.get("val_accuracy")) is not None]
    return max(scored, key=_rank) if scored else None


def _rank(row: dict[str, Any]) -> tuple[float, float, float]:
    # An unknown loss or time loses its tie-break rather than the choice.
    loss, seconds = as_number(row.get("val_loss")), as_number(row.get("train_seconds"))
    return (as_number(row["val_accuracy"]), -(math.inf if loss is None else loss), -(math.inf if seconds is None else seconds))


# --------------------------------------------------------------------------- the comparison report

CHOICE_SENTENCE = (
    f"The best point is the one with the highest {CHOSEN_ON} (ties: {TIE_BREAKS}); the test columns are shown "
    "for reference only: the test split judges the chosen point once and plays no part in choosing it."
)


def _accuracy_label(value: Any) -> str:
    return "" if as_number(value) is None else format_decimals(value, 3)


def plot_sweep(rows: list[dict[str, Any]], best_run_id: str | None) -> bytes:
    """Two bar charts side by side: validation accuracy (test accuracy as a black mark on each bar, for
    reference) and training seconds per point, the best point in orange."""
    labels = [point_label(row["grid_point"]) for row in rows]
    colors = ["tab:orange" if row["run_id"] == best_run_id else "tab:blue" for row in rows]
    figure = new_figure(9.0, 1.5 + 0.45 * len(rows))
    accuracy_axes, time_axes = figure.subplots(1, 2, sharey=True)
    positions = list(range(len(rows)))
    accuracy_bars = accuracy_axes.barh(positions, [as_number(row.get("val_accuracy")) or 0.0 for row in rows], color=colors)
    tested = [(position, as_number(row["test_accuracy"])) for position, row in zip(positions, rows) if as_number(row["test_accuracy"]) is not None]
    if tested:
        test_marks = accuracy_axes.scatter([value for _, value in tested], [position for position, _ in tested], marker="|", s=220, color="black", zorder=3)
    time_bars = time_axes.barh(positions, [row["train_seconds"] or 0.0 for row in rows], color=colors)
    accuracy_axes.bar_label(accuracy_bars, labels=[_accuracy_label(row.get("val_accuracy")) for row in rows], padding=3, fontsize=8)
    time_axes.bar_label(time_bars, labels=[format_decimals(row["train_seconds"], 1) if row["train_seconds"] is not None else "" for row in rows], padding=3, fontsize=8)
    for position, row in zip(positions, rows):
        if as_number(row.get("val_accuracy")) is None:
            accuracy_axes.text(0.01, position, row["status"] if row["status"] != "completed" else "no validation figure", va="center", fontsize=8)
    accuracy_axes.set_yticks(positions, labels)
    accuracy_axes.invert_yaxis()
    accuracy_axes.set_xlim(0, 1.1)  # room for the labels
    accuracy_axes.set_xlabel(f"{CHOSEN_ON} (chooses the best)")
    time_axes.set_xlabel("training time (s)")
    if tested:
        from matplotlib.patches import Patch

        figure.legend([Patch(color="tab:blue"), Patch(color="tab:orange"), test_marks], ["validation accuracy", "the best point", "test accuracy (reference only)"],
                      loc="outside upper center", ncols=3, fontsize=8, frameon=False)
    for axes in (accuracy_axes, time_axes):
        axes.grid(axis="x", alpha=0.3)
    return figure_png(figure)


def sweep_table(summary: dict[str, Any]) -> Table:
    """One row per point (class "point", "point best" or "point failed"), its run id linking to its report;
    validation columns first (they choose), test columns after (for reference)."""
    keys = list(summary["grid"])
    rows, classes = [], []
    for row in summary["points"]:
        is_best = row["run_id"] == summary["best_run_id"]
        classes.append("point best" if is_best else ("point" if row["status"] == "completed" else "point failed"))
        rows.append([
            "★ best" if is_best else "",
            *(_format_value(row["grid_point"][key]) for key in keys),
            Link(row["run_id"], f"../../runs/{row['run_id']}/report/report.html"),
            str(row["status"]) + (f": {row['error']}" if row.get("error") else ""),
            format_metric(row.get("val_accuracy")),
            format_metric(row.get("val_loss")),
            format_metric(row["test_accuracy"]),
            format_metric(row["test_f1"]),
            format_decimals(row["train_seconds"], 1),
            "n/a" if row["epochs_run"] is None else str(row["epochs_run"]),
            "n/a" if row["params"] is None else str(row["params"]),
        ])
    headers = ["", *keys, "run", "status", "val accuracy", "val loss", "test accuracy", "test f1", "train s", "epochs", "params"]
    return Table(headers, rows, classes, number_columns=frozenset(range(len(keys) + 3, len(headers))))


def _verdict(best: dict[str, Any] | None) -> str:
    if not best:
        return f"No completed point has a {CHOSEN_ON}: there is no best."
    return (f"Best: {point_label(best['grid_point'])} (run {best['run_id']}), {CHOSEN_ON} {format_metric(best['val_accuracy'])} "
            f"(test accuracy {format_metric(best['test_accuracy'])}, for reference).")


def render_sweep_html(summary: dict[str, Any], png: bytes) -> str:
    grid = "; ".join(f"{html.escape(key)} = {html.escape(', '.join(_format_value(v) for v in values))}" for key, values in summary["grid"].items())
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>rnnflow sweep {html.escape(summary['sweep_id'])}</title><style>{STYLESHEET}</style></head><body>",
        f"<h1>Sweep {html.escape(summary['sweep_id'])}</h1>",
        f"<p>Preset {html.escape(str(summary.get('preset')))}; grid: {grid}; {len(summary['points'])} points. {html.escape(_verdict(summary.get('best')))}</p>",
        f'<p class="choice">{html.escape(CHOICE_SENTENCE)}</p>',
        html_table(sweep_table(summary), one_row_per_line=True),
        "<p>Validation figures are those of the epoch whose weights each run kept (with train.members above 1, the mean "
        "of its members&#x27; own: each validates on rows the others train on). Training time is the fit&#x27;s own "
        "time, as recorded by the train step. Each run links to its own report.</p>",
        f'<img alt="validation accuracy (test accuracy marked for reference) and training time per grid point" src="{png_data_uri(png)}">',
        "</body></html>",
    ])


def write_sweep_report(folder: Path, sweep_manifest: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Write sweep.json and sweep.html (table + embedded plot) into the sweep's folder; return the summary."""
    best = best_row(rows)
    summary = {
        "sweep_id": sweep_manifest["sweep_id"],
        "preset": (sweep_manifest.get("config") or {}).get("preset"),
        "grid": sweep_manifest["grid"],
        "metric": CHOSEN_ON,
        "ties": TIE_BREAKS,
        "best_run_id": best["run_id"] if best else None,
        "best": best,
        "points": rows,
    }
    write_json(Path(folder) / SWEEP_JSON, summary)
    write_text(Path(folder) / SWEEP_HTML, render_sweep_html(summary, plot_sweep(rows, summary["best_run_id"])))
    return summary


def format_sweep_table(summary: dict[str, Any]) -> str:
    """The comparison as a plain-text table, for the command line: validation columns (they choose), then test (reference)."""
    keys = list(summary["grid"])
    headers = ["", *(key.split(".")[-1] for key in keys), "run id", "status", "val acc", "val loss", "test acc", "train s"]
    body = [
        [
            "*" if row["run_id"] == summary["best_run_id"] else "",
            *(_format_value(row["grid_point"][key]) for key in keys),
            row["run_id"],
            str(row["status"]),
            format_metric(row.get("val_accuracy")),
            format_metric(row.get("val_loss")),
            format_metric(row["test_accuracy"]),
            format_decimals(row["train_seconds"], 1),
        ]
        for row in summary["points"]
    ]
    widths = [max(len(line[i]) for line in [headers, *body]) for i in range(len(headers))]
    numeric = set(range(len(headers) - 4, len(headers)))
    render = lambda line: "  ".join(cell.rjust(w) if i in numeric else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths))).rstrip()  # noqa: E731
    lines = [render(headers), *(render(line) for line in body)]
    best = summary.get("best")
    if best:
        lines.append(f"* best on {CHOSEN_ON}: {point_label(best['grid_point'])}, {CHOSEN_ON} {format_metric(best.get('val_accuracy'))}"
                     f" (test accuracy {format_metric(best['test_accuracy'])}, for reference)")
    return "\n".join(lines)


def artifact_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of the sweep's Prefect table artifact: validation columns first, then test, then time."""
    return [
        {"best": "★" if row["run_id"] == summary["best_run_id"] else "", "point": point_label(row["grid_point"]), "run": row["run_id"],
         "status": row["status"], "validation accuracy": row.get("val_accuracy"), "validation loss": row.get("val_loss"),
         "test accuracy": row["test_accuracy"], "train seconds": row["train_seconds"]}
        for row in summary["points"]
    ]


@task(name="sweep-report", cache_policy=NO_CACHE)
def sweep_report_task(folder: str, sweep_manifest: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Write the comparison, and show it in Prefect's UI as a table artifact."""
    from prefect.artifacts import create_table_artifact

    summary = write_sweep_report(Path(folder), sweep_manifest, rows)
    create_table_artifact(
        key=ARTIFACT_KEY,
        table=artifact_rows(summary),
        description=(f"Sweep {summary['sweep_id']}: {CHOSEN_ON} (chooses the best point), test accuracy (for reference only) "
                     f"and training time per grid point ({Path(folder) / SWEEP_HTML})"),
    )
    return summary
