"""Which tokens a vocabulary keeps, and how encode.tokenizer auto chooses between words, characters and subword pieces.

One rule for two steps: encode builds its vocabulary and resolves auto with it, and validate
resolves auto with the same function from the same word counts, so that validation counts review
lengths in the units encode will use. It lives apart from tasks/encode.py so that validate's
code version (its cache key) does not change with every edit to encoding.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping

# Keras' IMDb conventions: 0 pads, 1 starts a review, 2 stands for a word out of the vocabulary.
PAD, START, OOV = 0, 1, 2
INDEX_FROM = 3


def ranked_tokens(counts: Mapping[str, int], num_words: int) -> list[str]:
    """The tokens kept: most frequent first, as many as fit in num_words beside the reserved ids."""
    # Ties broken alphabetically so the same corpus always gives the same ids.
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [token for token, _ in ranked[: num_words - INDEX_FROM]]


def token_frequencies(tokens: Any) -> Counter[str]:
    """How often each token of an Arrow string array occurs (counted by Arrow, not in a Python loop)."""
    import pyarrow.compute as pc

    tally = pc.value_counts(tokens)
    return Counter(dict(zip(tally.field("values").to_pylist(), tally.field("counts").to_pylist())))


# Where words fail, characters are the tokens when at least this share of the words' letters are Hangul syllables, kana
# or CJK ideographs: each a syllable or a word, so a bag of their 1-3-grams reads syllables and words. On Korean reviews
# (docs/experiments.md, stop 43) the default preset's validation accuracy was 0.8405 on characters, 0.8345 on 3,000
# subword pieces. Alphabets (Turkish, Finnish) keep subword pieces: their letters alone say little, and a review is
# several times as many characters as words (not measured here on such text).
SYLLABIC_MIN_SHARE = 0.5


def syllabic_share(word_counts: Mapping[str, int]) -> float:
    """The share of the counted words' letters (each word as often as it occurs) that are Hangul, kana or CJK ideographs."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    words = pa.array(list(word_counts), pa.string())
    counts = np.fromiter(word_counts.values(), dtype=np.float64, count=len(word_counts))
    letters = pc.count_substring_regex(words, r"\pL").to_numpy(zero_copy_only=False) @ counts
    syllabic = pc.count_substring_regex(words, r"[\p{Hangul}\p{Han}\p{Hiragana}\p{Katakana}]").to_numpy(zero_copy_only=False) @ counts
    return float(syllabic / letters) if letters else 0.0


@dataclass(frozen=True)
class TokenizerChoice:
    """What tokenizer auto chose, and the figures it chose by."""

    chosen: str  # "word", "char" or "subword"
    coverage: float  # share of the split's word tokens that the kept words cover
    min_coverage: float
    kept_words: int  # how many words a word vocabulary of num_words would keep
    syllabic: float | None = None  # where words fail: syllabic_share of the words, which chooses char or subword

    def record(self) -> dict[str, Any]:
        """The choice as encode.json's tokenizer_auto (and validation.json's) records it."""
        relation = "at least" if self.chosen == "word" else "under"
        why = f"the {self.kept_words:,} most frequent words cover {self.coverage:.1%} of train's words ({relation} encode.auto_min_coverage {self.min_coverage:.0%})"
        syllabic = {}
        if self.syllabic is not None:
            syllabic = {"syllabic_share": round(self.syllabic, 4)}
            side = "at least" if self.chosen == "char" else "under"
            why += f" and {self.syllabic:.1%} of their letters are Hangul, kana or CJK characters ({side} {SYLLABIC_MIN_SHARE:.0%})"
        return {"coverage": round(self.coverage, 4), "min_coverage": self.min_coverage, **syllabic, "chosen": self.chosen,
                "why": f"{why}: {self.chosen} tokens"}


def choose_tokenizer(word_counts: Mapping[str, int], num_words: int, min_coverage: float) -> TokenizerChoice:
    """encode.tokenizer auto: words when the words a num_words vocabulary keeps cover at least min_coverage
    of the word tokens counted; else characters when most of the words' letters are syllables or ideographs
    (Korean, Japanese, Chinese: SYLLABIC_MIN_SHARE), else subword pieces (Turkish, Finnish)."""
    # The words ranked_tokens keeps: which of several equally frequent words it keeps does not change the sum.
    kept = heapq.nlargest(num_words - INDEX_FROM, word_counts.values())
    total = sum(word_counts.values())
    coverage = sum(kept) / total if total else 0.0
    if coverage >= min_coverage:
        return TokenizerChoice("word", coverage, min_coverage, len(kept))
    share = syllabic_share(word_counts)
    return TokenizerChoice("char" if share >= SYLLABIC_MIN_SHARE else "subword", coverage, min_coverage, len(kept), share)
