import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tasks.config import EncodeConfig
from tasks.encode import OOV, PAD, START, Vocabulary, encode_batch, encode_reviews, load_arrays
from tasks.store import read_json
from tasks.text import tokenize, tokenize_many



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


def test_char_vocabulary_keeps_the_most_frequent_characters_with_the_same_reserved_ids():
    vocab = Vocabulary.build(["aab", "Ab!"], EncodeConfig(tokenizer="char", num_words=5), max_len=10)
    assert vocab.tokens == ["a", "b"], "3 a's, 2 b's; '!' does not fit in num_words=5 with ids 0-2 reserved"
    assert vocab.to_ids("ba!") == [START, 4, 3, OOV]
    assert vocab.tokenizer == "char"


def test_char_encoding_records_its_tokenizer_and_prediction_reuses_it(tmp_path: Path, ingested: Path):
    out = tmp_path / "encode"
    out.mkdir()
    summary = encode_reviews(EncodeConfig(tokenizer="char", num_words=30, max_len="auto", max_len_percentile=50), ingested, out)
    info = read_json(out / "encode.json")
    assert info["tokenizer"] == "char"
    assert read_json(out / "vocab.json")["tokenizer"] == "char"
    tokens = pd.read_parquet(out / "tokens_train.parquet")
    train = pd.read_parquet(ingested / "train.parquet")
    assert tokens["length"].tolist() == [len(text) + 1 for text in train["text"]], "one id per character, plus the start id"
    assert summary["vocab_size"] <= 30
    x, _ = load_arrays(out, "test")
    assert x.max() < 30
    reloaded = Vocabulary.load(out / "vocab.json")
    assert reloaded.tokenizer == "char"
    assert reloaded.encode(train["text"].head(3).tolist())[0].tolist() == np.load(out / "X_train.npy")[:3].tolist()


def test_vocab_files_without_a_tokenizer_load_as_word_level(tmp_path: Path):
    path = tmp_path / "vocab.json"
    Vocabulary(["good"], max_len=4, padding="post", truncating="pre").save(path)
    data = read_json(path)
    del data["tokenizer"]
    path.write_text(json.dumps(data))
    assert Vocabulary.load(path).to_ids("good film") == [START, 3, OOV]


def test_one_tokenize_entry_point_for_both_tokenizers():
    assert tokenize("Don't stop!", tokenizer="word") == ["don't", "stop"]
    assert tokenize("Hi, x", tokenizer="char") == ["h", "i", ",", " ", "x"]
    assert tokenize("Hi", lowercase=False, tokenizer="char") == ["H", "i"]
    with pytest.raises(ValueError, match="Unknown tokenizer 'bpe'"):
        tokenize("hi", tokenizer="bpe")


@pytest.mark.parametrize("padding,truncating", [("pre", "pre"), ("pre", "post"), ("post", "pre"), ("post", "post")])
def test_streaming_in_small_batches_gives_the_same_files_as_one_batch(tmp_path: Path, ingested: Path, padding: str, truncating: str):
    cfg = EncodeConfig(num_words=40, max_len="auto", max_len_percentile=50, padding=padding, truncating=truncating)
    outputs = {}
    for batch_rows in (7, 10_000):  # 96 train rows: 14 batches, or all in one
        out = tmp_path / f"rows{batch_rows}"
        out.mkdir()
        outputs[batch_rows] = (out, encode_reviews(cfg, ingested, out, batch_rows=batch_rows))
    (small, small_summary), (whole, whole_summary) = outputs[7], outputs[10_000]
    assert small_summary == whole_summary
    for name in ("vocab.json", "encode.json", "labels.json", *(f"{a}_{s}.npy" for a in "Xy" for s in ("train", "val", "test"))):
        assert (small / name).read_bytes() == (whole / name).read_bytes(), name
    for split in ("train", "val", "test"):
        assert pq.read_table(small / f"tokens_{split}.parquet").equals(pq.read_table(whole / f"tokens_{split}.parquet"))
        assert pq.ParquetFile(small / f"tokens_{split}.parquet").metadata.num_row_groups > 1, "written one batch at a time"
    # Rows as keras.utils.pad_sequences lays them out (Vocabulary.encode), which encode used to call on a whole split.
    texts = pd.read_parquet(ingested / "val.parquet")["text"].tolist()
    padded, sequences = Vocabulary.load(small / "vocab.json").encode(texts)
    assert np.array_equal(np.load(small / "X_val.npy"), padded)
    assert pq.read_table(small / "tokens_val.parquet")["token_ids"].to_pylist() == sequences
    assert not list(small.glob(".*.tmp")), "no temporary files left behind"


