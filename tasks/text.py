"""Text rules shared by every step that reads text: one tokenize entry point for validate, encode and predict."""

from __future__ import annotations

import re
from typing import Any, Iterable, Literal, Sequence

import numpy as np

Tokenizer = Literal["word", "char"]
TOKENIZERS: tuple[str, ...] = ("word", "char")

_HTML_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_HTML_TAG = re.compile(r"<[^>]{1,200}>")
# Words with inner apostrophes ("don't", "it's") stay whole; punctuation is dropped.
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*", re.IGNORECASE)


def clean_text(text: str, strip_html: bool = True) -> str:
    """Reviews scraped from the web carry <br /> and other tags: they become spaces."""
    if strip_html:
        text = _HTML_TAG.sub(" ", _HTML_BREAK.sub(" ", text))
    return " ".join(text.split())


def tokenize(text: str, lowercase: bool = True, tokenizer: Tokenizer | str = "word") -> list[str]:
    """The tokens a model sees: words (punctuation dropped) or every character (spaces and punctuation kept)."""
    if lowercase:
        text = text.lower()
    if tokenizer == "word":
        return _WORD.findall(text)
    if tokenizer == "char":
        return list(text)
    raise ValueError(f"Unknown tokenizer {tokenizer!r}: use one of {', '.join(TOKENIZERS)}.")


def token_counts(texts: Iterable[str], lowercase: bool = True, tokenizer: Tokenizer | str = "word") -> np.ndarray:
    """Number of tokens per text, as int64."""
    return np.diff(tokenize_many(list(texts), lowercase, tokenizer)[1])


# The word rule spelled for RE2 (TensorFlow's tf.strings and Arrow's string kernels both use it).
# Python's re.IGNORECASE lets [a-z] match four non-ASCII letters (İ ı ſ K); RE2's (?i) folds
# only ſ and K, so İ (U+0130) and ı (U+0131) are added by hand.
WORD_CHARS_RE2 = r"a-z0-9\x{130}\x{131}"
# What [a-z0-9] with re.IGNORECASE matches, for Arrow's RE2 without (?i): after Python's lower(),
# a-z, 0-9 and ı ſ (İ lowers to i + U+0307 and K to k); without lowering, capitals and İ K too.
_LOWER_WORD_CHARS = r"a-z0-9\x{131}\x{17f}"
_ANY_CASE_WORD_CHARS = r"a-zA-Z0-9\x{130}\x{131}\x{17f}\x{212a}"
# Every word becomes " word ", everything between words a space: findall, as a rewrite.
WORD_OR_GAP_RE2 = rf"(?i)([{WORD_CHARS_RE2}]+(?:'[{WORD_CHARS_RE2}]+)*)|[^{WORD_CHARS_RE2}]+"


def tokenize_many(texts: Sequence[str], lowercase: bool = True, tokenizer: Tokenizer | str = "word") -> tuple[Any, np.ndarray]:
    """Every text's tokens at once: (all tokens end to end as an Arrow string array, offsets), text i's at offsets[i]:offsets[i+1].

    The tokens tokenize() gives text by text (tests/test_encode.py checks it on awkward text); words
    go through Arrow's C++ string kernels, about twice as fast as Python's re on a batch of reviews:
    everything but word characters and apostrophes becomes a space, runs of apostrophes too, then a
    split on spaces, and each piece loses its outer apostrophes. Characters stay on tokenize().
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if tokenizer != "word":
        lists = [tokenize(text, lowercase, tokenizer) for text in texts]
        offsets = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum([len(tokens) for tokens in lists], out=offsets[1:])
        return pa.array([token for tokens in lists for token in tokens], pa.string()), offsets
    strings = pa.array(texts, pa.string())
    if lowercase:
        # Python lowercases İ (U+0130) to i and a combining dot (U+0307); Arrow's utf8_lower to a bare i.
        strings = pc.utf8_lower(pc.replace_substring(strings, "\u0130", "i\u0307"))
    strings = pc.replace_substring_regex(strings, pattern=f"[^{_LOWER_WORD_CHARS if lowercase else _ANY_CASE_WORD_CHARS}']+", replacement=" ")
    parts = pc.ascii_split_whitespace(pc.replace_substring(strings, "''", " "))
    pieces = pc.utf8_trim(parts.flatten(), "'")  # an apostrophe joins two word characters or goes
    words = pc.greater(pc.binary_length(pieces), 0)
    per_text = np.bincount(pc.list_parent_indices(parts).filter(words).to_numpy(), minlength=len(strings))
    offsets = np.zeros(len(strings) + 1, dtype=np.int64)
    np.cumsum(per_text, out=offsets[1:])
    return pieces.filter(words), offsets
