"""train.monitor: early stopping, train.lr_drop and the kept epoch follow the lowest val_loss or the highest val_accuracy."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tasks.config import ModelConfig, TrainConfig
from tasks.member_fit import kept_epoch
from tasks.store import read_json
from tasks.train import train_model
from tests.helpers import toy_encoding

HISTORY = {"val_accuracy": [0.90, 0.92, 0.92, 0.91], "val_loss": [0.30, 0.27, 0.25, 0.24]}


def test_the_kept_epoch_is_the_first_best_of_the_figure_watched():
    assert kept_epoch(HISTORY, "val_loss", 4) == 4
    assert kept_epoch(HISTORY, "val_accuracy", 4) == 2, "a tie keeps the earlier epoch, as Keras' callbacks do"
    assert kept_epoch({"val_loss": [float("nan")] * 3}, "val_loss", 3) == 3, "never finite: the last epoch's weights"


def test_a_figure_that_early_stopping_cannot_watch_is_refused():
    with pytest.raises(ValueError, match="monitor"):
        TrainConfig(monitor="accuracy")


@pytest.mark.slow
def test_watching_val_accuracy_keeps_the_epoch_of_its_peak_in_the_file_and_in_train_json(tmp_path):
    encoded = toy_encoding(tmp_path / "encode")
    out = tmp_path / "train"
    out.mkdir()
    model = ModelConfig(cell="gru", units=8, embedding_dim=8, bidirectional=False)
    train_model(model, TrainConfig(epochs=4, patience=4, batch_size=16, learning_rate=0.02, monitor="val_accuracy"), encoded, out)
    history, info = read_json(out / "history.json"), read_json(out / "train.json")
    peak = int(np.argmax(history["val_accuracy"]))  # the first epoch at the highest val accuracy
    assert info["monitor"] == "val_accuracy" and info["best_epoch"] == peak + 1
    assert info["best_val_accuracy"] == pytest.approx(history["val_accuracy"][peak])
    assert info["best_val_loss"] == pytest.approx(history["val_loss"][peak]), "the kept epoch's loss, not the lowest one"
    saved = keras.saving.load_model(out / "model.keras")
    x, y = np.load(encoded / "X_val.npy"), np.load(encoded / "y_val.npy")
    accuracy = float(((saved.predict(x, verbose=0).ravel() > 0.5) == (y == 1)).mean())
    assert accuracy == pytest.approx(history["val_accuracy"][peak], abs=1e-6), "model.keras holds the kept epoch's weights"
