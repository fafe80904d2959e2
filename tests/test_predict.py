"""Predictions: no skew between training and serving, the exported string model, and `rnnflow predict`."""

from __future__ import annotations

import random
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from flows.cli import main
from tasks.config import DataConfig, EncodeConfig
from tasks.encode import PAD, Vocabulary
from tasks.export import build_text_encoder
from tasks.predict import encode_texts, load_predictor, predict_texts
from tasks.synthetic import synthetic_reviews
from tasks.text import clean_text
from tests.helpers import TINY_RUN_ID as RUN_ID
from tests.helpers import manifest

# Every ASCII character, weighted towards the ones the rules treat specially: tags, breaks, apostrophes, case, NUL.
_ASCII = "".join(chr(c) for c in range(128))
_TRICKY = "aAbBrR019 ''<<>>//\n\t\x0b\x00.-"
HAND_PICKED = [
    "",
    "Don't <b>STOP</b> the film",
    "'tis rock''n'roll, isn't it'",
    "<BR  />one<br/>two<br>three<Br\t/>four",
    "<a<br>>z and <p\nclass=x>q",
    "<" + "x" * 250 + "> a tag too long to be a tag",
    "it's 10/10!! A+++ film, 2nd time",
    "  spaces\t\tand\nnew\x0blines  ",
    "nul\x00separated\x00WORDS",
]


def ascii_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        "".join(rng.choice(_TRICKY if rng.random() < 0.6 else _ASCII) for _ in range(rng.randint(0, 80)))
        for _ in range(n)
    ]


@pytest.fixture
def root(tiny_run) -> Path:
    """The session's finished tiny run (tests/conftest.py): the whole flow on the synthetic corpus, its max_len of
    40 shorter than many reviews and longer than some, so both truncation and padding happen."""
    return tiny_run.root


@pytest.fixture
def run(tiny_run) -> Path:
    return tiny_run.folder


@pytest.fixture
def raw_test_texts(run: Path) -> list[str]:
    """The test split's texts as the source made them, before ingest cleaned them, in the order of X_test."""
    data = DataConfig(**manifest(run)["config"]["data"])
    # ingest draws the synthetic test split with seed + 1, then shuffles it; ids tie the two together.
    raw = synthetic_reviews(data.synthetic_reviews, data.synthetic_positive_fraction, seed=data.seed + 1).set_index("id")["text"]
    ingested = pd.read_parquet(run / "ingest" / "test.parquet")
    texts = raw.loc[ingested["id"]].tolist()
    assert [clean_text(t) for t in texts] == ingested["text"].tolist(), "raw and ingested test texts line up"
    return texts


# --------------------------------------------------------------------------- no training/serving skew


@pytest.mark.slow
def test_predictor_encodes_raw_test_texts_exactly_as_training_did(run: Path, raw_test_texts: list[str]):
    x_test = np.load(run / "encode" / "X_test.npy")
    predictor = load_predictor(run)
    padded, _ = encode_texts(predictor, raw_test_texts)
    assert padded.dtype == x_test.dtype == np.int32
    np.testing.assert_array_equal(padded, x_test)

    # The comparison has teeth: it covers cleaning, padding and truncation.
    assert any("<br" in t for t in raw_test_texts), "some raw texts carry HTML breaks"
    assert not np.array_equal(predictor.vocabulary.encode(raw_test_texts)[0], x_test), "skipping ingest's cleaning would show"
    assert (x_test[:, -1] == PAD).any() and (x_test[:, -1] != PAD).any()


