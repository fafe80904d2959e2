"""Text rules shared by every step that reads text: one tokenize entry point for validate, encode and predict."""

from __future__ import annotations

import re
from typing import Iterable, Literal

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
    return np.fromiter((len(tokenize(t, lowercase, tokenizer)) for t in texts), dtype=np.int64)
