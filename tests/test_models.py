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


# --------------------------------------------------------------------------- the bag of n-grams (model.ngrams)


def test_the_ngram_bag_counts_what_a_user_would_count_and_ignores_padding():
    from tasks.model_layers import NgramBag

    bag = NgramBag(2, 1024, 10, units=1, scale=1.0)
    bag(np.zeros((1, 3), "int32"))
    rows, counts = (np.asarray(t) for t in bag.ngram_rows(np.array([[3, 4, 5, 0, 0]])))
    # three words and two word pairs count; n-grams that touch padding do not
    assert counts.sum() == 5 and set(rows[0][counts[0] > 0][:3]) == {3, 4, 5} and (rows[0][counts[0] > 0][3:] >= 10).all()
    bag.table.assign(np.random.default_rng(0).random((10 + 1024, 1), "float32"))
    pre, post, bare = (np.asarray(bag(np.array(row))) for row in ([[0, 0, 3, 4, 5]], [[3, 4, 5, 0, 0]], [[3, 4, 5]]))
    np.testing.assert_allclose(pre, post, rtol=1e-6)
    np.testing.assert_allclose(pre, bare, rtol=1e-6)
    assert not np.allclose(np.asarray(bag(np.array([[5, 4, 3]]))), pre), "word order reaches the bag through its pairs"


@pytest.mark.parametrize("n_classes", [2, 4])
def test_a_model_with_a_bag_of_ngrams_adds_its_logits_and_survives_saving(tmp_path, n_classes):
    import keras

    cfg = ModelConfig(cell="gru", units=8, embedding_dim=8, bidirectional=False, ngrams=3, ngram_buckets=4096, num_words=50, window=6)
    model = build_model(cfg, num_tokens=200, max_len=None, n_classes=n_classes)
    assert model.get_layer("bag_of_1_to_3_grams").table.shape == (200 + 4096, 1 if n_classes == 2 else n_classes)
    ids = np.random.default_rng(1).integers(1, 200, (5, 12)).astype("int32")
    ids[:, 9:] = 0
    model.save(tmp_path / "model.keras")
    again = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(model.predict(ids, verbose=0), again.predict(ids, verbose=0), atol=1e-6)
    # the recurrent part alone when the bag's weights are zero: the same weights without the bag predict the same
    plain = build_model(cfg.model_copy(update={"ngrams": 0}), num_tokens=200, max_len=None, n_classes=n_classes)
    for layer in plain.layers:
        source = model.get_layer("recurrent_logits" if layer.name.startswith("probabilit") else layer.name)
        layer.set_weights(source.get_weights())
    np.testing.assert_allclose(model.predict(ids, verbose=0), plain.predict(ids, verbose=0), atol=1e-6)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_a_bag_started_from_naive_bayes_already_tells_the_classes_apart(n_classes):
    """model.ngram_start naive_bayes: before any fitting, words seen in one class's rows point the bag's logits to it."""
    from tasks.model_layers import NgramBag

    rng = np.random.default_rng(0)
    y = np.arange(300) % n_classes
    x = rng.integers(10, 40, (300, 12))  # shared words, and each class's own word somewhere in its rows
    x[np.arange(300), rng.integers(0, 12, 300)] = 3 + y  # in 100-150 rows each: above min_rows
    x[::7, 9:] = 0  # padding counts for no class
    bag = NgramBag(2, 1024, 40, units=1 if n_classes == 2 else n_classes, scale=10.0)
    bag(np.zeros((1, 3), "int32"))
    table = bag.naive_bayes_table(x, y, n_classes, spread=2.0)
    assert table.shape == (40 + 1024, 1 if n_classes == 2 else n_classes) and table.dtype == np.float32
    bag.table.assign(table)
    logits = np.asarray(bag(x.astype("int32")))
    predicted = (logits[:, 0] > np.median(logits[:, 0])).astype(int) if n_classes == 2 else logits.argmax(1)
    assert (predicted == y).mean() > 0.95
    assert np.std(logits) == pytest.approx(2.0, rel=1e-3)  # the spread asked for, the layer's scale multiplied back


