"""What every source shares: the errors ingest raises, the rows a source yields, and the Source interface."""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from tasks.config import DataConfig
from tasks.errors import RnnflowError

IMDB_LABELS = ["neg", "pos"]
# The splits a source puts rows in; val is carved from train later (tasks.ingest.splits).
SPLIT_VALUES = ("train", "test")
# Every source yields its rows in batches of this shape: the text cleaned, the label as its class
# name, and the split the source puts the row in.
ROW_COLUMNS = ["text", "label", "rating", "id", "split"]
MAX_REVIEW_BYTES = DataConfig.model_fields["max_review_bytes"].default


class IngestError(RnnflowError, ValueError):
    """Input the user must fix; the message names the file and the way out."""

    retryable = False


class DownloadError(IngestError):
    """The network failed us: worth another try after a pause."""

    retryable = True


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


def file_kind(path: Path) -> str:
    """What a path that is neither a regular file nor a folder is, in words ("a character device")."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return "unreadable"
    for test, name in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a special file"


def existing_file(path: str, key: str, what: str) -> Path:
    """path, resolved, if it is a regular file; else an IngestError saying to pass `what` with --set key=PATH."""
    local = Path(path).expanduser()
    if not local.exists():
        raise IngestError(f"Input {local} does not exist: pass {what} with --set {key}=PATH.")
    if local.is_dir():
        raise IngestError(f"Input {local} is a folder, not a file: pass {what} with --set {key}=PATH.")
    if not local.is_file():
        raise IngestError(f"Input {local} is {file_kind(local)}, not a regular file: pass {what} with --set {key}=PATH.")
    return local.resolve()


def short(error: BaseException, limit: int = 160) -> str:
    """An error's message on one line, cut to limit characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
