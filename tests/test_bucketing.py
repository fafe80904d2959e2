"""train.bucket_by_length and train.deterministic: batches as long as their reviews, and runs that repeat their figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.config import ConfigError, ModelConfig, RunConfig, TrainConfig, load_config
from tasks.encode import PAD, START
from tasks.models import TokenWindow, build_model, next_token_arrays
from tasks.store import read_json
from tests.helpers import toy_encoding
from tasks.train import (
    BUCKET_STEP, TrainingData, bucket_width, bucketed, epoch_batches, member_inputs, memmap_dataset, op_determinism, train_model,
)

MAX_LEN = 200


def _rows(n: int = 300, max_len: int = MAX_LEN, padding: str = "post", seed: int = 0) -> np.ndarray:
    """Rows of START + ids 3..9, most of them far shorter than max_len, padded on the given side."""
    rng = np.random.default_rng(seed)
    x = np.full((n, max_len), PAD, np.int32)
    for i in range(n):
        length = int(min(max_len, rng.geometric(1 / 40) + 1))
        text = np.concatenate([[START], rng.integers(3, 10, size=length - 1)]).astype(np.int32)
        if padding == "post":
            x[i, :length] = text
        else:
            x[i, max_len - length :] = text
    return x


def _batches(dataset) -> list[tuple[np.ndarray, ...]]:
    return [tuple(t.numpy() for t in batch) for batch in dataset]


def _text(row: np.ndarray) -> list[int]:
    return row[row != PAD].tolist()


# --------------------------------------------------------------------------- the batches


def test_a_batch_is_padded_to_its_own_bucket_not_to_max_len():
    x = _rows()
    y = np.arange(len(x), dtype=np.int32)
    dataset, steps = memmap_dataset(x, y, 16, epochs=2, seed=3, bucket=True)
    batches = _batches(dataset)
    assert steps == 19 and len(batches) == 2 * steps, "as many batches as without buckets"
    for epoch in range(2):
        seen, mixed = [], 0
        for xb, yb in batches[epoch * steps : (epoch + 1) * steps]:
            buckets = {bucket_width(len(_text(x[i])), MAX_LEN) for i in yb}
            assert xb.shape[1] == max(buckets), "padded to the bucket of its longest row"
            mixed += len(buckets) > 1
            assert xb.shape[1] % BUCKET_STEP == 0 or xb.shape[1] == MAX_LEN
            for row, i in zip(xb, yb):
                assert _text(row) == _text(x[i]) and (row[: len(_text(row))] != PAD).all(), "the whole text, first, then padding"
            seen += yb.tolist()
        assert sorted(seen) == list(range(len(x))), f"epoch {epoch} reads every row once"
        assert mixed <= len({bucket_width(len(_text(row)), MAX_LEN) for row in x}), "only the buckets' remainders share batches"
    widths = [xb.shape[1] for xb, _ in batches]
    assert np.mean(widths) < MAX_LEN / 2, "rows of similar length go together: most batches are far narrower than max_len"
    assert len(set(widths)) <= MAX_LEN // BUCKET_STEP + 1, "a few shapes, not one per batch"

    val, _ = memmap_dataset(x, y, 16, bucket=True)
    assert sorted(np.concatenate([yb for _, yb in _batches(val)]).tolist()) == list(range(len(x))), "validation: every row once"


def test_left_padded_rows_come_right_padded():
    x = _rows(padding="pre")
    dataset, _ = memmap_dataset(x, np.arange(len(x), dtype=np.int32), 32, seed=1, epochs=1, bucket=True, right_padded=False)
    for xb, yb in _batches(dataset):
        assert xb.shape[1] < MAX_LEN or max(len(_text(x[i])) for i in yb) > MAX_LEN - BUCKET_STEP
        for row, i in zip(xb, yb):
            n = len(_text(x[i]))
            assert row[:n].tolist() == _text(x[i]) and (row[n:] == PAD).all()


def test_next_token_batches_are_next_token_arrays_cut_where_only_padding_is_left():
    x = _rows(n=100)
    dataset, _ = memmap_dataset(x, np.zeros(len(x), np.int32), 16, seed=5, epochs=1, next_token=True, bucket=True)
    batches = _batches(dataset)
    order = np.concatenate(epoch_batches(len(x), 16, 5, 0, np.count_nonzero(x, axis=1), MAX_LEN))
    full = next_token_arrays(x[order])
    start = 0
    for inputs, targets, weights in batches:
        width = inputs.shape[1]
        rows = slice(start, start + len(inputs))
        for got, expected in zip((inputs, targets, weights), full):
            np.testing.assert_array_equal(got, expected[rows, :width])
        assert full[2][rows, width:].sum() == 0, "no step that counts is cut off"
        assert width < MAX_LEN - 1 or weights[:, -1].any()
        start += len(inputs)


def test_the_same_seed_gives_the_same_batches_and_each_epoch_its_own():
    lengths = np.count_nonzero(_rows(), axis=1)
    first = epoch_batches(len(lengths), 16, 11, 0, lengths, MAX_LEN)
    assert all(np.array_equal(a, b) for a, b in zip(first, epoch_batches(len(lengths), 16, 11, 0, lengths, MAX_LEN)))
    for other in (epoch_batches(len(lengths), 16, 11, 1, lengths, MAX_LEN), epoch_batches(len(lengths), 16, 12, 0, lengths, MAX_LEN)):
        assert len(other) == len(first), "as many batches every epoch: the buckets' sizes depend on the lengths only"
        assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_each_bucket_is_cut_into_batches_and_the_remainders_are_batched_together_narrowest_first():
    lengths = np.array([10, 40, 10, 40, 40, 10, 100, 300])  # buckets 32, 64, 32, 64, 64, 32, 128, 200 (max_len)
    assert [b.tolist() for b in epoch_batches(8, 2, None, 0, lengths, 200)] == [[0, 2], [1, 3], [4, 5], [6, 7]]
    shuffled = epoch_batches(8, 2, 3, 0, lengths, 200)
    assert sorted(np.concatenate(shuffled).tolist()) == list(range(8)) and len(shuffled) == 4


def test_bucket_width_rounds_up_to_the_step_and_stops_at_max_len():
    assert [bucket_width(n, 400) for n in (1, 32, 33, 175, 384, 385, 400)] == [32, 32, 64, 192, 384, 400, 400]
    assert bucket_width(10, 20) == 20


# --------------------------------------------------------------------------- off: the old path


def test_off_gives_the_old_batches_exactly():
    n, batch = 103, 10
    for seed, epoch in ((None, 0), (7, 0), (7, 2)):
        order = np.arange(n) if seed is None else np.random.default_rng(seed + epoch).permutation(n)
        old = [np.sort(order[s : s + batch]) for s in range(0, n, batch)]
        assert all(np.array_equal(a, b) for a, b in zip(epoch_batches(n, batch, seed, epoch), old))
    x = _rows(n=64)
    for xb, _ in _batches(memmap_dataset(x, np.zeros(64, np.int32), 16, seed=1)[0]):
        assert xb.shape == (16, MAX_LEN), "without buckets every batch is max_len wide"


def test_off_hands_keras_the_arrays_as_before():
    x = _rows(n=40)
    y = (np.arange(40) % 2).astype(np.int32)
    data = TrainingData(x[:32], y[:32], x[32:], y[32:], {"num_words": 10, "max_len": MAX_LEN, "padding": "post"}, 2, streamed=False)
    train = TrainConfig(batch_size=8, bucket_by_length=False)
    inputs = member_inputs(data, train, 0, next_token=False, bucket=bucketed(ModelConfig(), train, 0))
    assert inputs["x"] is data.x_train and inputs["y"] is data.y_train and inputs["shuffle"] is True and inputs["batch_size"] == 8
    assert inputs["validation_data"][0] is data.x_val
    bucketed_inputs = member_inputs(data, TrainConfig(batch_size=8), 0, next_token=False, bucket=True)
    lengths = np.count_nonzero(data.x_train, axis=1)
    assert bucketed_inputs["steps_per_epoch"] == len(epoch_batches(32, 8, 1337, 0, lengths, MAX_LEN)) and bucketed_inputs["shuffle"] is False


def test_only_models_that_cannot_see_the_padding_cut_off_are_bucketed():
    train = TrainConfig()
    assert bucketed(ModelConfig(), train, 0)
    assert not bucketed(ModelConfig(mask_padding=False), train, 0), "a model that reads padding would learn on less of it"
    assert bucketed(ModelConfig(task="next_token", mask_padding=False, bidirectional=False), train, 0), "steps read only what came before"
    assert not bucketed(ModelConfig(), TrainConfig(bucket_by_length=False), 0)
    mixed = TrainConfig(members=2, member_models=[{"window_at": "end"}, {"mask_padding": False}])
    assert [bucketed(ModelConfig(), mixed, k) for k in (0, 1)] == [True, False]


# --------------------------------------------------------------------------- the model reads any length


@pytest.mark.parametrize("changes", [{}, {"window": 50, "word_dropout": 0.3}, {"pooling": "max", "bidirectional": True}, {"input": "onehot"}])
def test_a_model_of_any_length_gives_on_max_len_rows_what_it_gives_on_cut_ones(changes: dict):
    config = ModelConfig(cell="gru", units=4, embedding_dim=4, bidirectional=False).model_copy(update=changes)
    model = build_model(config, num_tokens=10, max_len=None, n_classes=2)
    x = _rows(n=8)
    width = bucket_width(np.count_nonzero(x, axis=1).max(), MAX_LEN)
    np.testing.assert_allclose(model.predict(x, verbose=0), model.predict(x[:, :width], verbose=0), rtol=1e-5, atol=1e-6)
    fixed = build_model(config, num_tokens=10, max_len=MAX_LEN, n_classes=2)
    assert fixed.count_params() == model.count_params(), "the same weights as the max_len model"
    assert fixed.input_shape == (None, MAX_LEN) and model.input_shape == (None, None)


@pytest.mark.parametrize("padding", ["post", "pre"])
def test_predictions_in_length_buckets_are_the_max_len_predictions_in_the_rows_order(padding: str):
    import keras

    from tasks.evaluate import predict_outputs, predict_probabilities
    from tasks.length_buckets import predict_in_buckets
    from tasks.train import average_members

    config = ModelConfig(cell="gru", units=4, embedding_dim=4, bidirectional=False)
    members = []
    for changes in ({}, {"window": 50, "pooling": "max"}):
        keras.utils.set_random_seed(len(members))
        member = build_model(config.model_copy(update=changes), num_tokens=10, max_len=None, n_classes=2)
        member.name = f"{member.name}_member{len(members) + 1}"  # as fit_member names them
        members.append(member)
    ensemble = average_members(members, MAX_LEN)
    assert ensemble.input_shape == (None, None), "members of any width make an ensemble of any width"
    x = _rows(n=150, padding=padding)  # 150 rows in batches of 64: several buckets and a remainder
    probe = keras.Model(ensemble.inputs, [ensemble.outputs[0], *(m(ensemble.inputs[0]) for m in members)])
    widths = []
    probe.predict_on_batch = lambda rows, own=probe.predict_on_batch: widths.append(rows.shape[1]) or own(rows)
    whole = probe.predict(x, batch_size=64, verbose=0)
    for got, want in zip(predict_outputs(probe, x, batch_size=64), whole):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert len(widths) == 3 and min(widths) < MAX_LEN, "three batches of 64 rows, the narrower ones cut to their bucket"
    np.testing.assert_allclose(predict_probabilities(ensemble, x)[:, 1], whole[0][:, 0], rtol=1e-5, atol=1e-6)
    fixed = build_model(config, num_tokens=10, max_len=MAX_LEN, n_classes=2)  # reads padding's width: not bucketed
    assert average_members([fixed, members[0]], MAX_LEN).input_shape == (None, MAX_LEN)
    np.testing.assert_allclose(predict_in_buckets(members[0], x[:3], 64), members[0].predict(x[:3], verbose=0), rtol=1e-5, atol=1e-6)


def test_a_window_of_rows_shorter_than_it_is_as_wide_as_the_rows():
    rows = np.array([[1, 5, 6, 0], [1, 4, 0, 0]], np.int32)
    assert np.asarray(TokenWindow(6, "end")(rows)).tolist() == rows.tolist()
    assert np.asarray(TokenWindow(2, "end")(rows)).tolist() == [[5, 6], [1, 4]]


TOY_MODEL = ModelConfig(cell="gru", units=8, embedding_dim=8, bidirectional=False, word_dropout=0.1)
TOY_TRAIN = TrainConfig(epochs=2, patience=2, batch_size=16, learning_rate=0.02)


@pytest.mark.slow
def test_a_model_trained_on_buckets_evaluates_and_predicts_on_max_len_rows(tmp_path: Path):
    import keras

    import tasks.export  # noqa: F401  (registers model_text.keras's layers)
    from tasks.evaluate import evaluate_model

    encoded = toy_encoding(tmp_path / "encode", n_train=192, max_len=64, test=True)
    out, evaluated = tmp_path / "train", tmp_path / "evaluate"
    out.mkdir()
    evaluated.mkdir()
    train_model(TOY_MODEL, TOY_TRAIN, encoded, out)
    info = read_json(out / "train.json")
    assert info["bucket_by_length"] is True and info["input"] == "in_memory"
    assert info["mean_batch_width"] < info["max_len"] == 64
    model = keras.models.load_model(out / "model.keras", compile=False)
    x = np.load(encoded / "X_test.npy")
    assert x.shape[1] == 64 and model.predict(x, verbose=0).shape == (len(x), 1)
    evaluate_model(encoded, out, evaluated)
    assert read_json(evaluated / "metrics.json")["test"]["accuracy"] > 0.9
    text_model = keras.models.load_model(out / "model_text.keras", compile=False)
    assert np.asarray(text_model(np.array(["w3 w4 w5", "w0"]))).shape == (2, 1)


@pytest.mark.slow
def test_off_trains_the_max_len_model_of_before(tmp_path: Path):
    import keras

    encoded = toy_encoding(tmp_path / "encode", n_train=192, max_len=64, test=True)
    out = tmp_path / "train"
    out.mkdir()
    train_model(TOY_MODEL, TOY_TRAIN.model_copy(update={"bucket_by_length": False, "epochs": 1}), encoded, out)
    info = read_json(out / "train.json")
    assert info["bucket_by_length"] is False and info["mean_batch_width"] == 64
    assert keras.models.load_model(out / "model.keras", compile=False).input_shape == (None, 64)


@pytest.mark.slow
def test_deterministic_runs_repeat_their_figures_to_the_last_digit(tmp_path: Path):
    from tensorflow.python.framework import config as tf_config

    encoded = toy_encoding(tmp_path / "encode", n_train=192, max_len=64, test=True)
    histories, weights = [], []
    for name in ("first", "again"):
        out = tmp_path / name
        out.mkdir()
        train_model(TOY_MODEL, TOY_TRAIN.model_copy(update={"deterministic": True}), encoded, out)
        histories.append(read_json(out / "history.json"))
        import keras

        weights.append(keras.models.load_model(out / "model.keras", compile=False).get_weights())
        assert read_json(out / "train.json")["deterministic"] is True
    assert histories[0] == histories[1], "every epoch's loss and accuracy, to the last digit"
    assert all(np.array_equal(a, b) for a, b in zip(*weights))
    assert not tf_config.is_op_determinism_enabled(), "switched back off after the run"


def test_op_determinism_stays_on_while_any_training_needs_it():
    from tensorflow.python.framework import config as tf_config

    assert not tf_config.is_op_determinism_enabled()
    with op_determinism(True):
        with op_determinism(True):
            assert tf_config.is_op_determinism_enabled()
        assert tf_config.is_op_determinism_enabled(), "the outer training still needs it"
        with op_determinism(False):
            assert tf_config.is_op_determinism_enabled()
    assert not tf_config.is_op_determinism_enabled()


# --------------------------------------------------------------------------- configuration


def test_the_keys_default_to_buckets_on_and_determinism_off():
    train = RunConfig().train
    assert train.bucket_by_length is True and train.deterministic is False
    config = load_config("default", overrides=["train.bucket_by_length=false", "train.deterministic=true"])
    assert config.train.bucket_by_length is False and config.train.deterministic is True


def test_jit_compile_is_keras_choice_unless_forced():
    assert RunConfig().train.jit_compile == "auto"
    assert load_config("default", overrides=["train.jit_compile=true"]).train.jit_compile is True


@pytest.mark.parametrize("item", ["train.bucket_by_length=sometimes", "train.deterministic=2", "train.jit_compile=fast"])
def test_a_wrong_value_is_one_sentence(item: str):
    with pytest.raises(ConfigError, match=rf"Configuration key '{item.split('=')[0]}' in --set is invalid"):
        load_config("default", overrides=[item])
