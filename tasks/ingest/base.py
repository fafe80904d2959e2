"""What every source shares: the errors ingest raises, the rows a source yields, and the Source interface."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from tasks.config import DataConfig
# The errors and file checks live in tasks/input_files.py, which the CLI runs before Prefect starts.
from tasks.input_files import DownloadError, IngestError, existing_file, file_kind  # noqa: F401

IMDB_LABELS = ["neg", "pos"]
# The splits a source puts rows in; val is carved from train later (tasks.ingest.splits).
SPLIT_VALUES = ("train", "test")
# Every source yields its rows in batches of this shape: the text cleaned, the label as its class
# name, and the split the source puts the row in.
ROW_COLUMNS = ["text", "label", "rating", "id", "split"]
MAX_REVIEW_BYTES = DataConfig.model_fields["max_review_bytes"].default


@dataclass
class Reading:
    """One read of a source: its rows as batches of ROW_COLUMNS, and what the reader learnt on the way.

    rows_per_file and spellings fill in as the batches stream by (only a table has them).
    """

    batches: Iterable[pd.DataFrame]
    classes: list[str] | None = None  # the class names, when known before the rows are read
    details: dict[str, Any] = field(default_factory=dict)  # how the input was read, for ingest.json's "input"
    rows_per_file: dict[str, int] = field(default_factory=dict)
    spellings: dict[str, set[str]] = field(default_factory=dict)  # class name -> the raw labels folded into it


class Source:
    """One kind of input, named by data.source: where it is, its rows, its classes, its test split.

    A source module subclasses this, overriding locate and read and whichever defaults do not fit,
    and exports one instance as SOURCE; tasks.ingest.SOURCES maps data.source to it.
    """

    strips_html = True  # whether data.strip_html applies to its texts (ingest.json records it)

    def input_path(self, cfg: DataConfig) -> str:
        """The path the input is read from, before it is located."""
        return cfg.path

    def locate(self, cfg: DataConfig, data_dir: Path) -> dict[str, Any]:
        """Where the input is on disk (downloading it once if needed) and a fingerprint of its content."""
        raise NotImplementedError

    def read(self, cfg: DataConfig, located: dict[str, Any], batch_rows: int) -> Reading:
        """The located input's rows, in batches of at most about batch_rows."""
        raise NotImplementedError

    def name_classes(self, cfg: DataConfig, located: dict[str, Any], reading: Reading, meta: pd.DataFrame) -> list[str]:
        """The class names in index order, once every row has streamed by (meta: label, id, split per row)."""
        assert reading.classes is not None, "a source that names its classes from the rows overrides name_classes"
        return reading.classes

    def carves_test(self, cfg: DataConfig) -> bool:
        """Whether test rows are carved from the train rows (rather than given by the input)."""
        return False

    def test_split(self, cfg: DataConfig, raw: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
        """The train and test rows (label as class index, id, row) in the order sampling and splitting see them."""
        return raw


def short(error: BaseException, limit: int = 160) -> str:
    """An error's message on one line, cut to limit characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
