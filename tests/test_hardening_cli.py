"""Issue 29, the command line under bad input: `serve` with a schedule or server it cannot use, `predict` keeping
every input row, `config` refusing a stack it cannot build, and failures told in one sentence without tracebacks.

Each case: one sentence on stderr, the README's exit code (2 for bad usage or configuration), nothing left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from flows.cli import main
from tests.helpers import TINY_RUN_ID, tiny_cli_args

REPO = Path(__file__).resolve().parent.parent
CLOSED_API = "http://127.0.0.1:9/api"  # the discard port: nobody listens


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("rnnflow: error: "), lines[0]
    return lines[0]


# --------------------------------------------------------------------------- serve


@pytest.fixture
def no_serving(monkeypatch: pytest.MonkeyPatch):
    """serve must stop before it registers anything: Flow.serve would block until killed."""
    from prefect.flows import Flow

    def refuse(*args, **kwargs):
        raise AssertionError("serve reached Flow.serve with input it should have refused")

    monkeypatch.setattr(Flow, "serve", refuse)
    monkeypatch.setenv("PREFECT_API_URL", CLOSED_API)


@pytest.mark.parametrize(("when", "expected"), [
    (["--cron", "bogus cron"], "--cron 'bogus cron' is not a cron schedule Prefect can run"),
    (["--cron", "61 25 * * *"], "--cron '61 25 * * *' is not a cron schedule Prefect can run"),
    (["--cron", "0 3 31 2 *"], "never fires"),
    (["--interval", "-5"], "--interval must be a positive number of seconds, e.g. 86400 for once a day, not -5."),
    (["--interval", "nan"], "not nan."),
    (["--interval", "0"], "not 0."),
    (["--interval", "inf"], "not inf."),
    (["--interval", "1e300"], "is more than a century"),
])
def test_serve_refuses_a_schedule_it_cannot_run_in_one_sentence(no_serving, tmp_path: Path, capsys, when: list[str], expected: str):
    assert main(["serve", "--preset", "demo", "--artifacts", str(tmp_path / "artifacts"), *when]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert expected in line and line.endswith(".")


def test_serve_names_a_prefect_api_nobody_answers_and_how_to_start_one(no_serving, tmp_path: Path, capsys):
    assert main(["serve", "--preset", "demo", "--artifacts", str(tmp_path / "artifacts"), "--cron", "0 3 * * *"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"No Prefect server answered at PREFECT_API_URL={CLOSED_API}" in line
    assert "make ui" in line and "prefect server start" in line


@pytest.mark.slow
def test_a_prefect_api_that_answers_passes_the_check(prefect_api):
    from prefect.settings import PREFECT_API_URL

    from flows.prefect_server import api_problem

    assert api_problem(PREFECT_API_URL.value()) is None


# --------------------------------------------------------------------------- config


def test_config_refuses_a_stack_with_fewer_sizes_than_cells_naming_both_keys(capsys):
    args = ["config", "--preset", "demo", "--set", "model.stack_cells=[gru,gru]", "--set", "model.stack_units=[8]"]
    assert main(args) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "model.stack_cells lists 2 layers (gru, gru) but model.stack_units gives 1 size (8)" in line
    assert "--set model.stack_units=[8,8]" in line


def test_config_refuses_a_member_whose_stack_sizes_do_not_fit(capsys):
    args = ["config", "--preset", "demo", "--set", "model.stack_cells=[gru,lstm]", "--set", "train.members=2",
            "--set", "train.member_models=[{stack_units: [8, 4, 2]}]"]
    assert main(args) == 2
    assert "in train.member_models entry 1" in _one_error_line(capsys.readouterr().err)


def test_config_keeps_stacks_that_fit(capsys):
    assert main(["config", "--preset", "seed-gru-stack"]) == 0
    shown = json.loads(capsys.readouterr().out)["model"]
    assert shown["stack_cells"] == ["gru", "simple_rnn"] and shown["stack_units"] == [256, 128]
    assert main(["config", "--preset", "demo", "--set", "model.stack_cells=[gru,gru]"]) == 0  # every layer gets model.units


def test_sweep_refuses_a_grid_point_whose_stack_does_not_fit_before_any_work(tmp_path: Path, capsys):
    args = ["sweep", "--preset", "demo", "--set", "model.stack_cells=[gru,gru]", "--grid", "model.stack_units=[8,8],[8]",
            "--artifacts", str(tmp_path / "artifacts")]
    assert main(args) == 2
    assert "model.stack_units gives 1 size" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "artifacts" / "sweeps").exists()


# --------------------------------------------------------------------------- predict: every input row has its prediction row

FIVE = ["a wonderful film", "dull and boring", " ", "moving", "awful, awful"]


def test_a_csv_keeps_every_row_blank_ones_too(tmp_path: Path):
    from tasks.predict import read_rows, read_texts

    source = tmp_path / "texts.csv"
    pd.DataFrame({"text": FIVE}).to_csv(source, index=False)
    assert read_texts(source) == FIVE  # before: the row of one space was skipped, four texts
    assert read_rows(source) == ([1, 2, 3, 4, 5], FIVE)
    one_column = tmp_path / "typed.csv"
    one_column.write_text("text\nfine\n\nbad\n", encoding="utf-8")  # an empty cell of a one-column sheet is an empty line
    assert read_rows(one_column) == ([1, 2, 3], ["fine", "", "bad"])
    lines = tmp_path / "texts.txt"
    lines.write_text("fine\n\nbad\n", encoding="utf-8")  # .txt: blank lines separate, each text keyed by its line
    assert read_rows(lines) == ([1, 3], ["fine", "bad"])


def _toy_predictor():
    import keras

    from tasks.config import EncodeConfig
    from tasks.encode import Vocabulary
    from tasks.predict import Predictor

    vocabulary = Vocabulary.build(["a wonderful film", "dull and boring", "moving awful"], EncodeConfig(num_words=20), max_len=6)
    inputs = keras.Input(shape=(6,), dtype="int32")
    hidden = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(20, 4)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(hidden))
    return Predictor(run_folder=Path("."), vocabulary=vocabulary, labels=["neg", "pos"], model=model)


def test_predictions_carry_the_input_row_and_flag_texts_with_no_words():
    from tasks.predict import format_predictions, predict_texts

    frame = predict_texts(_toy_predictor(), FIVE, rows=[2, 3, 4, 5, 6])
    assert frame["row"].tolist() == [2, 3, 4, 5, 6] and frame["text"].tolist() == FIVE
    assert frame["empty"].tolist() == [False, False, True, False, False]
    assert frame["label"].notna().all(), "a text with no words still has a label: the model's guess, flagged"
    table = format_predictions(frame).splitlines()
    assert table[0].split() == ["row", "label", "probability", "text"]
    assert table[3].split()[0] == "4" and "no words" in table[3]
    assert predict_texts(_toy_predictor(), ["fine"])["row"].tolist() == [1]


@pytest.mark.slow
def test_cli_predict_gives_five_rows_for_five_texts_one_of_them_a_space(tiny_run, tmp_path: Path, capsys):
    source = tmp_path / "texts.csv"
    pd.DataFrame({"id": [11, 12, 13, 14, 15], "text": FIVE}).to_csv(source, index=False)
    target = tmp_path / "predictions.csv"
    args = ["predict", "--artifacts", str(tiny_run.root), "--run", TINY_RUN_ID, "--input", str(source), "--output", str(target)]
    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"5 predictions from run {TINY_RUN_ID}") and "1 with no words (row 3)" in out[0]
    written = pd.read_csv(target, keep_default_na=False)
    assert written["row"].tolist() == [1, 2, 3, 4, 5] and written["text"].tolist() == FIVE
    assert written["empty"].tolist() == [False, False, True, False, False]


# --------------------------------------------------------------------------- failures: one sentence, tracebacks in run.log


def _fail_train(root: Path) -> str:
    """The tiny run's copy, as if its train step had failed: the manifest says so and train/ is gone."""
    folder = root / "runs" / TINY_RUN_ID
    manifest = json.loads((folder / "manifest.json").read_text())
    for name in ("train", "evaluate", "report", "promote"):
        manifest["steps"].pop(name, None)
    manifest["steps"]["train"] = {"status": "failed", "error": "boom in train", "seconds": 0.1}
    manifest["status"], manifest["error"] = "failed", "step train failed: boom in train"
    manifest.pop("promotion", None)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return TINY_RUN_ID


