"""train.members: classifiers trained one after another on their own validation blocks, averaged in model.keras."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.config import ModelConfig, RunConfig, TrainConfig
from tasks.evaluate import evaluate_model
from tasks.report import write_report
from tasks.store import read_json
from tasks.train import member_rows, train_model
from tests.helpers import REPORT_CONFIG as CONFIG
from tests.helpers import make_upstream
from tests.helpers import toy_encoding


def test_member_zero_validates_on_val_and_the_others_on_their_own_blocks_of_train():
    splits = member_rows(10, 3, 3)
    assert [held.tolist() for _, held in splits] == [[10, 11, 12], [7, 8, 9], [4, 5, 6]]
    assert splits[0][0].tolist() == list(range(10)), "member 0 trains on train exactly: one member is the single model"
    for trained, held in splits:
        assert len(trained) == 10, "every member trains on as many rows as train holds"
        assert not set(trained) & set(held), "no member validates on a row it trains on"


def test_more_members_than_validation_blocks_is_one_clear_error():
    with pytest.raises(ValueError, match=r"train.members 5 needs 5 validation blocks of 3 rows but train and val hold 13: use at most 4 members"):
        member_rows(10, 3, 5)


def test_next_token_runs_one_model():
    with pytest.raises(ValueError, match="train.members 2 does not apply"):
        RunConfig(encode={"tokenizer": "char"}, model={"task": "next_token", "bidirectional": False}, train={"members": 2})


@pytest.fixture(scope="module")
def two_members(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    tmp_path = tmp_path_factory.mktemp("members")
    encoded = toy_encoding(tmp_path / "encode")
    for name in ("X", "y"):  # the toy encoding has no test split: its val rows stand in
        np.save(encoded / f"{name}_test.npy", np.load(encoded / f"{name}_val.npy"))
    pd.DataFrame({"id": [f"r{i}" for i in range(64)], "length": np.full(64, 12)}).to_parquet(encoded / "tokens_test.parquet")
    out, evaluated = tmp_path / "train", tmp_path / "evaluate"
    out.mkdir()
    evaluated.mkdir()
    # Fitted side by side in two processes (as on any machine of two cores or more), deterministic so that
    # test_members_fitted_in_turn_are_the_same_fits can fit them again in this process and compare.
    epochs: list = []
    with _captured_log() as lines:
        train_model(MODEL, TWO_MEMBERS.model_copy(update={"member_processes": 2}), encoded, out, lambda *args: epochs.append(args[:2]))
    (tmp_path / "log.txt").write_text("\n".join(lines))
    (tmp_path / "epochs.json").write_text(json.dumps(epochs))
    evaluate_model(encoded, out, evaluated)
    return encoded, out, evaluated


MODEL = ModelConfig(cell="gru", units=8, embedding_dim=8, bidirectional=False)
TWO_MEMBERS = TrainConfig(epochs=3, patience=3, batch_size=16, learning_rate=0.02, members=2, deterministic=True)


@contextmanager
def _captured_log() -> Iterator[list[str]]:
    """The lines step code logs outside a Prefect run (the "rnnflow" logger) while the block runs."""
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("rnnflow")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.mark.slow
def test_members_fitted_in_turn_are_the_same_fits(two_members, tmp_path: Path):
    encoded, out, _ = two_members
    in_turn = tmp_path / "train"
    in_turn.mkdir()
    train_model(MODEL, TWO_MEMBERS.model_copy(update={"member_processes": 1}), encoded, in_turn)
    side_by_side, one_process = read_json(out / "train.json"), read_json(in_turn / "train.json")
    assert (side_by_side["member_processes"], one_process["member_processes"]) == (2, 1)
    assert [run["history"] for run in side_by_side["member_runs"]] == [run["history"] for run in one_process["member_runs"]]


def test_a_member_built_while_another_thread_draws_from_random_gets_its_seeds_weights(tmp_path: Path):
    """Prefect's threads live in the flow's process: what they draw from Python's `random` must not change the weights."""
    import random
    import threading

    from tasks.member_fit import build_member, load_training_data

    data = load_training_data(toy_encoding(tmp_path / "encode"), TWO_MEMBERS)
    quiet = build_member(MODEL, TWO_MEMBERS, data, 0, bucket=False).get_weights()
    stop = threading.Event()
    drawing = threading.Thread(target=lambda: [random.random() for _ in iter(stop.is_set, True)], daemon=True)
    drawing.start()
    try:
        busy = [build_member(MODEL, TWO_MEMBERS, data, 0, bucket=False).get_weights() for _ in range(3)]
    finally:
        stop.set()
        drawing.join()
    for weights in busy:
        assert all(np.array_equal(a, b) for a, b in zip(quiet, weights, strict=True)), "the same seed, the same weights"


