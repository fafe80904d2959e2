"""The score section of the configuration: how `rnnflow score` reads its input and when its inputs have drifted.

Its own module so that tasks/config.py stays within its size; RunConfig holds it as `score`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tasks.config_section import Section


class ScoreConfig(Section):

    on_drift: Literal["warn", "fail"] = Field(
        default="warn", description="a drift check that fails: warn (the scores are written, the summary says so) or fail (exit 2, one sentence)")
    text_column: str = Field(default="text", min_length=1, description="the text column of the input table (.csv, .tsv, .parquet, .jsonl); --text-column overrides it")
    batch_rows: int = Field(default=10_000, ge=1, description="rows read, labelled and written at a time: memory stays flat in the input's length")
    max_token_ratio: float = Field(
        default=2.0, gt=1, description="each quantile (p10, p50, p90) of tokens per text within the reference's divided or multiplied by this")
    max_kept_share_drop: float = Field(
        default=0.1, ge=0, le=1, description="the median share of characters kept in tokens at most this far below the reference's")
    max_unknown_share_rise: float = Field(
        default=0.1, ge=0, le=1, description="the mean share of tokens outside the vocabulary at most this far above the reference's")
    max_class_share_shift: float = Field(
        default=0.25, ge=0, le=1, description="each predicted class's share at most this far from its share on the reference's test split")
