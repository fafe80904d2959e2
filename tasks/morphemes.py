"""encode.analyzer: a morphological analyser before the tokenizer, for languages whose words carry their endings (Korean).

A Korean word is a stem with particles and endings glued on (영화가, 영화는, 영화를: "film" + subject,
topic, object), so few whole words repeat and a vocabulary of them covers half the text. Kiwi
(kiwipiepy, a maintained Korean analyser with its model in a registry package) splits each word into
its morphemes (영화 가, 재밌 었 어요); the run's tokenizer (word or subword pieces, encode.tokenizer)
then reads the morphemes joined by spaces as if they were the text.

Where it runs: in Python, inside Vocabulary.ids_many (tasks/encode.py), the one place texts become
ids, so encode, predict, score and serve analyse alike; and encode's learning passes (word counts,
the subword model) read the analysed text too. It cannot run inside the TensorFlow graph, so a run
with an analyser exports model_text.keras for analysed text: give it text_model_input(texts, vocab)
(ingest's cleaning, then the analyser), which is what encode fed the tokenizer in training; the
export's first layer (AnalysedText) names the analyser it expects. tests/test_text_rules.py checks
the three give the same ids.

The analyser is an optional extra (`korean`): the default install does not need it, and choosing it
without kiwipiepy fails with one sentence. vocab.json records the kiwipiepy version that analysed the
training text; another version may split some words otherwise.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache
from typing import Any, Sequence

from tasks.errors import RnnflowError

ANALYZERS: tuple[str, ...] = ("none", "kiwi")
EXTRA = "korean"


class AnalyzerMissingError(RnnflowError):
    """The analyser a configuration or a run's vocabulary names is not installed."""


def _require_kiwi() -> Any:
    try:
        import kiwipiepy
    except ImportError:
        raise AnalyzerMissingError(
            f"encode.analyzer kiwi needs the Korean analyser kiwipiepy, which the default install leaves out: install rnnflow's "
            f"'{EXTRA}' extra (uv sync --extra {EXTRA}, or pip install 'rnnflow[{EXTRA}]'), or set encode.analyzer none."
        ) from None
    return kiwipiepy


@lru_cache(maxsize=1)
def _kiwi() -> Any:
    """One Kiwi per process: loading its model takes a second or two."""
    return _require_kiwi().Kiwi()


def analyzer_version(analyzer: str) -> str | None:
    """The analysing package's version, recorded in vocab.json (None for no analyser)."""
    if analyzer == "none":
        return None
    return str(_require_kiwi().__version__)


def check_analyzer(analyzer: str) -> None:
    """Fail early, with the sentence above, when the analyser is not installed."""
    if analyzer not in ANALYZERS:
        raise ValueError(f"Unknown analyzer {analyzer!r}: use one of {', '.join(ANALYZERS)}.")
    if analyzer != "none":
        _require_kiwi()


def analyse_many(texts: Sequence[str], analyzer: str) -> list[str]:
    """Each text as its morphemes' forms joined by single spaces (NFKC first, as the word rule reads it); texts as they are for none."""
    if analyzer == "none":
        return list(texts)
    check_analyzer(analyzer)
    normal = [unicodedata.normalize("NFKC", text) for text in texts]
    if not normal:
        return []
    return [" ".join(token.form for token in tokens) for tokens in _kiwi().tokenize(normal)]


def text_model_input(texts: Sequence[str], vocab: Any) -> list[str]:
    """What a run's model_text.keras takes for raw texts: ingest's cleaning, then the run's analyser (raw texts cleaned, without one)."""
    from tasks.text import clean_text

    cleaned = [clean_text(text, vocab.strip_html) for text in texts]
    return analyse_many(cleaned, vocab.analyzer) if vocab.analyzer != "none" else list(texts)
