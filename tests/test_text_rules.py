"""One word rule for every engine: tokenize, Arrow's batch kernels, the TensorFlow graph of model_text.keras, and predict.

The reference is a third engine, Python's `regex` module, reading the rule as tasks/text.py's
module docstring states it (NFKC, lowercase with the final sigma folded, runs of letters, marks
and digits with inner apostrophes).
"""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest
import regex
import tensorflow as tf

import tasks.export
import tasks.text
from tasks.config import EncodeConfig
from tasks.encode import Vocabulary
from tasks.export import TextStandardizer, build_text_encoder
from tasks.text import FINAL_SIGMA, WORD_RE2, clean_text, kept_shares, token_counts, tokenize, tokenize_many

AWKWARD = [
    "영화가 정말 재밌어요ㅋㅋ 최고!!",  # Hangul, compatibility jamo
    "Café crème, naïve", "Cafe\u0301 cre\u0300me",  # accented Latin, composed and decomposed
    "Фильм просто ужасный, не смотрите", "ΟΔΥΣΣΕΥΣ και η Ιθάκη",  # Cyrillic, Greek (final sigma)
    "فيلم رائع جدا ١٢٣", "שָׁלוֹם עולם",  # Arabic with Arabic-Indic digits, Hebrew with points
    "這部電影很好看。我喜歡！", "映画はとても面白かった",  # CJK, Japanese
    "हिन्दी फ़िल्म बहुत अच्छी", "ภาพยนตร์ดีมาก",  # Devanagari (combining vowel signs, virama), Thai
    "👍🏽 great 👨\u200d👩\u200d👧 fa\u200dmily zw\u200cnj",  # emoji, skin tone, zero-width joiners
    "ｆｕｌｌ ｗｉｄｔｈ ﬁne ²nd ½", "İstanbul ıi ſtop \u212aelvin straße",  # compatibility forms, case traps
    "don't it's ''x'' 'quoted' rock'n'roll o'", "a_b c-d e.f 3.14 #tag @user http://x.y/z",
    "!!! ??? ...", "😀😀😀", "", "x\u00a0y\u2003z", "mixed 영화 movie фильм 映画",
]


def reference(text: str, lowercase: bool = True, tokenizer: str = "word") -> list[str]:
    text = unicodedata.normalize("NFKC", text)
    if lowercase:
        text = text.lower().replace(*FINAL_SIGMA)
    return regex.findall(WORD_RE2, text) if tokenizer == "word" else list(text)


def graph_tokens(texts: list[str], lowercase: bool, tokenizer: str) -> list[list[str]]:
    """The tokens model_text.keras's TextStandardizer hands to TextVectorization's split."""
    out = TextStandardizer(tokenizer, lowercase=lowercase, strip_html=False)(tf.constant(texts)).numpy()
    if tokenizer == "word":
        return [[t for t in s.decode().split(" ") if t] for s in out]
    return [list(s.decode()) for s in out]


def arrow_tokens(texts: list[str], lowercase: bool, tokenizer: str) -> list[list[str]]:
    tokens, offsets = tokenize_many(texts, lowercase, tokenizer)
    found = tokens.to_pylist()
    return [found[a:b] for a, b in zip(offsets[:-1], offsets[1:])]


@pytest.mark.parametrize("tokenizer", ["word", "char"])
@pytest.mark.parametrize("lowercase", [True, False])
def test_every_engine_gives_the_same_tokens_on_awkward_text(tokenizer: str, lowercase: bool):
    texts = [clean_text(t) for t in AWKWARD]
    expected = [reference(t, lowercase, tokenizer) for t in texts]
    assert [tokenize(t, lowercase, tokenizer) for t in texts] == expected
    assert arrow_tokens(texts, lowercase, tokenizer) == expected
    assert graph_tokens(texts, lowercase, tokenizer) == expected
    # Validation counts lengths without listing tokens (char: code points): the counts must be the lists' lengths.
    counts = token_counts(texts, lowercase, tokenizer)
    assert counts.dtype == np.int64 and counts.tolist() == [len(tokens) for tokens in expected]


def test_words_of_every_script_are_kept_whole():
    assert tokenize("영화가 정말 재밌어요") == ["영화가", "정말", "재밌어요"]
    assert tokenize("Très bien, Müller! Película") == ["très", "bien", "müller", "película"]
    assert tokenize("Фильм ΟΔΟΣ") == ["фильм", "οδοσ"]
    assert tokenize("हिन्दी") == ["हिन्दी"]  # combining vowel signs and the virama stay inside the word
    assert tokenize("Cafe\u0301") == tokenize("Café") == ["café"]  # NFKC: one spelling
    assert tokenize("😀 ... !!") == []


def test_ascii_text_keeps_the_old_word_rule():
    """For ASCII the rule is the [a-z0-9]+(?:'[a-z0-9]+)* of before: the same vocabulary for English."""
    rng = np.random.default_rng(3)
    alphabet = list("abcXYZ019' \t.,-_!?'\"<>/")
    texts = ["".join(rng.choice(alphabet, size=int(rng.integers(0, 40)))) for _ in range(2000)]
    old = regex.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*", regex.IGNORECASE)
    assert arrow_tokens(texts, True, "word") == [old.findall(t.lower()) for t in texts]


