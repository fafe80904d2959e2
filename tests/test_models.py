import numpy as np
import pytest

from tasks.config import ModelConfig
from tasks.models import build_model, cudnn_eligible


@pytest.mark.parametrize(
    "config, num_tokens, params",
    [
        # The seeds' own figures: Embedding(500, 16) + SimpleRNN(8) + Dense(1) = 8,209.
        (ModelConfig(cell="simple_rnn", units=8, bidirectional=False, embedding_dim=16), 500, 8209),
        # One-hot of 500 words + SimpleRNN(8) + Dense(1) = 4,081.
        (ModelConfig(cell="simple_rnn", units=8, bidirectional=False, input="onehot"), 500, 4081),
    ],
)
def test_seed_parameter_counts(config, num_tokens, params):
    assert build_model(config, num_tokens=num_tokens, max_len=100, n_classes=2).count_params() == params


def test_one_hot_is_made_inside_the_model_and_survives_saving(tmp_path):
    import keras

    model = build_model(ModelConfig(cell="gru", units=4, bidirectional=False, input="onehot"), num_tokens=30, max_len=12, n_classes=3)
    model.compile("adam", "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).integers(0, 30, size=(8, 12)).astype("int32")
    before = model.predict(x, verbose=0)
    assert before.shape == (8, 3)
    model.save(tmp_path / "m.keras")
    after = keras.models.load_model(tmp_path / "m.keras").predict(x, verbose=0)
    np.testing.assert_allclose(before, after, rtol=1e-5)


def test_cudnn_path_needs_gated_cells_and_right_padding():
    assert cudnn_eligible(ModelConfig(cell="lstm"), "post")
    assert not cudnn_eligible(ModelConfig(cell="lstm"), "pre"), "masks on pre-padded input leave the cuDNN path"
    assert not cudnn_eligible(ModelConfig(cell="simple_rnn"), "post")
    assert cudnn_eligible(ModelConfig(cell="gru", mask_padding=False), "pre")


def test_stacked_layers_follow_the_stack_lists():
    model = build_model(
        ModelConfig(stack_cells=["gru", "simple_rnn"], stack_units=[256, 128], bidirectional=False, embedding_dim=64),
        num_tokens=1000, max_len=20, n_classes=10,
    )
    names = [layer.name for layer in model.layers]
    assert names[2:4] == ["gru_1", "simple_rnn_2"]


def test_max_pooling_leaves_padded_steps_out(tmp_path):
    import keras

    from tasks.models import MaxOverSteps

    steps = np.array([[[-0.5, 0.2], [-0.3, 0.1], [0.0, 0.0]]], dtype="float32")  # the last step is padding
    mask = np.array([[True, True, False]])
    np.testing.assert_allclose(np.asarray(MaxOverSteps()(steps, mask=mask)), [[-0.3, 0.2]])
    np.testing.assert_allclose(np.asarray(MaxOverSteps()(steps, mask=np.zeros((1, 3), bool))), [[0.0, 0.0]])
    model = build_model(ModelConfig(cell="gru", units=4, bidirectional=False, pooling="max"), num_tokens=30, max_len=12, n_classes=2)
    x = np.array([[5, 6, 7] + [0] * 9, [5, 6, 7, 8, 9, 10] + [0] * 6], dtype="int32")
    model.save(tmp_path / "m.keras")
    np.testing.assert_allclose(keras.models.load_model(tmp_path / "m.keras").predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5)
