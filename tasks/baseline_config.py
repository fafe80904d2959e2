"""The baseline section of the configuration (tasks/baseline.py fits it), apart so that tasks/config.py stays small."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from tasks.config_section import Section


class BaselineConfig(Section):

    enabled: bool = Field(default=True, description="fit a linear baseline (NB-weighted n-gram logistic regression) beside each run's model")
    analyzer: Literal["auto", "word", "char_wb"] = Field(
        default="auto",
        description="word n-grams, or character n-grams within words (char_wb); auto: encode.tokenizer auto's rule on train's words "
        "(words when the encode.num_words most frequent cover encode.auto_min_coverage, else char_wb)",
    )
    word_ngrams: int = Field(default=3, ge=1, le=5, description="word n-grams from 1 to this")
    char_ngrams: int = Field(default=3, ge=1, le=8, description="character n-grams (char_wb) from 1 to this")
    features: int = Field(default=2**21, ge=16, le=2**24, description="hashed feature columns (memory grows with it; fewer collide more)")
    c_values: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: [10.0, 100.0], min_length=1,
        description="inverse regularisation strengths tried; the best on the val split is kept",
    )
