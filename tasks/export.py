"""Export: one Keras model that takes raw strings, with the training preprocessing inside, as model_text.keras.

The string model is TextVectorization (ingest's cleaning and our tokenizer, rewritten in
tf.strings ops as TextStandardizer, with the run's vocabulary) -> VocabularyIds (TextVectorization's
ids to ours, the start id, our padding and truncation) -> the trained integer model, unchanged.
Loading it needs the objects registered here: `import tasks.export` before `keras.models.load_model`.

tasks/text.py stays the definition of the rules; the patterns below mirror it for RE2 (the regex
engine of tf.strings) and tests/test_predict.py checks that both give the same ids.
Limits: TensorFlow backend only (tf.strings). Exact for ASCII text (tested); for other text it
agreed with Python on every Unicode code point tried one at a time (see tasks.text.WORD_CHARS_RE2 and
_NUL_STAND_INS for the two adjustments), which is evidence, not proof, for every Unicode sequence;
known exceptions, char tokenizer with lowercase only: the ~40 capital letters newer than
TensorFlow's Unicode tables (e.g. U+2C2F) stay capital, and a text's own U+FFFF counts as NUL.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

import tasks.models  # noqa: F401  (registers the layers the wrapped model may hold: OneHotTokens, MaxOverSteps, TokenWindow, VocabularyCap)
from tasks.encode import INDEX_FROM, OOV, PAD, START, Vocabulary
from tasks.store import atomic_path
from tasks.text import WORD_OR_GAP_RE2

# What tasks/text.py says, spelled for RE2. Python's \s and str.split() whitespace (the same set,
# all below U+3001) is listed out, as RE2's \s is ASCII only and leaves out \v.
_PYTHON_WHITESPACE = "".join(f"\\x{{{code:x}}}" for code in range(0x3001) if re.match(r"\s", chr(code)))
_HTML_BREAK = rf"(?i)<br[{_PYTHON_WHITESPACE}]*/?>"
_HTML_TAG = r"<[^>]{1,200}>"
_TOKENIZER_SPLIT = {"word": "whitespace", "char": "character"}


# NUL cannot pass through TensorFlow's string attributes or numpy's fixed-width strings (it ends the
# string), and tf.strings.lower stops at it; so NUL becomes a noncharacter the vocabulary lacks.
_NUL_STAND_INS = ("\uffff", "\ufffe", "\U0010ffff", "\U0010fffe")


def _nul_stand_in(tokens: list[str]) -> str:
    for candidate in _NUL_STAND_INS:
        if candidate not in tokens:
            return candidate
    raise ValueError("The vocabulary holds every stand-in for NUL (U+FFFF, U+FFFE, U+10FFFF, U+10FFFE): it cannot be exported.")


@keras.saving.register_keras_serializable(package="rnnflow")
class TextStandardizer:
    """TextVectorization's standardize: clean_text, then tokenize's lowercasing and word rule, in tf.strings ops.

    For the word tokenizer the result is the text's words joined by spaces (split on whitespace
    next); for the char tokenizer it is the cleaned, lowercased text (split into characters next).
    """

    def __init__(self, tokenizer: str = "word", lowercase: bool = True, strip_html: bool = True, nul_stand_in: str = "\uffff"):
        if tokenizer not in _TOKENIZER_SPLIT:
            raise ValueError(f"Unknown tokenizer {tokenizer!r}: the string model knows {', '.join(_TOKENIZER_SPLIT)}.")
        self.tokenizer = tokenizer
        self.lowercase = bool(lowercase)
        self.strip_html = bool(strip_html)
        self.nul_stand_in = nul_stand_in

    def __call__(self, texts: tf.Tensor) -> tf.Tensor:
        texts = tf.strings.regex_replace(texts, r"\x00", self.nul_stand_in)
        if self.strip_html:
            texts = tf.strings.regex_replace(texts, _HTML_BREAK, " ")
            texts = tf.strings.regex_replace(texts, _HTML_TAG, " ")
        texts = tf.strings.regex_replace(texts, f"[{_PYTHON_WHITESPACE}]+", " ")
        texts = tf.strings.regex_replace(texts, "^ | $", "")
        if self.lowercase:
            texts = tf.strings.lower(texts, encoding="utf-8")
        if self.tokenizer == "word":
            texts = tf.strings.regex_replace(texts, WORD_OR_GAP_RE2, r" \1 ")
        return texts

    def get_config(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer, "lowercase": self.lowercase, "strip_html": self.strip_html, "nul_stand_in": self.nul_stand_in}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "TextStandardizer":
        return cls(**config)


@keras.saving.register_keras_serializable(package="rnnflow")
class VocabularyIds(keras.layers.Layer):
    """TextVectorization ids (0 pad, 1 out of vocabulary, 2+ words) -> rnnflow's, shaped like Vocabulary.encode.

    Ours are 0 pad, 1 start, 2 out of vocabulary, 3+ words: every id but padding moves up by one.
    Then the start id goes in front and each row is cut and padded to max_len on the sides the
    run was trained with, as keras.utils.pad_sequences does.
    """

    def __init__(self, max_len: int, padding: str = "post", truncating: str = "pre", **kwargs: Any):
        super().__init__(**kwargs)
        if padding not in ("pre", "post") or truncating not in ("pre", "post"):
            raise ValueError(f"padding and truncating must be 'pre' or 'post', got {padding!r} and {truncating!r}")
        self.max_len = int(max_len)
        self.padding = padding
        self.truncating = truncating

    def call(self, vectorized):
        ops = keras.ops
        vectorized = ops.cast(vectorized, "int32")
        is_word = ops.cast(ops.greater(vectorized, 0), "int32")
        ids = (vectorized + 1) * is_word  # TextVectorization pads only at the right end of each row
        rows = ops.shape(ids)[0]
        with_start = ops.concatenate([ops.full((rows, 1), START, dtype="int32"), ids], axis=1)
        width = ops.shape(with_start)[1]
        length = ops.sum(is_word, axis=1) + 1
        kept = ops.minimum(length, self.max_len)
        skipped = length - kept if self.truncating == "pre" else ops.zeros_like(length)
        lead = self.max_len - kept if self.padding == "pre" else ops.zeros_like(length)
        position = ops.expand_dims(ops.arange(self.max_len, dtype="int32"), 0)
        source = position - ops.expand_dims(lead, 1) + ops.expand_dims(skipped, 1)
        inside = ops.logical_and(position >= ops.expand_dims(lead, 1), position < ops.expand_dims(lead + kept, 1))
        taken = ops.take_along_axis(with_start, ops.clip(source, 0, width - 1), axis=1)
        return ops.where(inside, taken, PAD)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.max_len)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "max_len": self.max_len, "padding": self.padding, "truncating": self.truncating}


def build_text_encoder(vocab: Vocabulary) -> keras.Model:
    """Raw strings, shape (n,) -> int32 ids, shape (n, max_len): what vocab.encode_raw gives for each."""
    strip_html = vocab.strip_html
    assert OOV == 2 and INDEX_FROM == 3, "VocabularyIds assumes ids 0 pad, 1 start, 2 out of vocabulary"
    tokenizer = getattr(vocab, "tokenizer", "word")
    stand_in = _nul_stand_in(vocab.tokens)
    texts = keras.Input(shape=(), dtype="string", name="text")
    vectorize = keras.layers.TextVectorization(
        standardize=TextStandardizer(tokenizer, lowercase=vocab.lowercase, strip_html=strip_html, nul_stand_in=stand_in),
        split=_TOKENIZER_SPLIT[tokenizer],
        output_mode="int",
        # In id order: TextVectorization numbers them from 2. Only a character token can be NUL.
        vocabulary=[stand_in if token == "\x00" else token for token in vocab.tokens],
        name="tokens",
    )
    ids = VocabularyIds(vocab.max_len, padding=vocab.padding, truncating=vocab.truncating, name="token_ids")(vectorize(texts))
    return keras.Model(texts, ids, name="rnnflow_text_encoder")


def export_text_model(model: keras.Model, vocab: Vocabulary, path: Path) -> Path:
    """Save one model from raw strings to the trained model's outputs, written atomically to path (.keras).

    The cleaning (vocab.strip_html) and tokenizing are the vocabulary's own, as in training.
    """
    encoder = build_text_encoder(vocab)
    texts = encoder.input
    text_model = keras.Model(texts, model(encoder(texts)), name=f"{model.name}_text")
    path = Path(path)
    with atomic_path(path) as tmp:
        keras_tmp = tmp.with_suffix(".keras")  # Keras insists on the suffix
        try:
            text_model.save(keras_tmp)
            keras_tmp.replace(tmp)
        finally:
            keras_tmp.unlink(missing_ok=True)
    return path
