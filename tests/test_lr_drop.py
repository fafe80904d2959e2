"""train.lr_drop: the learning rate shrinks after every epoch that does not lower val_loss."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.config import ModelConfig, TrainConfig
from tasks.report import history_table
from tasks.store import read_json
from tasks.train import train_model
from tests.helpers import toy_encoding


@pytest.mark.slow
def test_the_rate_drops_after_an_epoch_without_progress_and_the_curves_say_so(tmp_path):
    encoded = toy_encoding(tmp_path / "encode")
    out = tmp_path / "train"
    out.mkdir()
    # Validation labels the other way round: the better the model fits train, the worse val_loss gets.
    np.save(encoded / "y_val.npy", 1 - np.load(encoded / "y_val.npy"))
    model = ModelConfig(cell="gru", units=8, embedding_dim=8, bidirectional=False)
    train_model(model, TrainConfig(epochs=4, patience=4, batch_size=16, learning_rate=0.02, lr_drop=0.5), encoded, out)
    history = read_json(out / "history.json")
    rates, losses = history["learning_rate"], history["val_loss"]
    assert len(rates) == len(losses) == 4
    best, rate = float("inf"), 0.02
    drops = 0
    for used, loss in zip(rates, losses):
        # Each epoch's row holds the rate it trained at: halved after every epoch that did not beat the best val_loss.
        assert used == pytest.approx(rate, rel=1e-5)
        if loss < best:
            best = loss
        else:
            rate, drops = rate * 0.5, drops + 1
    assert drops, "val_loss never stalled, so this test showed nothing"
    table = history_table(history, None)
    assert table.headers[-1] == "learning_rate"
    assert table.rows[0][-1] == "0.02"


def test_a_drop_that_would_not_shrink_the_rate_is_refused():
    with pytest.raises(ValueError, match="lr_drop"):
        TrainConfig(lr_drop=1.0)
