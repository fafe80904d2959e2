"""Text rules shared by every step that reads text: one tokenize entry point for validate, encode and predict.

The word and character rules are written once, for RE2 (the regex engine of Arrow's string
kernels and of TensorFlow's tf.strings), and run through Arrow here: tokenize() for one text
is tokenize_many() for a batch of one, so validate, encode and predict cannot disagree.
tasks/export.py spells the same steps in TensorFlow ops from the same patterns, for the
string-in model; tests/test_text_rules.py checks all of them against a third engine (Python's
`regex` module) on text in many scripts.

The rule, in order:
1. NFKC normalisation: composed and decomposed letters, full-width forms and ligatures become one
   spelling ("e" + U+0301 and "é", "ｆｕｌｌ" and "full", "ﬁ" and "fi").
2. With lowercase, Unicode lowercasing, with the two folds a lowercase mapping leaves open so that
   every engine agrees: capital dotted I becomes "i" + U+0307 (as Python and ICU lower it), and a
   final sigma "ς" becomes "σ" (ICU and Python choose "ς" by context, Arrow never does).
3. Words: runs of letters, marks and digits of any script (Unicode categories L, M and N), with
   apostrophes inside a word kept ("don't", "aujourd'hui"); everything else separates words.
   Characters: every character of the normalised text, spaces and punctuation included.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Iterable, Literal, Sequence

import numpy as np

Tokenizer = Literal["word", "char", "subword"]
# "subword" pieces come from a model trained at encode (tasks/subword.py), not from a rule here.
TOKENIZERS: tuple[str, ...] = ("word", "char", "subword")
RULE_TOKENIZERS: tuple[str, ...] = ("word", "char")

_HTML_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_HTML_TAG = re.compile(r"<[^>]{1,200}>")

# Letters, marks and digits of every script, in RE2 (and Python `regex`) syntax.
WORD_CHARS = r"\p{L}\p{M}\p{N}"
# A word: word characters, with apostrophes only between two of them.
WORD_RE2 = rf"[{WORD_CHARS}]+(?:'[{WORD_CHARS}]+)*"
# Every word becomes " word ", everything between words a space: findall, as a rewrite (tf.strings).
WORD_OR_GAP_RE2 = rf"({WORD_RE2})|[^{WORD_CHARS}]+"
NORMAL_FORM = "NFKC"
# (from, to) after lowercasing: what makes Arrow's, ICU's and Python's lowercase the same text.
DOTTED_CAPITAL_I = ("\u0130", "i\u0307")  # before lowercasing: Arrow would give a bare "i"
FINAL_SIGMA = ("\u03c2", "\u03c3")


def clean_text(text: str, strip_html: bool = True) -> str:
    """Reviews scraped from the web carry <br /> and other tags: they become spaces."""
    if strip_html:
        text = _HTML_TAG.sub(" ", _HTML_BREAK.sub(" ", text))
    return " ".join(text.split())


def _check_tokenizer(tokenizer: str) -> None:
    if tokenizer not in RULE_TOKENIZERS:
        if tokenizer == "subword":
            raise ValueError("The subword tokenizer has no fixed rule: its pieces come from the encode step's subword model (tasks/subword.py).")
        raise ValueError(f"Unknown tokenizer {tokenizer!r}: use one of {', '.join(TOKENIZERS)}.")


def _nfkc(strings: Any) -> Any:
    """NFKC of an Arrow string array by Python's unicodedata, the rule's reference, for the strings that are not ASCII
    (ASCII text is its own NFKC, so English costs one Arrow pass).

    Not Arrow's utf8_normalize: it follows the utf8proc its pyarrow bundles, and pyarrow 25.0.1's composes no Hangul
    ("영화" came out as its six jamo, which split every Korean word and vocabulary), the pyarrow the lock holds while
    mlflow caps pyarrow below 26. One normaliser for every pyarrow keeps train, predict and serving in agreement.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if pc.all(pc.fill_null(pc.string_is_ascii(strings), True)).as_py() is not False:
        return strings
    return pa.array([v if v is None or v.isascii() else unicodedata.normalize(NORMAL_FORM, v) for v in strings.to_pylist()], type=strings.type)