@pytest.mark.slow
def test_members_in_processes_log_and_report_progress_as_in_one(two_members):
    log = (two_members[1].parent / "log.txt").read_text()
    assert re.search(r"train: 2 members in 2 processes, \d+ thread\(s\) each \(train.member_processes\)", log)
    for k in (1, 2):
        assert f"member {k}" in log, f"member {k}'s own lines come back from its process"
    epochs = json.loads((two_members[1].parent / "epochs.json").read_text())
    assert epochs == [[done, 6] for done in range(1, 7)], "every epoch of both members counted once, in order, out of 6"


@pytest.mark.slow
def test_model_keras_is_the_mean_of_the_members_kept_beside_it(two_members):
    import keras

    encoded, out, _ = two_members
    x = np.load(encoded / "X_val.npy")
    averaged = keras.models.load_model(out / "model.keras", compile=False).predict(x, verbose=0)
    alone = [keras.models.load_model(out / f"member_{k}.keras", compile=False).predict(x, verbose=0) for k in (1, 2)]
    np.testing.assert_allclose(averaged, (alone[0] + alone[1]) / 2, rtol=1e-5, atol=1e-6)
    assert (out / "model_text.keras").exists(), "the averaged model is exported with its preprocessing like any other"


@pytest.mark.slow
def test_train_json_describes_each_member(two_members):
    _, out, _ = two_members
    info = read_json(out / "train.json")
    assert info["members"] == 2 and info["epochs_run"] == 6 and info["best_epoch"] is None
    runs = info["member_runs"]
    assert [run["seed"] for run in runs] == [1337, 1338]
    assert [run["validation_rows"] for run in runs] == [64, 64]
    assert [run["file"] for run in runs] == ["member_1.keras", "member_2.keras"]
    assert all(len(run["history"]["val_loss"]) == run["epochs_run"] == 3 for run in runs)
    assert info["best_val_accuracy"] == pytest.approx(np.mean([run["best_val_accuracy"] for run in runs]))
    assert read_json(out / "history.json") == runs[0]["history"], "history.json is member 1's curves"


@pytest.mark.slow
def test_evaluate_scores_the_average_and_each_member_alone(two_members):
    encoded, _, evaluated = two_members
    metrics = read_json(evaluated / "metrics.json")
    assert [m["name"] for m in metrics["members"]] == ["rnnflow_gru_member1", "rnnflow_gru_member2"]
    assert all(0.0 <= m["accuracy"] <= 1.0 for m in metrics["members"])
    predictions = pd.read_parquet(evaluated / "predictions.parquet")
    y = np.load(encoded / "y_test.npy")
    assert metrics["test"]["accuracy"] == pytest.approx(float((predictions["predicted"].to_numpy() == y).mean()))


def test_streamed_training_with_members_is_refused_in_one_sentence(tmp_path: Path):
    encoded = toy_encoding(tmp_path / "encode")
    (tmp_path / "train").mkdir()
    config = TrainConfig(epochs=1, members=2, in_memory_max_mb=0)
    with pytest.raises(ValueError, match="raise train.in_memory_max_mb or leave train.members at 1"):
        train_model(ModelConfig(bidirectional=False), config, encoded, tmp_path / "train")


