"""Grid sweeps: parsing the grid, the comparison report, and a sweep of two keys on a real local Dask cluster."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from flows.cli import main
from tasks.config import ConfigError, load_config
from tasks.steps import STEPS
from tasks.store import ArtifactStore
from tasks.sweep import (
    POINT_VALIDATION, SWEEP_HTML, SWEEP_JSON, artifact_rows, best_row, format_sweep_table, grid_points, parse_grid, point_configs, point_row,
    write_sweep_report,
)
from tests.helpers import tiny_config



# --------------------------------------------------------------------------- the grid


def test_parse_grid_reads_values_like_set_and_keeps_lists_whole():
    grid = parse_grid(["model.cell=lstm,gru", "model.units=32, 64", "train.learning_rate=0.01", "model.stack_units=[64,32],[32,16]"])
    assert grid == {
        "model.cell": ["lstm", "gru"],
        "model.units": [32, 64],
        "train.learning_rate": [0.01],
        "model.stack_units": [[64, 32], [32, 16]],
    }


def test_grid_points_are_every_combination_first_key_slowest():
    points = grid_points({"model.cell": ["lstm", "gru"], "model.units": [32, 64]})
    assert points == [
        {"model.cell": "lstm", "model.units": 32},
        {"model.cell": "lstm", "model.units": 64},
        {"model.cell": "gru", "model.units": 32},
        {"model.cell": "gru", "model.units": 64},
    ]


@pytest.mark.parametrize(
    "items, message",
    [
        ([], "at least one --grid"),
        (["model.cell"], "needs values"),
        (["model.cell="], "needs values"),
        (["model.units=32,,64"], "empty value"),
        (["cell=lstm,gru"], "must name a section and a key"),
        (["encode.max_len=40,80"], "only model.* and train.* keys can vary"),
        (["model.cell=lstm", "model.cell=gru"], "given twice"),
    ],
)
def test_parse_grid_rejects_bad_items_with_one_sentence(items, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_grid(items)


@pytest.mark.parametrize(
    "item, message",
    [
        ("model.colour=red,blue", "Unknown configuration key 'model.colour' in --grid"),
        ("model.units=32,many", "Configuration key 'model.units' in --grid is invalid"),
        ("model.cell=lstm,transformer", "Configuration key 'model.cell' in --grid is invalid"),
        ("model.units=32,32.0", "lists 32 twice"),
    ],
)
def test_point_configs_validate_every_value_against_the_configuration(item, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        point_configs(load_config("demo"), parse_grid([item]))


def test_point_configs_apply_each_point_over_the_base_configuration():
    base = load_config("demo", overrides=["train.epochs=1"])
    points = point_configs(base, parse_grid(["model.cell=lstm,gru", "model.units=32,64.0"]))
    assert [point for point, _ in points][-1] == {"model.cell": "gru", "model.units": 64}  # read back: 64.0 is 64
    assert [(c.model.cell, c.model.units, c.train.epochs) for _, c in points] == [
        ("lstm", 32, 1), ("lstm", 64, 1), ("gru", 32, 1), ("gru", 64, 1)
    ]


@pytest.mark.parametrize("grid", [["--grid", "model.cell"], ["--grid", "model.units=32,abc"], ["--grid", "model.nope=1,2"]])
def test_cli_sweep_exits_2_with_one_sentence_for_a_bad_grid(grid, tmp_path: Path, capsys):
    assert main(["sweep", "--preset", "demo", "--artifacts", str(tmp_path), *grid]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("rnnflow: error: ") and "\n" not in error and "Traceback" not in error
    assert not (tmp_path / "sweeps").exists(), "nothing is written for a bad grid"


# --------------------------------------------------------------------------- the comparison report


def _row(run_id: str, cell: str, accuracy: float | None, seconds: float | None, status: str = "completed", *,
         val_accuracy: float | None = None, val_loss: float | None = 0.3) -> dict:
    """A point's row; its validation accuracy is its test accuracy unless given."""
    return {
        "run_id": run_id, "grid_point": {"model.cell": cell}, "status": status, "error": None if status == "completed" else "step train failed: boom",
        "val_accuracy": accuracy if val_accuracy is None else val_accuracy, "val_loss": val_loss if accuracy is not None else None,
        "test_accuracy": accuracy, "test_f1": accuracy, "test_roc_auc": None, "train_seconds": seconds, "train_status": "completed",
        "epochs_run": 2, "params": 100, "promotion": None,
    }