def test_the_default_batch_size_is_read_when_encode_runs(tmp_path: Path, ingested: Path, monkeypatch: pytest.MonkeyPatch):
    import tasks.store

    monkeypatch.setattr(tasks.store, "STREAM_ROWS", 10)
    out = tmp_path / "encode"
    out.mkdir()
    encode_reviews(EncodeConfig(num_words=50, max_len=20), ingested, out)
    assert pq.ParquetFile(out / "tokens_train.parquet").metadata.num_row_groups == 10, "96 rows in batches of 10"


def test_vocabulary_from_counts_matches_building_from_texts():
    texts = ["b a c", "a b", "c c d", "e"]
    cfg = EncodeConfig(num_words=6)
    counts = Counter(token for text in texts for token in tokenize(text))
    assert Vocabulary.from_counts(counts, cfg, max_len=4).tokens == Vocabulary.build(texts, cfg, max_len=4).tokens == ["c", "a", "b"]


# --------------------------------------------------------------------------- tokenising a batch at once

AWKWARD_TEXTS = [
    "", "   ", "Don't stop", "it's 'quoted' text", "a''b", "''", "'a'", "rock'n'roll", "a'b'c'", "123 4'5 '6",
    "İstanbul ıs ſo K", "İİ i̇", "Ünïcode café naïve", "x\x00y", "tab\tnew\nline\x0bvt", "UPPER lower MiXeD",
    "ＦＵＬＬ width", "ß ẞ straße", "emoji 😀ok", "ǅungla ǈj", "ΣΊΣΥΦΟΣ", "Ⅻ ⓐ", "don’t curly", "_under_score_",
]


def _random_texts(n: int, seed: int = 7) -> list[str]:
    alphabet = list("abcXYZ019' \t\n.,-_") + ["İ", "ı", "ſ", "K", "é", "\x00", "’", "ǅ", "😀"]
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(alphabet, size=int(rng.integers(0, 30)))) for _ in range(n)]


@pytest.mark.parametrize("lowercase", [True, False])
def test_tokenize_many_gives_the_tokens_tokenize_gives(lowercase: bool):
    texts = AWKWARD_TEXTS + _random_texts(400)  # tokenize is tokenize_many on one text: a few hundred show the slicing
    tokens, offsets = tokenize_many(texts, lowercase)
    found = tokens.to_pylist()
    for i, text in enumerate(texts):
        assert found[offsets[i] : offsets[i + 1]] == tokenize(text, lowercase), repr(text)


def test_encode_batch_gives_the_ids_to_ids_gives():
    texts = AWKWARD_TEXTS + _random_texts(500, seed=3)
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(tokenize(text))
    for padding, truncating in [("post", "pre"), ("pre", "post")]:
        cfg = EncodeConfig(num_words=12, padding=padding, truncating=truncating)
        vocab = Vocabulary.from_counts(counts, cfg, max_len=6)
        padded = np.zeros((len(texts), 6), dtype=np.int32)
        values, lengths = encode_batch(vocab, texts, padded)
        expected_padded, expected = vocab.encode(texts)
        assert lengths.tolist() == [len(ids) for ids in expected]
        assert values.tolist() == [i for ids in expected for i in ids]
        np.testing.assert_array_equal(padded, expected_padded)


# --------------------------------------------------------------------------- subword pieces and tokenizer auto

KOREAN_STEMS = ["영화", "배우", "연기", "스토리", "감독", "음악", "장면", "결말", "시간", "감동", "최고", "최악", "재미", "눈물", "웃음"]
PARTICLES = ["가", "는", "를", "도", "에서", "의", "만", "이", "은", "으로"]


def _table_ingest(folder: Path, texts_for: dict[str, list[str]]) -> Path:
    """An ingest folder as the ingest step leaves one, from texts per split (labels alternate)."""
    from tasks.store import write_json

    folder.mkdir(parents=True, exist_ok=True)
    for split, texts in texts_for.items():
        pd.DataFrame(
            {"text": texts, "label": [i % 2 for i in range(len(texts))], "rating": pd.array([None] * len(texts), dtype="Int64"), "id": range(len(texts))}
        ).to_parquet(folder / f"{split}.parquet", index=False)
    write_json(folder / "ingest.json", {"labels": ["0", "1"], "strip_html": True})
    return folder