def test_report_lists_the_members(tmp_path: Path):
    upstream = make_upstream(tmp_path, ["neg", "pos"])
    train_json = Path(upstream["train"].dir) / "train.json"
    train = json.loads(train_json.read_text())
    train |= {"members": 2, "epochs_run": 7, "best_epoch": None, "monitor": "val_accuracy", "member_processes": 2, "member_runs": [
        {"seed": 1337, "epochs_run": 3, "best_epoch": 2, "best_val_accuracy": 0.74, "validation_rows": 20},
        {"seed": 1338, "epochs_run": 4, "best_epoch": 3, "best_val_accuracy": 0.76, "validation_rows": 20},
    ], "bag_starts": [
        {"start": "logistic", "c": 100.0, "val_accuracy": {"1": 0.7, "10": 0.71, "100": 0.72}},
        {"start": "logistic", "c": 10.0, "val_accuracy": {"1": 0.7, "10": 0.75, "100": 0.73}},
    ]}
    train_json.write_text(json.dumps(train))
    metrics_json = Path(upstream["evaluate"].dir) / "metrics.json"
    metrics = json.loads(metrics_json.read_text())
    metrics["members"] = [{"name": "m1", "accuracy": 0.85, "roc_auc": 0.93}, {"name": "m2", "accuracy": 0.86, "roc_auc": 0.94}]
    metrics_json.write_text(json.dumps(metrics))
    write_report(CONFIG, upstream, tmp_path / "report")
    markdown = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert "| Epochs run | 7 over 2 members (best: 2, 3, stopped early) |" in markdown
    assert "2 members trained 2 at a time, each stopping early on its own 20 validation rows of train and val (highest val accuracy)" in markdown
    assert ("Each bag of n-grams started from an NB-weighted logistic regression on its training rows, C chosen of 1, 10, 100 "
            "on its validation rows: C 100 (val accuracy 0.7200), C 10 (val accuracy 0.7500).") in markdown
    assert "| 1 | 1,337 | - | 2 of 3 | 0.7400 | 0.8500 | 0.9300 |" in markdown, "a member without model changes shows -"
    assert "| 2 | 1,338 | - | 3 of 4 | 0.7600 | 0.8600 | 0.9400 |" in markdown


@pytest.mark.slow
def test_the_ensemble_summary_shows_each_member_s_layers_and_every_column(two_members, monkeypatch):
    import keras

    from tasks.models import summary_text

    _, out, _ = two_members
    monkeypatch.delenv("COLUMNS", raising=False)  # as in a scheduled run: no terminal to size the table by
    summary = summary_text(keras.models.load_model(out / "model.keras", compile=False))
    assert summary == read_json(out / "train.json")["model_summary"]
    assert summary.count("└ gru") == 2, "each member's recurrent layer is listed"
    table = [line for line in summary.splitlines() if line[:1] in "┏┃┡│├└"]
    assert table and all(line[-1] in "┓┃┩│┤┘" for line in table), "no line is cut before the table's right border"
    assert "Connected to" in summary


def test_member_processes_auto_is_one_per_core_and_member_and_a_number_is_taken_as_asked(monkeypatch):
    from tasks import member_pool

    monkeypatch.setattr(member_pool, "cpu_cores", lambda: 2)
    resolve = member_pool.member_processes
    assert resolve(TrainConfig(members=5)) == 2, "auto on a CPU: one per core"
    assert resolve(TrainConfig(members=5, member_processes=3)) == 3, "a number is taken as asked"
    assert resolve(TrainConfig(members=2, member_processes=4)) == 2, "never more than one per member"
    assert resolve(TrainConfig(members=1)) == resolve(TrainConfig(members=5, member_processes=1)) == 1


def test_a_daemon_process_fits_the_members_itself_and_says_so_when_asked_for_more(monkeypatch, caplog):
    import multiprocessing

    from tasks import member_pool

    monkeypatch.setattr(multiprocessing.current_process(), "daemon", True)
    with caplog.at_level(logging.WARNING, logger="rnnflow"):
        assert member_pool.member_processes(TrainConfig(members=5)) == 1
        assert not caplog.records, "auto asks for nothing, so nothing is refused"
        assert member_pool.member_processes(TrainConfig(members=5, member_processes=2)) == 1
    assert "cannot start processes: the members train one after another here" in caplog.text


def test_a_member_process_that_dies_is_one_sentence_naming_the_member_and_the_way_out():
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    from tasks.member_pool import _result

    futures = [Future() for _ in range(3)]
    futures[1].set_exception(BrokenProcessPool("A process in the process pool was terminated abruptly"))
    with pytest.raises(RuntimeError) as caught:
        _result(futures, 1)
    assert str(caught.value).startswith("the process fitting member 2 of 3 ended before it finished (killed, or out of memory?)")
    assert "set train.member_processes 1" in str(caught.value) and "\n" not in str(caught.value)
