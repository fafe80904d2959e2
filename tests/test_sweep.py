"""Grid sweeps: parsing the grid, the comparison report, and a 2x2 sweep on a real local Dask cluster."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from flows.cli import main
from tasks.config import ConfigError, load_config
from tasks.store import STEPS
from tasks.sweep import SWEEP_HTML, SWEEP_JSON, best_row, grid_points, parse_grid, point_configs, write_sweep_report
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


def _row(run_id: str, cell: str, accuracy: float | None, seconds: float | None, status: str = "completed") -> dict:
    return {
        "run_id": run_id, "grid_point": {"model.cell": cell}, "status": status, "error": None if status == "completed" else "step train failed: boom",
        "test_accuracy": accuracy, "test_f1": accuracy, "test_roc_auc": None, "train_seconds": seconds, "train_status": "completed",
        "epochs_run": 2, "params": 100, "promotion": None,
    }


def test_best_is_the_highest_accuracy_then_the_faster_and_never_a_failed_point():
    rows = [_row("a", "lstm", 0.8, 10.0), _row("b", "gru", 0.8, 5.0), _row("c", "simple_rnn", None, None, status="failed")]
    assert best_row(rows)["run_id"] == "b"
    assert best_row([rows[2]]) is None


def test_sweep_report_marks_the_best_point_and_shows_failed_ones(tmp_path: Path):
    rows = [_row("a", "lstm", 0.7, 10.0), _row("b", "gru", 0.9, 12.0), _row("c", "simple_rnn", None, None, status="failed")]
    summary = write_sweep_report(tmp_path, {"sweep_id": "s1", "grid": {"model.cell": ["lstm", "gru", "simple_rnn"]}, "config": {"preset": "demo"}}, rows)
    assert summary["best_run_id"] == "b"
    assert json.loads((tmp_path / SWEEP_JSON).read_text())["best_run_id"] == "b"
    page = (tmp_path / SWEEP_HTML).read_text()
    assert len(re.findall(r'<tr class="point', page)) == 3
    assert re.search(r'<tr class="point best"><td>★ best</td><td>gru</td>', page)
    assert "step train failed: boom" in page
    assert "data:image/png;base64," in page


# --------------------------------------------------------------------------- a real sweep on Dask


@pytest.mark.slow
def test_a_2x2_sweep_on_a_local_dask_cluster(prefect_api, tmp_path: Path):
    """Two worker processes, one thread each: the points really cross a process boundary (by path)."""
    from flows.sweep import rnnflow_sweep, task_runner

    root = tmp_path / "artifacts"
    grid = parse_grid(["model.cell=lstm,gru", "model.units=8,16"])
    runner = task_runner("dask", workers=2)
    folder = Path(rnnflow_sweep.with_options(task_runner=runner)(grid=grid, config=tiny_config(), artifacts_root=str(root)))  # the grid sets model.units

    assert folder.parent == root / "sweeps"
    sweep = json.loads((folder / "manifest.json").read_text())
    assert sweep["status"] == "completed"
    assert sweep["task_runner"]["kind"] == "dask" and sweep["task_runner"]["cluster_kwargs"]["processes"] is True
    assert {name: step["status"] for name, step in sweep["steps"].items()} == {"ingest": "completed", "validate": "completed", "encode": "completed"}

    runs = sorted((root / "runs").iterdir())
    assert len(runs) == 4
    points = []
    for run in runs:
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["status"] == "completed", manifest.get("error")
        assert manifest["sweep_id"] == folder.name
        assert list(manifest["steps"]) == list(STEPS)
        assert {manifest["steps"][s]["status"] for s in ("ingest", "validate", "encode")} == {"cached"}
        assert manifest["steps"]["encode"]["key"] == sweep["steps"]["encode"]["key"], "one shared encoding"
        assert manifest["config"]["model"]["cell"] == manifest["grid_point"]["model.cell"]
        assert manifest["config"]["model"]["units"] == manifest["grid_point"]["model.units"]
        assert (run / "report" / "report.html").is_file() and (run / "train" / "model.keras").is_file()
        points.append(manifest["grid_point"])
    assert sorted(points, key=lambda p: (p["model.cell"], p["model.units"])) == sorted(grid_points(grid), key=lambda p: (p["model.cell"], p["model.units"]))

    summary = json.loads((folder / SWEEP_JSON).read_text())
    assert len(summary["points"]) == 4
    best = max(summary["points"], key=lambda row: (row["test_accuracy"], -row["train_seconds"]))
    assert summary["best_run_id"] == best["run_id"]
    assert all(0 <= row["test_accuracy"] <= 1 and row["train_seconds"] > 0 for row in summary["points"])
    page = (folder / SWEEP_HTML).read_text()
    assert len(re.findall(r'<tr class="point', page)) == 4
    assert page.count('class="point best"') == 1 and best["run_id"] in page