@pytest.mark.slow
def test_every_assigned_code_point_agrees_except_capitals_newer_than_tensorflows_tables():
    """Each assigned code point below U+30000, alone and between two letters, through Arrow, TensorFlow and the reference.

    Arrow and the reference agree everywhere. TensorFlow's ICU lowercases every capital except
    the ones newer than its Unicode tables (Unicode 14 and later: U+2C2F, U+A7C0, U+10570...):
    those stay capital in model_text.keras, and only with lowercase.
    """
    code_points = [c for c in range(1, 0x30000) if not 0xD800 <= c < 0xE000 and unicodedata.category(chr(c)) != "Cn"]
    texts = [clean_text(f"a{chr(c)}b {chr(c)}") for c in code_points]
    for tokenizer in ("word", "char"):
        for lowercase in (True, False):
            arrow = arrow_tokens(texts, lowercase, tokenizer)
            assert arrow == [reference(t, lowercase, tokenizer) for t in texts]
            graph = graph_tokens(texts, lowercase, tokenizer)
            differ = {code_points[i] for i in range(len(texts)) if graph[i] != arrow[i]}
            if not lowercase:
                assert differ == set(), [hex(c) for c in sorted(differ)]
            else:
                assert len(differ) <= 40 and all(chr(c).isupper() and chr(c).lower() != chr(c) for c in differ), [hex(c) for c in sorted(differ)]


@pytest.mark.parametrize("tokenizer", ["word", "char", "subword"])
def test_model_text_and_predict_give_the_training_ids_in_every_script(tokenizer: str, tmp_path):
    """The string-in export and predict's encode_raw (what training's encode_batch gives) agree, ids for ids."""
    import keras

    texts = AWKWARD * 3 + ["<br />HTML <b>tags</b> go", "a\x00b"]
    cfg = EncodeConfig(tokenizer=tokenizer, num_words=300, padding="post", truncating="pre")
    vocab = Vocabulary.build([clean_text(t) for t in texts], cfg, max_len=16)
    expected, _ = vocab.encode_raw(texts)
    encoder = build_text_encoder(vocab)
    np.testing.assert_array_equal(np.asarray(encoder.predict(tf.constant(texts), verbose=0)), expected)
    # Saved and loaded as model_text.keras is: the subword model's bytes travel inside the file.
    encoder.save(tmp_path / "encoder.keras")
    loaded = keras.models.load_model(tmp_path / "encoder.keras", compile=False)
    np.testing.assert_array_equal(np.asarray(loaded.predict(tf.constant(texts), verbose=0)), expected)


def test_export_knows_every_tokenizer_and_restates_the_cleaning():
    assert tasks.text._HTML_BREAK.pattern == r"<br\s*/?>", "tasks/text.py changed _HTML_BREAK: update tasks/export.py"
    assert tasks.text._HTML_TAG.pattern == r"<[^>]{1,200}>", "tasks/text.py changed _HTML_TAG: update tasks/export.py"
    assert set(tasks.export._TOKENIZERS) == set(tasks.text.TOKENIZERS), "a new tokenizer needs its string-model version in tasks/export.py"


def test_kept_share_is_what_the_word_rule_keeps_of_the_visible_characters():
    shares = kept_shares(["word word", "😀😀 !!", "don't!", "", "영화 최고"])
    assert shares[0] == 1.0 and shares[1] == 0.0 and shares[2] == pytest.approx(5 / 6) and np.isnan(shares[3]) and shares[4] == 1.0
    assert kept_shares(["😀😀 !!"], tokenizer="char")[0] == 1.0


@pytest.mark.parametrize("tokenizer", ["word", "subword"])
def test_model_text_and_predict_agree_with_an_analyser_that_runs_before_the_graph(tokenizer: str, tmp_path):
    """encode.analyzer kiwi runs in Python: predict's encode_raw analyses inside Vocabulary.ids_many (as encode did), and
    model_text.keras takes tasks.morphemes.text_model_input's analysed strings; both give the same ids."""
    import keras

    pytest.importorskip("kiwipiepy")
    from tasks.morphemes import text_model_input

    texts = AWKWARD * 3 + ["영화가 너무 재밌었어요 <br />강추합니다", "배우들 연기는 최악이었다ㅋㅋ", "a\x00b"]
    cfg = EncodeConfig(tokenizer=tokenizer, analyzer="kiwi", num_words=300, padding="post", truncating="pre")
    vocab = Vocabulary.build([clean_text(t) for t in texts], cfg, max_len=16)
    expected, _ = vocab.encode_raw(texts)
    analysed = text_model_input(texts, vocab)
    assert analysed[-3].startswith("영화 가 ")  # the particle split from its noun
    encoder = build_text_encoder(vocab)
    assert encoder.get_layer("analysed_text").get_config()["analyzer"] == "kiwi"
    np.testing.assert_array_equal(np.asarray(encoder.predict(tf.constant(analysed), verbose=0)), expected)
    encoder.save(tmp_path / "encoder.keras")
    loaded = keras.models.load_model(tmp_path / "encoder.keras", compile=False)
    np.testing.assert_array_equal(np.asarray(loaded.predict(tf.constant(analysed), verbose=0)), expected)
