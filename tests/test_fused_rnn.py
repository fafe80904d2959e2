"""train.fused_input: FusedGRU / FusedLSTM compute what keras.layers.GRU / LSTM compute, on the same weights."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from tasks.config import ModelConfig
from tasks.architectures import recurrent_layer
from tasks.fused_rnn import FusedGRU, FusedLSTM
from tasks.models import build_model


def _pair(plain_cls, fused_cls, units, features, **kwargs):
    """Keras' layer and the fused one, built, the fused one holding the plain one's weights."""
    plain, fused = plain_cls(units, **kwargs), fused_cls(units, **kwargs)
    plain.build((None, None, features))
    fused.build((None, None, features))
    fused.set_weights(plain.get_weights())
    return plain, fused


def _outputs_and_gradients(layer, x, mask, training=None):
    import tensorflow as tf

    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = layer(x, mask=None if mask is None else tf.constant(mask), training=training)
        loss = tf.reduce_sum(out * tf.cos(tf.range(tf.size(out), dtype=out.dtype)[: out.shape[-1]]))
    grads = tape.gradient(loss, [x, *layer.trainable_weights])
    return out.numpy(), [g.numpy() for g in grads]


@pytest.mark.parametrize("cell, turn", [("gru", 8), ("gru", 0), ("lstm", None)])  # GRU: compiled turns of 8; graph steps
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("options", [{}, {"go_backwards": True}, {"return_sequences": True, "go_backwards": True, "zero_output_for_mask": True}])
@pytest.mark.parametrize("training", [None, True])  # GRU turn 8: both through the XLA-compiled turns, 4 rows and 7 steps padded
def test_fused_layer_matches_keras_outputs_and_gradients(cell, turn, masked, options, training):
    import keras

    plain_cls, fused_cls = (keras.layers.GRU, partial(FusedGRU, turn=turn)) if cell == "gru" else (keras.layers.LSTM, FusedLSTM)
    plain, fused = _pair(plain_cls, fused_cls, 5, 3, **options)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 7, 3)).astype("float32")
    # Right padding of different lengths, and one row with no real step at all.
    mask = np.arange(7)[None, :] < np.array([[7], [4], [1], [0]]) if masked else None
    out_plain, grads_plain = _outputs_and_gradients(plain, x, mask, training)
    out_fused, grads_fused = _outputs_and_gradients(fused, x, mask, training)
    np.testing.assert_allclose(out_fused, out_plain, rtol=1e-5, atol=1e-6)
    for got, expected in zip(grads_fused, grads_plain):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cell, pooling, bidirectional", [("gru", "last", False), ("lstm", "mean", True), ("gru", "max", False)])
def test_fused_model_equals_keras_model_and_survives_a_keras_file(tmp_path, cell, pooling, bidirectional):
    import keras

    cfg = ModelConfig(cell=cell, units=6, embedding_dim=4, pooling=pooling, bidirectional=bidirectional, word_dropout=0.2)
    plain = build_model(cfg, num_tokens=30, max_len=None, n_classes=2, fused_input=False)
    fused = build_model(cfg, num_tokens=30, max_len=None, n_classes=2, fused_input=True)
    assert any(isinstance(layer, (FusedGRU, FusedLSTM)) for layer in fused._flatten_layers())
    fused.set_weights(plain.get_weights())
    # Right-padded rows (what encode and the buckets give), one all padding.
    x = np.random.default_rng(1).integers(1, 30, size=(5, 9)).astype("int32")
    x[1, 6:], x[2, 2:], x[4, :] = 0, 0, 0
    np.testing.assert_allclose(fused.predict(x, verbose=0), plain.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    fused.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", compile=False)
    assert [type(layer).__name__ for layer in loaded._flatten_layers()] == [type(layer).__name__ for layer in fused._flatten_layers()]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), fused.predict(x, verbose=0), rtol=1e-6)


def test_switch_off_and_other_cells_keep_keras_layers():
    import keras

    assert recurrent_layer("gru", True) is FusedGRU and recurrent_layer("lstm", True) is FusedLSTM
    assert recurrent_layer("gru", False) is keras.layers.GRU and recurrent_layer("lstm", False) is keras.layers.LSTM
    assert recurrent_layer("simple_rnn", True) is keras.layers.SimpleRNN


def test_a_fit_too_small_to_pay_a_compile_runs_graph_steps_and_its_file_keeps_them(tmp_path):
    import keras

    from tasks.fused_rnn import STEPS_PER_TURN, turn_for

    assert turn_for(20_000, 400) == STEPS_PER_TURN and turn_for(300, 40) == 0  # the default preset's fit; a test's
    cfg = ModelConfig(cell="gru", units=6, embedding_dim=4, bidirectional=True)
    model = build_model(cfg, num_tokens=30, max_len=None, n_classes=2, turn=0)
    x = np.random.default_rng(1).integers(1, 30, size=(3, 9)).astype("int32")
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", compile=False)
    grus = [layer for layer in loaded._flatten_layers() if isinstance(layer, FusedGRU)]
    assert len(grus) == 2 and all(layer.turn == 0 for layer in grus)  # Bidirectional's backward copy included
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


def test_training_steps_with_word_dropout_match_keras_layers():
    """The same seed, weights and batch: Adam steps on the fused model give Keras' losses and weights (dropout draws alike)."""
    import keras

    from tasks.train import compile_settings
    from tests.helpers import tiny_config

    cfg = tiny_config("model.cell=gru", "model.word_dropout=0.3", "model.bidirectional=false")
    x = np.random.default_rng(2).integers(1, 50, size=(8, 10)).astype("int32")
    x[3, 4:], x[5, 1:] = 0, 0
    y = (np.arange(8) % 2).astype("int32")
    from tasks.fused_rnn import STEPS_PER_TURN, _gru_steps

    _gru_steps.cache_clear()  # a fresh compiled turn: one another test traced at these shapes would not trace again
    compiled_back = _gru_steps(STEPS_PER_TURN, True)[1]
    traced = compiled_back.experimental_get_tracing_count()
    runs = []
    for fused in (False, True):
        keras.utils.set_random_seed(1)
        model = build_model(cfg.model, num_tokens=50, max_len=None, n_classes=2, fused_input=fused)
        model.compile(**compile_settings(cfg.model, cfg.train, 2))
        runs.append(([float(model.train_on_batch(x, y)[0]) for _ in range(5)], model.get_weights()))
    assert compiled_back.experimental_get_tracing_count() > traced, "training's loop back ran the XLA-compiled turn"
    np.testing.assert_allclose(runs[1][0], runs[0][0], rtol=1e-5)
    for got, expected in zip(runs[1][1], runs[0][1]):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
