"""The data section: where the reviews come from and how they are split. RunConfig holds it as `data`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tasks.config_section import Section

IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"


class DataConfig(Section):
    source: Literal["imdb", "synthetic", "table", "keras_imdb"] = Field(
        default="imdb", description="imdb: the IMDb archive; synthetic: made-up reviews (the demo); table: your CSV, TSV, Parquet or JSON Lines; keras_imdb: Keras' imdb.npz",
    )
    path: str = Field(
        default="data/aclImdb_v1.tar.gz",
        description="the input: an archive, folder or URL (imdb), a table file or its s3://, gs://, https:// URL (table), an .npz (keras_imdb, data/imdb.npz unless set: read only ones you trust)",
    )
    url: str = Field(default=IMDB_URL, description="where source=imdb downloads its archive when data.path does not exist")
    max_reviews: int | None = Field(default=None, ge=2, description="use at most N reviews per split")
    val_fraction: float = Field(default=0.2, gt=0, lt=1, description="share of train held out for validation (early stopping and every choice)")
    seed: int = Field(default=1337, description="seed of the train/validation split (and of source=synthetic)")
    synthetic_reviews: int = Field(default=4000, ge=20, description="reviews per split for source=synthetic")
    synthetic_positive_fraction: float = Field(default=0.5, gt=0, lt=1, description="source=synthetic: share of positive reviews")
    # source=table: one file (split by split_column, or stratified by test_size) or a train/test pair.
    test_path: str | None = Field(default=None, description="source=table: a separate test file, or its URL")
    text_column: str = Field(default="text", description="source=table: the column of texts")
    label_column: str = Field(default="label", description="source=table: the column of labels (two classes, or more up to max_classes)")
    split_column: str | None = Field(default=None, description="source=table: column of train/test values")
    rating_column: str | None = Field(default=None, description="source=table: an optional column of star ratings, kept beside each review")
    id_column: str | None = Field(default=None, description="source=table: an optional column of row ids, kept in predictions")
    test_size: float = Field(default=0.2, gt=0, lt=1, description="test share when the table has no split")
    incomplete_rows: Literal["error", "drop"] = Field(
        default="error",
        description="source=table: rows without a text or a label stop ingest, naming the first (error), or are left out and counted in ingest.json (drop)",
    )
    max_classes: int = Field(default=20, ge=2, description="more distinct labels than this look like free text")
    strip_html: bool = Field(default=True, description="replace HTML tags in texts by spaces")
    # Far above any real review (IMDb's longest is about 14 KB), low enough that one hostile member
    # of a small archive cannot make ingest read gigabytes into memory.
    max_review_bytes: int = Field(
        default=10_485_760, ge=1, description="the most bytes one review may hold (an archive member, a file, a table cell); a larger one is refused by name",
    )
    # source=keras_imdb: Keras' imdb_word_index.json turns ids back into words; without it ids become "w<id>".
    word_index_path: str | None = Field(default=None, description="source=keras_imdb: imdb_word_index.json, to turn ids back into words")
    retries: int = Field(default=2, ge=0, description="times reading or downloading the input is retried")
    retry_delay_seconds: float = Field(default=2.0, ge=0, description="seconds between those retries")
