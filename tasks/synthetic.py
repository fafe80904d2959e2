"""A seeded corpus of review-like texts with a learnable sentiment signal, for demos and tests offline."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

_POSITIVE = (
    "wonderful brilliant moving superb delightful charming gripping beautiful masterful touching "
    "hilarious excellent memorable stunning clever fresh heartfelt engaging terrific great"
).split()
_NEGATIVE = (
    "boring dull awful clumsy tedious terrible predictable lifeless shallow annoying "
    "pointless weak forgettable messy bland wooden painful dreadful lazy bad"
).split()
_SUBJECTS = "the film the movie the story the cast the script the ending the director the soundtrack this picture the plot".split(" ")
_SUBJECTS = [" ".join(_SUBJECTS[i : i + 2]) for i in range(0, len(_SUBJECTS), 2)]
_FILLER = (
    "i watched it on a rainy sunday with friends and we talked about the scenes afterwards while "
    "the characters walk through the city at night there is a long dinner sequence in the middle "
    "some of the actors had small roles the camera lingers on faces and the music comes and goes "
    "it runs about two hours and it was shown in theaters last year my brother saw it twice"
).split()
_VERBS = "is was felt seemed looked".split()
_DEGREE = ["", "", "really ", "quite ", "very ", "somewhat "]


def synthetic_reviews(n: int, positive_fraction: float = 0.5, seed: int | Sequence[int] = 0) -> pd.DataFrame:
    """n reviews (text, label, rating, id); label 1 = positive; texts mix filler with sentiment phrases.

    The signal is learnable but noisy: each review carries a few phrases of its own class, one
    of the other class now and then, and a "not" that flips a phrase's meaning.
    """
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < positive_fraction).astype(np.int64)
    texts = []
    ratings = np.empty(n, dtype=np.int64)
    for i, label in enumerate(labels):
        words: list[str] = []
        n_sentences = int(rng.integers(3, 9))
        for _ in range(n_sentences):
            if rng.random() < 0.55:
                same_class = rng.random() < 0.8
                positive = bool(label) == same_class
                negated = rng.random() < 0.15
                pool = _POSITIVE if positive != negated else _NEGATIVE
                adjective = pool[int(rng.integers(len(pool)))]
                subject = _SUBJECTS[int(rng.integers(len(_SUBJECTS)))]
                verb = _VERBS[int(rng.integers(len(_VERBS)))]
                degree = _DEGREE[int(rng.integers(len(_DEGREE)))]
                words.append(f"{subject} {verb} {'not ' if negated else ''}{degree}{adjective}.")
            else:
                start = int(rng.integers(len(_FILLER) - 12))
                words.append(" ".join(_FILLER[start : start + int(rng.integers(5, 12))]) + ".")
        text = " ".join(words)
        if rng.random() < 0.3:
            text = text.replace(". ", ".<br /><br />", 1)
        texts.append(text.capitalize())
        ratings[i] = int(rng.integers(7, 11)) if label else int(rng.integers(1, 5))
    return pd.DataFrame({"text": texts, "label": labels, "rating": ratings, "id": np.arange(n, dtype=np.int64)})