def test_best_is_chosen_on_validation_accuracy_never_on_test_accuracy():
    better_on_test = _row("a", "lstm", 0.95, 5.0, val_accuracy=0.85)
    better_on_validation = _row("b", "gru", 0.80, 10.0, val_accuracy=0.90)
    assert best_row([better_on_test, better_on_validation])["run_id"] == "b"
    no_validation_figure = {**_row("c", "simple_rnn", 0.99, 1.0), "val_accuracy": None, "val_loss": None}
    assert best_row([better_on_validation, no_validation_figure])["run_id"] == "b"
    assert best_row([no_validation_figure]) is None, "a point without a validation accuracy cannot be best"


def test_best_ties_go_to_the_lower_validation_loss_then_the_faster_and_never_a_failed_point():
    rows = [_row("a", "lstm", 0.8, 5.0, val_loss=0.40), _row("b", "gru", 0.8, 10.0, val_loss=0.35), _row("c", "simple_rnn", None, None, status="failed")]
    assert best_row(rows)["run_id"] == "b", "equal validation accuracy: the lower validation loss"
    rows = [_row("a", "lstm", 0.8, 10.0), _row("b", "gru", 0.8, 5.0)]
    assert best_row(rows)["run_id"] == "b", "equal validation accuracy and loss: the faster to train"
    assert best_row([_row("c", "simple_rnn", 0.9, 1.0, status="failed")]) is None


def _point_folder(folder: Path, training: dict | None, manifest_extra: dict | None = None) -> Path:
    """A finished point's run folder: its manifest, and train/train.json when training is given."""
    steps = {"train": {"status": "completed", "summary": {"seconds": 3.0, "epochs_run": 4, "params": 120}},
             "evaluate": {"status": "completed", "summary": {"accuracy": 0.91, "f1": 0.9, "roc_auc": 0.95}}}
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"run_id": folder.name, "status": "completed", "steps": steps, **(manifest_extra or {})}))
    if training is not None:
        (folder / "train").mkdir()
        (folder / "train" / "train.json").write_text(json.dumps(training))
    return folder


def test_point_row_reads_the_kept_epochs_validation_figures(tmp_path: Path):
    one_model = _point_folder(tmp_path / "r1", {"members": 1, "best_epoch": 3, "best_val_accuracy": 0.87, "best_val_loss": 0.31})
    row = point_row(one_model, {"model.cell": "gru"})
    assert (row["val_accuracy"], row["val_loss"], row["test_accuracy"]) == (0.87, 0.31, 0.91)
    # What the sweep task noted in the manifest (read where train.json lay) comes first: a bucket root leaves no train/ here.
    noted = _point_folder(tmp_path / "r2", None, {POINT_VALIDATION: {"val_accuracy": 0.86, "val_loss": 0.33}})
    assert (point_row(noted, {})["val_accuracy"], point_row(noted, {})["val_loss"]) == (0.86, 0.33)
    diverged = _point_folder(tmp_path / "r3", {"best_val_accuracy": 0.5, "best_val_loss": float("nan")})
    assert point_row(diverged, {})["val_loss"] is None
    assert point_row(_point_folder(tmp_path / "r4", None), {})["val_accuracy"] is None


def test_sweep_report_shows_validation_first_and_test_for_reference(tmp_path: Path):
    rows = [_row("a", "lstm", 0.95, 10.0, val_accuracy=0.70), _row("b", "gru", 0.80, 12.0, val_accuracy=0.90),
            _row("c", "simple_rnn", None, None, status="failed")]
    summary = write_sweep_report(tmp_path, {"sweep_id": "s1", "grid": {"model.cell": ["lstm", "gru", "simple_rnn"]}, "config": {"preset": "demo"}}, rows)
    assert summary["best_run_id"] == "b", "chosen on validation, though a scored higher on test"
    written = json.loads((tmp_path / SWEEP_JSON).read_text())
    assert written["best_run_id"] == "b" and written["metric"] == "validation accuracy"
    assert [(p["val_accuracy"], p["val_loss"]) for p in written["points"]] == [(0.70, 0.3), (0.90, 0.3), (None, None)]

    page = (tmp_path / SWEEP_HTML).read_text()
    assert len(re.findall(r'<tr class="point', page)) == 3
    assert re.search(r'<tr class="point best"><td>★ best</td><td>gru</td>', page)
    headers = re.findall(r"<th>([^<]*)</th>", page)
    assert headers.index("val accuracy") < headers.index("val loss") < headers.index("test accuracy")
    assert "The best point is the one with the highest validation accuracy" in page
    assert "the test columns are shown for reference only" in page
    assert "step train failed: boom" in page
    assert "data:image/png;base64," in page

    header, *lines = format_sweep_table(summary).splitlines()
    assert header.index("val acc") < header.index("val loss") < header.index("test acc")
    assert lines[1].startswith("*") and "0.9000" in lines[1] and "0.8000" in lines[1]
    console = lines
    assert console[-1].startswith("* best on validation accuracy: cell=gru, validation accuracy 0.9000 (test accuracy 0.8000")
    assert list(artifact_rows(summary)[1])[4:7] == ["validation accuracy", "validation loss", "test accuracy"]