def test_a_bag_left_out_of_training_rows_is_whole_in_inference_and_in_its_saved_file(tmp_path):
    """model.ngram_drop: while training, about that fraction of rows get none of the bag's logits, the rest all of them."""
    import keras

    from tasks.architectures import describe_model

    cfg = ModelConfig(cell="gru", units=4, embedding_dim=4, bidirectional=False, ngrams=2, ngram_buckets=1024, ngram_drop=0.5)
    model = build_model(cfg, num_tokens=40, max_len=None, n_classes=2)
    bag = model.get_layer("bag_of_1_to_2_grams")
    bag.table.assign(np.ones((40 + 1024, 1), "float32"))
    ids = np.random.default_rng(2).integers(1, 40, (2000, 8)).astype("int32")
    whole = np.asarray(bag(ids))
    trained = np.asarray(bag(ids, training=True))
    left_out = np.isclose(trained, 0).ravel()
    assert 0.45 < left_out.mean() < 0.55 and np.allclose(trained[~left_out], whole[~left_out])
    np.testing.assert_allclose(np.asarray(bag(ids, training=False)), whole)
    model.save(tmp_path / "model.keras")
    assert keras.models.load_model(tmp_path / "model.keras").get_layer("bag_of_1_to_2_grams").drop == 0.5
    assert describe_model(cfg.model_dump()).endswith("(left out of 50% of training rows)")


@pytest.mark.parametrize("n_classes", [2, 3])
def test_a_bag_started_from_a_logistic_regression_is_that_regression_on_its_own_ngrams(n_classes):
    """model.ngram_start logistic: the bag's logits are scikit-learn's NB-weighted logistic regression's, less its intercept."""
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression

    from tasks.model_layers import NgramBag

    rng = np.random.default_rng(0)
    y = np.arange(300) % n_classes
    x = rng.integers(10, 40, (300, 12))
    x[np.arange(300), rng.integers(0, 12, 300)] = 3 + y
    x[::7, 9:] = 0
    bag = NgramBag(2, 1024, 40, units=1 if n_classes == 2 else n_classes, scale=10.0)
    bag(np.zeros((1, 3), "int32"))
    table, record = bag.logistic_table(x[:240], y[:240], n_classes, [1.0, 0.001], x[240:], y[240:])
    assert record["start"] == "logistic" and record["c"] == 1.0 and set(record["val_accuracy"]) == {"1", "0.001"}
    assert record["val_accuracy"]["1"] > 0.95  # held-out rows: each class's own word tells it
    assert table.shape == (40 + 1024, 1 if n_classes == 2 else n_classes) and table.dtype == np.float32
    bag.table.assign(table)
    logits = np.asarray(bag(x.astype("int32")))
    matrix, ratios = bag.ngram_matrix(x[:240]), bag.naive_bayes_ratios(x[:240], y[:240], n_classes)
    assert matrix.shape == (240, 40 + 1024)
    for column in range(logits.shape[1]):  # each column: the regression fitted here by hand on the same features
        target = (y[:240] == (1 if n_classes == 2 else column)).astype(int)
        used = np.flatnonzero(ratios[:, column])
        weighed = matrix[:, used] @ sparse.diags(ratios[used, column])
        fitted = LogisticRegression(C=1.0, solver="liblinear").fit(weighed, target)
        np.testing.assert_allclose(logits[:240, column], weighed @ fitted.coef_.ravel(), rtol=1e-4, atol=1e-4)
    predicted = (logits[:, 0] > 0).astype(int) if n_classes == 2 else logits.argmax(1)
    assert (predicted == y).mean() > 0.95


@pytest.mark.parametrize("start", ["naive_bayes", "logistic", "zeros"])
def test_a_member_s_bag_starts_where_model_ngram_start_says(start):
    from tasks.member_fit import TrainingData, start_bags

    rng = np.random.default_rng(1)
    y = np.arange(200) % 2
    x = rng.integers(3, 30, (200, 10)).astype("int32")
    x[:, 0] = 30 + y  # one word for each class
    cfg = ModelConfig(cell="gru", units=4, embedding_dim=4, bidirectional=False, ngrams=2, ngram_buckets=1024, ngram_start=start)
    model = build_model(cfg, num_tokens=32, max_len=None, n_classes=2)
    record = start_bags(model, cfg, TrainingData(x, y, x[:20], y[:20], {"num_words": 32, "max_len": 10}, 2, streamed=False), 0)
    table = np.asarray(model.get_layer("bag_of_1_to_2_grams").table)
    assert record["start"] == start and (record.get("c") in cfg.ngram_c) == (start == "logistic")
    if start == "zeros":
        assert not table.any()
    else:
        assert table[31, 0] > 0 > table[30, 0]  # class 1's word points to class 1, class 0's away from it


