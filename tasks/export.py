"""Export: one Keras model that takes raw strings, with the training preprocessing inside, as model_text.keras.

Words and characters: TextVectorization (ingest's cleaning and tasks/text.py's rule in tf.strings
ops, TextStandardizer, with the run's vocabulary) -> VocabularyIds (TextVectorization's ids to
ours, the start id, our padding and truncation) -> the trained integer model, unchanged.
Subwords: SubwordIds (the same cleaning, then the run's own SentencePiece model, run by
tensorflow-text's op from the very bytes of encode/subword.model) -> VocabularyIds -> the model.
Loading it needs the objects registered here: `import tasks.export` before `keras.models.load_model`.
A run with a morphological analyser (encode.analyzer, tasks/morphemes.py) cannot run it in the graph:
its model_text.keras takes analysed text (tasks.morphemes.text_model_input), and its first layer,
AnalysedText, names the analyser and passes the strings on unchanged.

tasks/text.py stays the definition of the rules; its RE2 patterns are used here as they are, and
tests/test_text_rules.py checks that both give the same tokens and ids. Limits: TensorFlow backend
only (tf.strings, tensorflow-text). NFKC comes from ICU here and from utf8proc in Arrow, and
lowercasing from ICU here and utf8proc there: they agree on every script tested, but for a code
point newer than one engine's Unicode tables the two can differ (the test lists what it found).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import base64

import keras
import tensorflow as tf
import tensorflow_text

import tasks.models  # noqa: F401  (registers the layers the wrapped model may hold: OneHotTokens, MaxOverSteps, TokenWindow, VocabularyCap)
from tasks.encode import INDEX_FROM, OOV, PAD, START, Vocabulary
from tasks.store import atomic_path
from tasks.text import FINAL_SIGMA, NORMAL_FORM, WORD_OR_GAP_RE2

# What tasks/text.py says, spelled for RE2. Python's \s and str.split() whitespace (the same set,
# all below U+3001) is listed out, as RE2's \s is ASCII only and leaves out \v.
_PYTHON_WHITESPACE = "".join(f"\\x{{{code:x}}}" for code in range(0x3001) if re.match(r"\s", chr(code)))
_HTML_BREAK = rf"(?i)<br[{_PYTHON_WHITESPACE}]*/?>"
_HTML_TAG = r"<[^>]{1,200}>"
_TOKENIZER_SPLIT = {"word": "whitespace", "char": "character"}  # TextVectorization's split after TextStandardizer
_TOKENIZERS = (*_TOKENIZER_SPLIT, "subword")


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
    """TextVectorization's standardize: clean_text, then tokenize's normalisation and word rule, in tf.strings ops.

    For the word tokenizer the result is the text's words joined by spaces (split on whitespace
    next); for the char tokenizer it is the cleaned, normalised text (split into characters next);
    for the subword tokenizer the cleaned text, which the subword model normalises itself.
    """

    def __init__(self, tokenizer: str = "word", lowercase: bool = True, strip_html: bool = True, nul_stand_in: str = "\uffff"):
        if tokenizer not in _TOKENIZERS:
            raise ValueError(f"Unknown tokenizer {tokenizer!r}: the string model knows {', '.join(_TOKENIZERS)}.")
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
        if self.tokenizer == "subword":
            return texts
        texts = tensorflow_text.normalize_utf8(texts, NORMAL_FORM)
        if self.lowercase:
            # ICU lowercases the dotted capital I to i + U+0307 already; the final sigma is folded by hand.
            texts = tf.strings.regex_replace(tf.strings.lower(texts, encoding="utf-8"), FINAL_SIGMA[0], FINAL_SIGMA[1])
        if self.tokenizer == "word":
            texts = tf.strings.regex_replace(texts, WORD_OR_GAP_RE2, r" \1 ")
        return texts

    def get_config(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer, "lowercase": self.lowercase, "strip_html": self.strip_html, "nul_stand_in": self.nul_stand_in}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "TextStandardizer":
        return cls(**config)


@keras.saving.register_keras_serializable(package="rnnflow")
class SubwordIds(keras.layers.Layer):
    """Raw strings -> the run's subword ids, right-padded with 0: TextStandardizer's cleaning, then SentencePiece.

    The model's bytes travel in the layer's configuration (base64), so model_text.keras is one
    file that needs nothing from the run folder.
    """

    def __init__(self, model: str, strip_html: bool = True, nul_stand_in: str = "\uffff", **kwargs: Any):
        super().__init__(**kwargs)
        self.model = model
        self.strip_html = bool(strip_html)
        self.nul_stand_in = nul_stand_in
        self._standardize = TextStandardizer("subword", strip_html=self.strip_html, nul_stand_in=nul_stand_in)
        self._pieces = tensorflow_text.SentencepieceTokenizer(model=base64.b64decode(model), out_type=tf.int32)

    def call(self, texts):
        return self._pieces.tokenize(self._standardize(texts)).to_tensor(default_value=PAD)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], None)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "model": self.model, "strip_html": self.strip_html, "nul_stand_in": self.nul_stand_in}


@keras.saving.register_keras_serializable(package="rnnflow")
class AnalysedText(keras.layers.Layer):
    """Strings in, the same strings out: marks a string-in model whose input must first go through the run's analyser
    (tasks.morphemes.text_model_input), which cannot run inside TensorFlow; its configuration names it."""

    def __init__(self, analyzer: str, analyzer_version: str | None = None, **kwargs: Any):
        super().__init__(trainable=False, **{k: v for k, v in kwargs.items() if k != "trainable"})
        self.analyzer = analyzer
        self.analyzer_version = analyzer_version

    def call(self, texts):
        return texts

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "analyzer": self.analyzer, "analyzer_version": self.analyzer_version}


@keras.saving.register_keras_serializable(package="rnnflow")
class VocabularyIds(keras.layers.Layer):
    """Right-padded token ids -> rnnflow's rows, shaped like Vocabulary.encode.

    TextVectorization's ids (0 pad, 1 out of vocabulary, 2+ words) each move up by `shift` (1)
    to ours (0 pad, 1 start, 2 out of vocabulary, 3+ words); a subword model's are ours already
    (shift 0). Then the start id goes in front and each row is cut and padded to max_len on the
    sides the run was trained with, as keras.utils.pad_sequences does.
    """

    def __init__(self, max_len: int, padding: str = "post", truncating: str = "pre", shift: int = 1, **kwargs: Any):
        super().__init__(**kwargs)
        if padding not in ("pre", "post") or truncating not in ("pre", "post"):
            raise ValueError(f"padding and truncating must be 'pre' or 'post', got {padding!r} and {truncating!r}")
        self.shift = int(shift)
        self.max_len = int(max_len)
        self.padding = padding
        self.truncating = truncating

    def call(self, vectorized):
        ops = keras.ops
        vectorized = ops.cast(vectorized, "int32")
        is_word = ops.cast(ops.greater(vectorized, 0), "int32")
        ids = (vectorized + self.shift) * is_word  # the ids come padded only at the right end of each row
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
        return {**super().get_config(), "max_len": self.max_len, "padding": self.padding, "truncating": self.truncating, "shift": self.shift}


def build_text_encoder(vocab: Vocabulary) -> keras.Model:
    """Raw strings, shape (n,) -> int32 ids, shape (n, max_len): what vocab.encode_raw gives for each
    (with an analyser: for tasks.morphemes.text_model_input's strings)."""
    strip_html = vocab.strip_html
    assert OOV == 2 and INDEX_FROM == 3, "VocabularyIds assumes ids 0 pad, 1 start, 2 out of vocabulary"
    stand_in = _nul_stand_in(vocab.tokens)
    inputs = texts = keras.Input(shape=(), dtype="string", name="text")
    if vocab.analyzer != "none":
        texts = AnalysedText(vocab.analyzer, vocab.analyzer_version, name="analysed_text")(texts)
    if vocab.subword is not None:
        pieces = SubwordIds(base64.b64encode(vocab.subword.model).decode("ascii"), strip_html=strip_html, nul_stand_in=stand_in, name="subword_pieces")
        ids, shift = pieces(texts), 0
    else:
        vectorize = keras.layers.TextVectorization(
            standardize=TextStandardizer(vocab.tokenizer, lowercase=vocab.lowercase, strip_html=strip_html, nul_stand_in=stand_in),
            split=_TOKENIZER_SPLIT[vocab.tokenizer],
            output_mode="int",
            # In id order: TextVectorization numbers them from 2. Only a character token can be NUL.
            vocabulary=[stand_in if token == "\x00" else token for token in vocab.tokens],
            name="tokens",
        )
        ids, shift = vectorize(texts), 1
    ids = VocabularyIds(vocab.max_len, padding=vocab.padding, truncating=vocab.truncating, shift=shift, name="token_ids")(ids)
    return keras.Model(inputs, ids, name="rnnflow_text_encoder")


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