@pytest.mark.slow
def test_predict_texts_gives_a_label_and_probability_per_text_in_order(run: Path):
    predictor = load_predictor(run)
    texts = ["a wonderful moving film", "dull and boring", "", "wonderful " * 40]
    frame = predict_texts(predictor, texts)
    assert list(frame.columns) == [
        "row", "text", "label", "probability", "probability_neg", "probability_pos", "tokens", "unknown_tokens", "truncated", "empty",
    ]
    assert frame["row"].tolist() == [1, 2, 3, 4] and frame["empty"].tolist() == [False, False, True, False]
    assert frame["text"].tolist() == texts
    assert set(frame["label"]) <= {"neg", "pos"}
    np.testing.assert_allclose(frame[["probability_neg", "probability_pos"]].sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(frame["probability"], frame[["probability_neg", "probability_pos"]].max(axis=1))
    assert frame["tokens"].tolist() == [4, 3, 0, 40]
    assert frame["truncated"].tolist() == [False, False, False, True]
    assert frame["unknown_tokens"].between(0, frame["tokens"]).all()

    empty = predict_texts(predictor, [])
    assert list(empty.columns) == list(frame.columns) and len(empty) == 0


# --------------------------------------------------------------------------- the exported string model


@pytest.mark.slow
def test_string_model_loads_and_matches_the_integer_model(run: Path, raw_test_texts: list[str]):
    path = run / "train" / "model_text.keras"
    assert path.is_file() and (run / "train" / "model.keras").is_file()
    text_model = keras.models.load_model(path)  # tasks.export, imported above, registers its objects
    texts = raw_test_texts + HAND_PICKED + ascii_texts(50)
    from_strings = np.asarray(text_model.predict(tf.constant(texts), verbose=0)).reshape(-1)
    predictor = load_predictor(run)
    from_ids = predict_texts(predictor, texts)["probability_pos"].to_numpy()
    np.testing.assert_allclose(from_strings, from_ids, atol=1e-5)
    single = text_model(tf.constant(["a wonderful moving film"]))
    assert tuple(single.shape) == (1, 1)


ENCODINGS = [
    # tokenizer, lowercase, strip_html, padding, truncating
    ("word", True, True, "post", "pre"),
    ("word", True, True, "pre", "post"),
    ("word", True, True, "pre", "pre"),
    ("word", True, True, "post", "post"),
    ("word", False, True, "post", "pre"),
    ("word", True, False, "post", "pre"),
    ("char", True, True, "post", "pre"),
    ("char", False, False, "pre", "post"),
]


@pytest.mark.parametrize(("tokenizer", "lowercase", "strip_html", "padding", "truncating"), ENCODINGS)
def test_string_encoder_gives_the_training_ids_for_ascii_text(tokenizer, lowercase, strip_html, padding, truncating):
    texts = HAND_PICKED + ascii_texts(300, seed=1)
    cfg = EncodeConfig(tokenizer=tokenizer, lowercase=lowercase, num_words=40, padding=padding, truncating=truncating)
    # A vocabulary too small for the corpus, so out-of-vocabulary ids show up too.
    vocab = Vocabulary.build([clean_text(t, strip_html) for t in texts], cfg, max_len=12)
    vocab.strip_html = strip_html
    expected, _ = vocab.encode_raw(texts)
    encoder = build_text_encoder(vocab)
    got = np.asarray(encoder.predict(tf.constant(texts), verbose=0))
    np.testing.assert_array_equal(got, expected)


def test_string_encoder_agrees_on_some_unicode_words():
    """Beyond ASCII there is no proof, but the word rules agree on these, case folding traps included."""
    texts = ["Café crème, naïve", "İstanbul ıi ſtop \u212aelvin", "ΟΔΥΣΣΕΥΣ straße", "ｆｕｌｌ width ١٢٣ 123", "x\u00a0y<br\u2003/>z"]
    vocab = Vocabulary.build(texts, EncodeConfig(num_words=30), max_len=10)
    expected, _ = vocab.encode([clean_text(t) for t in texts])
    got = np.asarray(build_text_encoder(vocab).predict(tf.constant(texts), verbose=0))
    np.testing.assert_array_equal(got, expected)


# --------------------------------------------------------------------------- rnnflow predict


@pytest.mark.slow
def test_cli_prints_a_table_for_texts(root: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["predict", "--artifacts", str(root), "--run", "latest", "a wonderful moving film", "dull and boring"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"run {RUN_ID}"
    assert lines[1].split() == ["row", "label", "probability", "text"]
    assert lines[2].endswith("a wonderful moving film") and lines[3].endswith("dull and boring")
    assert lines[2].split()[:2] in (["1", "neg"], ["1", "pos"])


@pytest.mark.slow
def test_cli_writes_csv_input_to_parquet_output(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    source = tmp_path / "reviews.csv"
    pd.DataFrame({"id": [1, 2, 3], "review": ["a wonderful film", "dull, boring<br />script", "NA"]}).to_csv(source, index=False)
    target = tmp_path / "out" / "predictions.parquet"
    code = main(["predict", "--artifacts", str(root), "--run", RUN_ID, "--input", str(source), "--text-column", "review", "--output", str(target)])
    assert code == 0
    assert capsys.readouterr().out.splitlines()[-1] == str(target)
    written = pd.read_parquet(target)
    assert written["text"].tolist() == ["a wonderful film", "dull, boring<br />script", "NA"]
    assert written["probability"].between(0.5, 1.0).all()
    assert not list(target.parent.glob(".*.tmp")), "no temporary file is left behind"


@pytest.mark.slow
def test_cli_reads_txt_one_text_per_line_and_writes_csv(root: Path, tmp_path: Path):
    source = tmp_path / "reviews.txt"
    source.write_text("a wonderful film\n\ndull and boring\n", encoding="utf-8")
    target = tmp_path / "predictions.csv"
    assert main(["predict", "--artifacts", str(root), "--input", str(source), "--output", str(target)]) == 0
    assert pd.read_csv(target)["text"].tolist() == ["a wonderful film", "dull and boring"]


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.slow
def test_cli_names_the_missing_text_column_and_lists_the_columns(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    source = tmp_path / "reviews.csv"
    pd.DataFrame({"id": [1], "review": ["fine"]}).to_csv(source, index=False)
    assert main(["predict", "--artifacts", str(root), "--input", str(source)]) == 2
    message = _error(capsys)
    assert "no column 'text'" in message and "'id', 'review'" in message and "--text-column" in message


@pytest.mark.slow
def test_cli_parquet_with_empty_texts_names_the_row(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    source = tmp_path / "reviews.parquet"
    pd.DataFrame({"text": ["fine", None, "good"]}).to_parquet(source)
    assert main(["predict", "--artifacts", str(root), "--input", str(source)]) == 2
    assert "first row 2" in _error(capsys)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--input", "no/such/file.csv"], "does not exist"),
        (["--input", "reviews.xlsx"], "not a .txt, .csv or .parquet"),
        (["--run", "20990101T000000000Z-none", "fine"], "No run '20990101T000000000Z-none'"),
        (["--output", "predictions.json", "fine"], "must end in .parquet or .csv"),
        ([], "Give the texts to label or --input FILE"),
    ],
)
def test_cli_usage_errors_exit_2_with_one_sentence(root: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: str):
    assert main(["predict", "--artifacts", str(root), *args]) == 2
    assert expected in _error(capsys)


@pytest.mark.slow
def test_a_run_with_a_bag_of_ngrams_names_it_and_its_string_model_agrees(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """model.ngrams end to end: the whole flow trains the channel, the report names it, and the string-in model
    (which reads the bag from the same ids inside the graph) gives rnnflow predict's probabilities."""
    from tests.helpers import tiny_cli_args

    root = tmp_path / "artifacts"
    assert main(["run", *tiny_cli_args("model.ngrams=2", "model.ngram_buckets=4096"), "--artifacts", str(root)]) == 0
    capsys.readouterr()
    run = next((root / "runs").iterdir())
    assert "beside a bag of token 1-2-grams started from Naive Bayes" in (run / "report" / "report.md").read_text()
    text_model = keras.models.load_model(run / "train" / "model_text.keras")
    texts = HAND_PICKED + ascii_texts(20) + ["a wonderful moving film", "a dull film, a dull dull plot"]
    from_strings = np.asarray(text_model.predict(tf.constant(texts), verbose=0)).reshape(-1)
    from_ids = predict_texts(load_predictor(run), texts)["probability_pos"].to_numpy()
    np.testing.assert_allclose(from_strings, from_ids, atol=1e-5)