def normalize_many(strings: Any, lowercase: bool = True) -> Any:
    """Step 1 and 2 of the rule on an Arrow string array: NFKC, then (with lowercase) the lowercasing every engine shares."""
    import pyarrow.compute as pc

    strings = _nfkc(strings)
    if lowercase:
        strings = pc.utf8_lower(pc.replace_substring(strings, *DOTTED_CAPITAL_I))
        strings = pc.replace_substring(strings, *FINAL_SIGMA)
    return strings


def tokenize(text: str, lowercase: bool = True, tokenizer: Tokenizer | str = "word") -> list[str]:
    """The tokens a model sees: words (punctuation dropped) or every character (spaces and punctuation kept)."""
    tokens, _ = tokenize_many([text], lowercase, tokenizer)
    return tokens.to_pylist()


def token_counts(texts: Iterable[str], lowercase: bool = True, tokenizer: Tokenizer | str = "word") -> np.ndarray:
    """Number of tokens per text, as int64."""
    if tokenizer == "char":
        import pyarrow as pa
        import pyarrow.compute as pc

        # A char token is a code point of the normalised text: counting them is 60 times faster than listing them.
        lengths = pc.utf8_length(normalize_many(pa.array(list(texts), pa.string()), lowercase))
        return lengths.to_numpy(zero_copy_only=False).astype(np.int64)
    return np.diff(tokenize_many(list(texts), lowercase, tokenizer)[1])


def _offsets(per_text: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(per_text) + 1, dtype=np.int64)
    np.cumsum(per_text, out=offsets[1:])
    return offsets


def _words(strings: Any) -> tuple[Any, Any]:
    """(the words of normalised strings end to end, the list array they came from): step 3 of the rule in Arrow kernels.

    Everything but word characters and apostrophes becomes a space, runs of apostrophes too, then a
    split on spaces, and each piece loses its outer apostrophes: what findall(WORD_RE2) gives.
    """
    import pyarrow.compute as pc

    strings = pc.replace_substring_regex(strings, pattern=f"[^{WORD_CHARS}']+", replacement=" ")
    parts = pc.ascii_split_whitespace(pc.replace_substring(strings, "''", " "))
    pieces = pc.utf8_trim(parts.flatten(), "'")  # an apostrophe joins two word characters or goes
    found = pc.greater(pc.binary_length(pieces), 0)
    return pieces.filter(found), pc.list_parent_indices(parts).filter(found)


def tokenize_many(texts: Sequence[str], lowercase: bool = True, tokenizer: Tokenizer | str = "word") -> tuple[Any, np.ndarray]:
    """Every text's tokens at once: (all tokens end to end as an Arrow string array, offsets), text i's at offsets[i]:offsets[i+1]."""
    import pyarrow as pa

    _check_tokenizer(tokenizer)
    strings = normalize_many(pa.array(texts, pa.string()), lowercase)
    if tokenizer == "char":
        lists = [list(text) for text in strings.to_pylist()]
        return pa.array([c for chars in lists for c in chars], pa.string()), _offsets(np.array([len(c) for c in lists], dtype=np.int64))
    words, parents = _words(strings)
    return words, _offsets(np.bincount(parents.to_numpy(), minlength=len(strings)))


def kept_shares(texts: Sequence[str], lowercase: bool = True, tokenizer: Tokenizer | str = "word") -> np.ndarray:
    """Per text, the share of its non-space characters (after normalisation) that end up in some token; nan for a blank text.

    Words keep letters, marks, digits and inner apostrophes, and lose the rest: a review in a
    script the rule drops, or of emoji and punctuation only, keeps little. Characters keep
    everything, and a subword model keeps every character its alphabet covers (what it does not
    shows as unknown pieces in encode.json's oov_share): both count as 1. Tokenizer auto counts as
    words, which it is unless words cover too little (then encode takes subwords); validate passes
    auto's choice instead, made from train's words as encode makes it (tasks.vocabulary_rule).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    strings = normalize_many(pa.array(texts, pa.string()), lowercase)
    spaces = pc.count_substring_regex(strings, r"[\s\p{Z}]").to_numpy(zero_copy_only=False)
    visible = pc.utf8_length(strings).to_numpy(zero_copy_only=False) - spaces
    if tokenizer in ("word", "auto"):  # auto starts from words (tasks/encode.py)
        words, parents = _words(strings)
        kept = np.bincount(parents.to_numpy(), weights=pc.utf8_length(words).to_numpy(zero_copy_only=False), minlength=len(strings))
    else:
        kept = visible.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(visible > 0, kept / np.maximum(visible, 1), np.nan)