# --------------------------------------------------------------------------- a real sweep on Dask


@pytest.mark.slow
def test_a_sweep_of_two_keys_on_a_local_dask_cluster(prefect_api, tmp_path: Path):
    """Two worker processes, one thread each: the points really cross a process boundary (by path).

    Two keys, each point's config set from both (model.units 16, not the tiny configuration's 8), but two points, not
    the 2x2 grid of before: every combination of a grid is test_grid_points_are_every_combination_first_key_slowest's
    and test_point_configs_apply_each_point_over_the_base_configuration's, a worker running point after point is
    tests/test_object_store.py's Dask sweep (one worker, two points), and the two points more cost ~20 CPU-s."""
    from flows.sweep import rnnflow_sweep, task_runner

    root = tmp_path / "artifacts"
    grid = parse_grid(["model.cell=lstm,gru", "model.units=16"])
    runner = task_runner("dask", workers=2)
    # A bag of words started from Naive Bayes beside each recurrence: 2 epochs on 128 tiny reviews leave a bare RNN at
    # chance, and a point that puts every test review in one class is rightly not promoted (stop 40's CI saw it).
    config = tiny_config("model.ngrams=1")
    folder = Path(rnnflow_sweep.with_options(task_runner=runner)(grid=grid, config=config, artifacts_root=str(root)))  # the grid sets model.units

    assert folder.parent == root / "sweeps"
    sweep = json.loads((folder / "manifest.json").read_text())
    assert sweep["status"] == "completed"
    assert sweep["task_runner"]["kind"] == "dask" and sweep["task_runner"]["cluster_kwargs"]["processes"] is True
    assert {name: step["status"] for name, step in sweep["steps"].items()} == {"ingest": "completed", "validate": "completed", "encode": "completed", "baseline": "completed"}

    runs = sorted((root / "runs").iterdir())
    assert len(runs) == 2
    points = []
    for run in runs:
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["status"] == "completed", manifest.get("error")
        assert manifest["sweep_id"] == folder.name
        # Only the point chosen on validation runs promote: the champion is not the best of four on a test figure.
        assert list(manifest["steps"]) == [*STEPS[:-1], *(["promote"] if run.name == sweep["best_run_id"] else [])]
        assert {manifest["steps"][s]["status"] for s in ("ingest", "validate", "encode")} == {"cached"}
        assert manifest["steps"]["encode"]["key"] == sweep["steps"]["encode"]["key"], "one shared encoding"
        assert manifest["config"]["model"]["cell"] == manifest["grid_point"]["model.cell"]
        assert manifest["config"]["model"]["units"] == manifest["grid_point"]["model.units"]
        assert (run / "report" / "report.html").is_file() and (run / "train" / "model.keras").is_file()
        points.append(manifest["grid_point"])
    assert sorted(points, key=lambda p: (p["model.cell"], p["model.units"])) == sorted(grid_points(grid), key=lambda p: (p["model.cell"], p["model.units"]))

    summary = json.loads((folder / SWEEP_JSON).read_text())
    assert len(summary["points"]) == 2
    best = max(summary["points"], key=lambda row: (row["val_accuracy"], -row["val_loss"], -row["train_seconds"]))
    assert summary["best_run_id"] == best["run_id"], "chosen on validation figures"
    assert sweep["promotion"]["outcome"] == "promoted" and sweep["promotion"]["run_id"] == best["run_id"]
    assert ArtifactStore(root).champions.choose(None)["run_id"] == best["run_id"]
    assert all(0 <= row["val_accuracy"] <= 1 and row["val_loss"] > 0 for row in summary["points"])
    assert all(0 <= row["test_accuracy"] <= 1 and row["train_seconds"] > 0 for row in summary["points"])
    page = (folder / SWEEP_HTML).read_text()
    assert len(re.findall(r'<tr class="point', page)) == 2
    assert page.count('class="point best"') == 1 and best["run_id"] in page
