"""Training from memory-mapped .npy through tf.data: the path for train arrays over train.in_memory_max_mb."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.config import ModelConfig, TrainConfig
from tasks.encode import PAD, START
from tasks.models import next_token_arrays
from tasks.store import read_json
from tasks.train import memmap_dataset, train_model
from tests.helpers import toy_encoding


def _mapped(tmp_path: Path, name: str, array: np.ndarray) -> np.ndarray:
    np.save(tmp_path / name, array)
    return np.load(tmp_path / name, mmap_mode="r")


def _batches(dataset) -> list[tuple[np.ndarray, ...]]:
    return [tuple(t.numpy() for t in batch) for batch in dataset]


def test_each_epoch_reads_every_row_once_in_its_own_seeded_order(tmp_path: Path):
    n, batch_size, epochs = 103, 10, 3
    x = _mapped(tmp_path, "X.npy", np.repeat(np.arange(n, dtype=np.int32)[:, None], 5, axis=1))
    y = _mapped(tmp_path, "y.npy", np.arange(n, dtype=np.int32))
    dataset, steps = memmap_dataset(x, y, batch_size, epochs=epochs, seed=7)
    assert steps == 11
    batches = _batches(dataset)
    assert len(batches) == steps * epochs
    orders = []
    for epoch in range(epochs):
        chunk = batches[epoch * steps : (epoch + 1) * steps]
        for xb, yb in chunk:
            assert xb.dtype == np.int32 and xb.shape[1] == 5
            assert (xb[:, 0] == yb).all(), "each label stays with its row"
            assert (np.diff(yb) > 0).all(), "rows within a batch are read front to back"
        order = np.concatenate([yb for _, yb in chunk])
        assert sorted(order.tolist()) == list(range(n)), f"epoch {epoch} reads every row exactly once"
        orders.append(order.tolist())
    assert len({tuple(o) for o in orders}) == epochs, "a new order each epoch"
    again = np.concatenate([yb for _, yb in _batches(memmap_dataset(x, y, batch_size, epochs=epochs, seed=7)[0])])
    assert again.tolist() == sum(orders, []), "the same seed gives the same orders"

    val, val_steps = memmap_dataset(x, y, batch_size)
    assert val_steps == steps
    assert np.concatenate([yb for _, yb in _batches(val)]).tolist() == list(range(n)), "validation: one pass in file order"


def test_next_token_batches_are_next_token_arrays_of_the_rows(tmp_path: Path):
    rng = np.random.default_rng(0)
    rows = rng.integers(3, 9, size=(37, 6)).astype(np.int32)
    rows[:, 0] = START
    rows[::3, 4:] = PAD
    x = _mapped(tmp_path, "X.npy", rows)
    dataset, steps = memmap_dataset(x, np.zeros(37, np.int32), 8, next_token=True)
    batches = _batches(dataset)
    assert len(batches) == steps == 5
    for got, expected in zip((np.concatenate(parts) for parts in zip(*batches)), next_token_arrays(rows)):
        assert got.dtype == expected.dtype and np.array_equal(got, expected)


@pytest.mark.slow
@pytest.mark.parametrize("budget,expected_input", [({"in_memory_max_mb": 0}, "memmap_tf_data"), ({}, "in_memory")])
def test_classifier_learns_through_either_input_path(tmp_path: Path, budget: dict, expected_input: str):
    encoded = toy_encoding(tmp_path / "encode")
    out = tmp_path / "train"
    out.mkdir()
    model = ModelConfig(cell="gru", units=8, embedding_dim=8, bidirectional=False)
    train_model(model, TrainConfig(epochs=4, patience=4, batch_size=16, learning_rate=0.02, **budget), encoded, out)
    info = read_json(out / "train.json")
    assert info["input"] == expected_input
    assert info["epochs_run"] == 4
    history = read_json(out / "history.json")
    assert len(history["val_loss"]) == 4, "validation runs every epoch"
    assert history["loss"][-1] < history["loss"][0]
    assert info["best_val_accuracy"] > 0.9, "the toy labels are one id range or the other"
    assert (out / "model.keras").exists() and (out / "model_text.keras").exists()


@pytest.mark.slow
def test_next_token_model_trains_through_the_memmap_path(tmp_path: Path):
    encoded = toy_encoding(tmp_path / "encode")
    x = np.load(encoded / "X_train.npy")
    alternating = np.where(x > PAD, np.where(np.arange(x.shape[1]) % 2 == 0, 3, 4), PAD).astype(np.int32)
    alternating[:, 0] = START
    np.save(encoded / "X_train.npy", alternating)  # after the start id, 4 3 4 3 ...: every next id is predictable
    out = tmp_path / "train"
    out.mkdir()
    model = ModelConfig(task="next_token", cell="gru", units=8, embedding_dim=8, bidirectional=False)
    train_model(model, TrainConfig(epochs=3, patience=3, batch_size=32, learning_rate=0.02, in_memory_max_mb=0), encoded, out)
    info = read_json(out / "train.json")
    assert info["input"] == "memmap_tf_data" and info["task"] == "next_token"
    history = read_json(out / "history.json")
    assert history["loss"][-1] < history["loss"][0]
    assert not (out / "model_text.keras").exists()