def test_next_token_models_refuse_a_bag_of_ngrams():
    from tasks.config import RunConfig

    with pytest.raises(ValueError, match="leave model.ngrams at 0"):
        RunConfig(encode={"tokenizer": "char"}, model={"task": "next_token", "bidirectional": False, "ngrams": 2})


def test_a_trained_model_s_bag_starts_from_the_regression_its_val_rows_chose_and_train_json_says_which(tmp_path):
    """model.ngram_start logistic through train_model: each C is scored on val, the best kept, train.json's bag_starts tells."""
    from tasks.config import TrainConfig
    from tasks.store import read_json
    from tasks.train import train_model
    from tests.helpers import toy_encoding

    encoded = toy_encoding(tmp_path / "encode")
    out = tmp_path / "train"
    out.mkdir()
    cfg = ModelConfig(cell="gru", units=4, embedding_dim=4, bidirectional=False, ngrams=2, ngram_buckets=1024,
                      ngram_start="logistic", ngram_c=[0.001, 10.0])
    train_model(cfg, TrainConfig(epochs=1, batch_size=16), encoded, out)
    (start,) = read_json(out / "train.json")["bag_starts"]
    assert start["start"] == "logistic" and set(start["val_accuracy"]) == {"0.001", "10"}
    assert start["val_accuracy"][f"{start['c']:g}"] == max(start["val_accuracy"].values())


def test_train_refit_auto_refits_text_read_as_characters_and_nothing_a_refit_cannot_take():
    """train.refit auto (the default preset's): on where encode read characters, off for words and pieces, and off rather
    than refused for next_token models and streamed arrays; true there is refused with what to do."""
    from tasks.config import TrainConfig
    from tasks.member_fit import TrainingData
    from tasks.train import refit_chosen

    rows = np.zeros((4, 3), dtype=np.int32)

    def data(tokenizer, streamed=False):
        return TrainingData(rows, rows[:, 0], rows, rows[:, 0], {"tokenizer": tokenizer}, 2, streamed=streamed)

    auto, classify = TrainConfig(refit="auto"), ModelConfig()
    assert [refit_chosen(auto, classify, data(t)) for t in ("char", "word", "subword")] == [True, False, False]
    assert not refit_chosen(auto, classify, data("char", streamed=True))
    assert not refit_chosen(auto, ModelConfig(task="next_token"), data("char"))
    assert not refit_chosen(TrainConfig(), classify, data("char")) and refit_chosen(TrainConfig(refit=True), classify, data("word"))
    with pytest.raises(ValueError, match="leave it off for model.task next_token"):
        refit_chosen(TrainConfig(refit=True), classify, data("word", streamed=True))


def test_train_refit_saves_the_member_fitted_again_on_train_and_val_for_its_kept_epochs(tmp_path):
    """train.refit: the model saved is fitted again from its start on train and val together, for the epochs the first fit
    kept; train.json says so, and the saved weights are not the first fit's."""
    import keras

    from tasks.config import TrainConfig
    from tasks.store import read_json
    from tasks.train import train_model
    from tests.helpers import toy_encoding

    encoded = toy_encoding(tmp_path / "encode")
    cfg = ModelConfig(cell="gru", units=4, embedding_dim=4, bidirectional=False, ngrams=2, ngram_buckets=1024, ngram_start="logistic")
    saved = {}
    for refit in (False, True):
        out = tmp_path / f"train-{refit}"
        out.mkdir()
        train_model(cfg, TrainConfig(epochs=3, patience=3, batch_size=16, lr_drop=0.5, refit=refit), encoded, out)
        saved[refit] = keras.saving.load_model(out / "model.keras", compile=False)
        info = read_json(out / "train.json")
    assert info["refit"] == [{"rows": 256 + 64, "epochs": info["best_epoch"], "seconds": info["refit"][0]["seconds"]}]
    assert any(not np.array_equal(a, b) for a, b in zip(saved[False].get_weights(), saved[True].get_weights()))
    x_val, y_val = np.load(encoded / "X_val.npy"), np.load(encoded / "y_val.npy")
    assert ((saved[True].predict(x_val, verbose=0)[:, 0] > 0.5) == y_val).mean() >= 0.9