def korean_texts(n: int, seed: int) -> list[str]:
    """Review-like Korean: stems with particles, so whitespace words rarely repeat whole."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(KOREAN_STEMS) + rng.choice(PARTICLES) + "다" * int(rng.integers(0, 3)) for _ in range(int(rng.integers(3, 12))))
            for _ in range(n)]


@pytest.fixture
def korean_ingest(tmp_path: Path) -> Path:
    return _table_ingest(tmp_path / "ingest", {"train": korean_texts(300, 1), "val": korean_texts(60, 2), "test": korean_texts(60, 3)})


def test_subword_encode_saves_its_model_and_prediction_reuses_it(tmp_path: Path, korean_ingest: Path):
    out = tmp_path / "encode"
    out.mkdir()
    encode_reviews(EncodeConfig(tokenizer="subword", num_words=120, max_len=24), korean_ingest, out)
    info, vocab_file = read_json(out / "encode.json"), read_json(out / "vocab.json")
    assert info["tokenizer"] == vocab_file["tokenizer"] == "subword"
    assert (out / "subword.model").stat().st_size > 0
    assert info["vocab_size"] <= 120 and len(vocab_file["tokens"]) == info["vocab_size"] - 3
    assert set(info["oov_share"]) == {"train", "val", "test"} and all(0 <= v < 0.05 for v in info["oov_share"].values())
    x, _ = load_arrays(out, "test")
    assert x.max() < info["vocab_size"] and (x[:, 0] == START).all()
    # predict's encoder, loaded from the folder, gives the rows training wrote
    test_texts = pq.read_table(korean_ingest / "test.parquet").column("text").to_pylist()
    reloaded = Vocabulary.load(out / "vocab.json")
    np.testing.assert_array_equal(reloaded.encode(test_texts)[0], x)
    # pieces are shared across particles: far fewer ids than distinct whitespace words
    assert len({w for t in test_texts for w in t.split()}) > info["vocab_size"]


def test_the_subword_model_is_learnt_from_train_only(tmp_path: Path):
    train, other = korean_texts(200, 1), ["ᄀᄂᄃ 𝄞𝄞 ΩΨΦ"] * 40
    ingest = _table_ingest(tmp_path / "ingest", {"train": train, "val": other, "test": other})
    out = tmp_path / "encode"
    out.mkdir()
    encode_reviews(EncodeConfig(tokenizer="subword", num_words=100, max_len=8), ingest, out)
    pieces = "".join(read_json(out / "vocab.json")["tokens"])
    assert not set("ΩΨΦ𝄞") & set(pieces)
    assert read_json(out / "encode.json")["oov_share"]["test"] > 0.3


def test_a_subword_vocabulary_smaller_than_the_alphabet_says_how_to_fix_it(tmp_path: Path, korean_ingest: Path):
    with pytest.raises(ValueError, match=r"encode.num_words 20 is too small for a subword model .*: raise encode.num_words above \d+\."):
        encode_reviews(EncodeConfig(tokenizer="subword", num_words=20, max_len=8), korean_ingest, tmp_path / "encode")


TURKISH_STEMS = ["film", "oyuncu", "hikaye", "yönetmen", "müzik", "sahne", "son", "zaman", "duygu", "kötü", "güzel", "gözyaşı"]
SUFFIXES = ["ler", "de", "den", "in", "imiz", "ini", "lerden", "siz", "likte", "ydi"]


def test_tokenizer_auto_takes_words_for_english_characters_for_korean_and_subwords_for_an_alphabet(
    tmp_path: Path, ingested: Path, korean_ingest: Path
):
    rng = np.random.default_rng(4)
    turkish_texts = [" ".join(rng.choice(TURKISH_STEMS) + rng.choice(SUFFIXES) for _ in range(int(rng.integers(3, 12)))) for _ in range(300)]
    turkish_ingest = _table_ingest(tmp_path / "turkish_ingest", {"train": turkish_texts, "val": turkish_texts[:60], "test": turkish_texts[:60]})
    infos = {}
    for name, ingest, num_words in [("english", ingested, 600), ("korean", korean_ingest, 200), ("turkish", turkish_ingest, 60)]:
        (tmp_path / name).mkdir()
        encode_reviews(EncodeConfig(tokenizer="auto", num_words=num_words, max_len=20), ingest, tmp_path / name)
        infos[name] = read_json(tmp_path / name / "encode.json")
    assert infos["english"]["tokenizer"] == "word" and infos["english"]["tokenizer_auto"]["coverage"] >= 0.75
    korean = infos["korean"]["tokenizer_auto"]
    assert infos["korean"]["tokenizer"] == "char" and korean["coverage"] < 0.75 and korean["syllabic_share"] == 1.0
    assert "(under encode.auto_min_coverage 75%) and 100.0% of their letters are Hangul, kana or CJK characters (at least 50%): char tokens" in korean["why"]
    assert read_json(tmp_path / "korean" / "vocab.json")["tokenizer"] == "char"
    assert infos["korean"]["vocab_size"] < 60, "a few dozen syllables, not the fixture's hundreds of whitespace words"
    turkish = infos["turkish"]["tokenizer_auto"]
    assert infos["turkish"]["tokenizer"] == "subword" and turkish["syllabic_share"] == 0.0 and turkish["why"].endswith("(under 50%): subword tokens")
    assert (tmp_path / "turkish" / "subword.model").is_file() and not (tmp_path / "english" / "subword.model").exists()


def test_choose_tokenizer_counts_the_words_a_vocabulary_of_num_words_keeps():
    from tasks.vocabulary_rule import choose_tokenizer

    counts = Counter({"film": 5, "good": 3, "bad": 2})
    # num_words 5 keeps 2 words beside the 3 reserved ids: 8 of 10 word tokens.
    assert choose_tokenizer(counts, num_words=5, min_coverage=0.75).record() == {
        "coverage": 0.8, "min_coverage": 0.75, "chosen": "word",
        "why": "the 2 most frequent words cover 80.0% of train's words (at least encode.auto_min_coverage 75%): word tokens",
    }
    assert choose_tokenizer(counts, num_words=5, min_coverage=0.9).chosen == "subword"
    assert choose_tokenizer(counts, num_words=100, min_coverage=1.0).kept_words == 3, "no more words than there are"
    assert choose_tokenizer(Counter({"a": 2, "b": 2, "c": 1}), num_words=4, min_coverage=0.75).coverage == 0.4, "ties: one of them"
    assert choose_tokenizer(Counter(), num_words=100, min_coverage=0.5).chosen == "subword", "no words at all: pieces"
    assert choose_tokenizer(Counter({"영화가": 3, "good": 1}), num_words=4, min_coverage=0.9).syllabic == 9 / 13, "letters weighed by count"
    assert choose_tokenizer(Counter({"日本語の": 1, "映画": 1}), num_words=4, min_coverage=0.9).chosen == "char"


def test_encode_records_the_shared_choice_of_its_train_words(tmp_path: Path, korean_ingest: Path):
    from tasks.vocabulary_rule import choose_tokenizer

    out = tmp_path / "encode"
    out.mkdir()
    encode_reviews(EncodeConfig(tokenizer="auto", num_words=200, max_len=20), korean_ingest, out)
    train = pd.read_parquet(korean_ingest / "train.parquet")["text"].tolist()
    words = Counter(tokenize_many(train)[0].to_pylist())
    assert read_json(out / "encode.json")["tokenizer_auto"] == choose_tokenizer(words, 200, 0.75).record()


@pytest.mark.parametrize("tokenizer", ["word", "subword"])
def test_an_analyser_splits_train_into_morphemes_and_prediction_repeats_it(tmp_path: Path, korean_ingest: Path, tokenizer: str):
    """encode.analyzer kiwi: vocabulary and lengths in morphemes (particles are tokens of their own), and the
    reloaded vocabulary (predict, score, serve) analyses raw text into the very rows encode wrote."""
    pytest.importorskip("kiwipiepy")
    out = tmp_path / "encode"
    out.mkdir()
    encode_reviews(EncodeConfig(tokenizer=tokenizer, analyzer="kiwi", num_words=120, max_len=40), korean_ingest, out)
    info, vocab_file = read_json(out / "encode.json"), read_json(out / "vocab.json")
    assert info["analyzer"] == vocab_file["analyzer"] == "kiwi" and vocab_file["analyzer_version"]
    if tokenizer == "word":  # stems and particles apart: 영화 and 가, not 영화가
        assert {"영화", "배우", "는", "를"} <= set(vocab_file["tokens"]) and "영화가" not in vocab_file["tokens"]
    x, _ = load_arrays(out, "test")
    test_texts = pq.read_table(korean_ingest / "test.parquet").column("text").to_pylist()
    np.testing.assert_array_equal(Vocabulary.load(out / "vocab.json").encode_raw(test_texts)[0], x)


def test_an_analyser_without_its_extra_fails_in_one_sentence(tmp_path: Path, korean_ingest: Path, monkeypatch: pytest.MonkeyPatch):
    import sys

    from tasks.morphemes import AnalyzerMissingError

    monkeypatch.setitem(sys.modules, "kiwipiepy", None)  # as if the korean extra were not installed
    with pytest.raises(AnalyzerMissingError, match=r"^encode.analyzer kiwi needs the Korean analyser kiwipiepy, .*install rnnflow's 'korean' extra .*set encode.analyzer none\.$"):
        encode_reviews(EncodeConfig(tokenizer="word", analyzer="kiwi", num_words=120, max_len=8), korean_ingest, tmp_path / "encode")
    assert EncodeConfig().analyzer == "none"  # the default needs no extra