@pytest.mark.slow
@pytest.mark.parametrize("command", [["step", "evaluate"], ["run", "--from", "evaluate"], ["run", "--from", "promote"]])
def test_a_rerun_from_a_run_whose_train_failed_is_one_sentence_before_any_run_starts(tiny_run_copy, capfd, command: list[str]):
    run_id = _fail_train(tiny_run_copy.root)
    before = sorted(p.name for p in (tiny_run_copy.root / "runs").iterdir())
    assert main([*command, "--run", run_id, "--artifacts", str(tiny_run_copy.root)]) == 2
    line = _one_error_line(capfd.readouterr().err)
    assert f"Run {run_id} has no completed train step" in line and "train failed: boom in train" in line
    assert f"'rnnflow run --from train --run {run_id}'" in line
    assert sorted(p.name for p in (tiny_run_copy.root / "runs").iterdir()) == before, "no new run folder"


@pytest.mark.slow
def test_a_failed_sweep_point_prints_its_sentence_and_keeps_the_tracebacks_in_its_run_log(prefect_api, tmp_path: Path, capfd):
    root = tmp_path / "artifacts"
    # train.members 6 cannot split the tiny corpus's validation rows: that point fails in train, the other finishes.
    args = ["sweep", *tiny_cli_args("train.epochs=1"), "--grid", "train.members=1,6", "--artifacts", str(root), "--workers", "1"]
    assert main(args) == 1
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err + captured.out  # before: four, the same error each time
    assert "rnnflow: 1 of 2 grid points failed; first: members=6: step train failed: train.members 6" in captured.err
    runs = {json.loads((f / "manifest.json").read_text())["status"]: f for f in (root / "runs").iterdir()}
    assert set(runs) == {"completed", "failed"}
    assert "Traceback (most recent call last)" in (runs["failed"] / "run.log").read_text(), "the point's own run.log"
    assert "Traceback" not in (runs["completed"] / "run.log").read_text(), "only its own point's lines"
    sweep = next((root / "sweeps").iterdir())
    assert "Traceback (most recent call last)" in (sweep / "run.log").read_text()


@pytest.mark.slow
def test_step_keeps_no_prefect_database_in_prefect_home(tiny_run_copy, tmp_path: Path):
    """`rnnflow step` (and sweep) start rnnflow's temporary server, on a per-run database copy, as `run` does:
    Prefect's own would have grown PREFECT_HOME/prefect.db with every step rerun."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", "flows.cli", "step", "report", "--run", TINY_RUN_ID, "--artifacts", str(tiny_run_copy.root)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (tmp_path / "prefect-home" / "prefect.db").exists()
