from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.config import DataConfig, EncodeConfig
from tasks.encode import OOV, PAD, START, Vocabulary, encode_reviews, load_arrays
from tasks.ingest import ingest_reviews, locate_source


@pytest.fixture
def ingested(tmp_path: Path) -> Path:
    cfg = DataConfig(source="synthetic", synthetic_reviews=120)
    out = tmp_path / "ingest"
    out.mkdir()
    ingest_reviews(cfg, locate_source(cfg), out)
    return out


def test_encode_writes_memory_mappable_int32_arrays(tmp_path: Path, ingested: Path):
    out = tmp_path / "encode"
    out.mkdir()
    summary = encode_reviews(EncodeConfig(num_words=50, max_len=40), ingested, out)
    assert summary["max_len"] == 40
    x, y = load_arrays(out, "train")
    assert isinstance(x, np.memmap) and x.dtype == np.int32 and x.shape == (96, 40)
    assert set(np.unique(y)) == {0, 1}
    assert x.max() < 50, "ids stay below num_words"
    tokens = pd.read_parquet(out / "tokens_test.parquet")
    assert list(tokens.columns) == ["id", "label", "length", "token_ids"]
    assert all(ids[0] == START for ids in tokens["token_ids"])
    for name in ("vocab.json", "labels.json", "encode.json", "X_val.npy", "y_test.npy"):
        assert (out / name).exists()


def test_vocabulary_comes_from_train_only_with_keras_reserved_ids():
    vocab = Vocabulary.build(["good good film", "bad film"], EncodeConfig(num_words=5), max_len=6)
    assert vocab.tokens == ["film", "good"], "most frequent first, ties alphabetical, num_words counts reserved ids"
    assert vocab.to_ids("Good unknown film") == [START, 4, OOV, 3]


def test_padding_and_truncating_sides_follow_the_configuration():
    pre = Vocabulary(["a", "b", "c"], max_len=3, padding="pre", truncating="pre")
    post = Vocabulary(["a", "b", "c"], max_len=3, padding="post", truncating="post")
    assert pre.encode(["a"])[0].tolist() == [[PAD, START, 3]]
    assert post.encode(["a"])[0].tolist() == [[START, 3, PAD]]
    assert pre.encode(["a b c"])[0].tolist() == [[3, 4, 5]], "pre-truncation keeps the end of the review"
    assert post.encode(["a b c"])[0].tolist() == [[START, 3, 4]]


def test_auto_max_len_is_the_chosen_percentile_of_train_lengths(tmp_path: Path, ingested: Path):
    out = tmp_path / "encode"
    out.mkdir()
    summary = encode_reviews(EncodeConfig(max_len="auto", max_len_percentile=50), ingested, out)
    lengths = pd.read_parquet(out / "tokens_train.parquet")["length"]
    assert summary["max_len"] == int(np.ceil(np.percentile(lengths, 50)))
