"""Ingest: raw labelled texts in, one Parquet file per split (train, val, test) out.

Sources (data.source), all ending in the same files (text, label, rating, id + ingest.json):

    imdb        the aclImdb archive or its unpacked folder
    synthetic   seeded review-like texts, no file
    table       CSV, TSV, Parquet or JSON Lines: one file, or a train/test pair
    keras_imdb  Keras' imdb.npz (integer-encoded), decoded back to text
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import task

from tasks.caching import StepCachePolicy, produce_step
from tasks.config import DataConfig
from tasks import store
from tasks.store import StepOutput, atomic_path, fingerprint, iter_parquet, parquet_rows, sha256_file, write_json
from tasks.synthetic import synthetic_reviews
from tasks.text import clean_text

IMDB_LABELS = ["neg", "pos"]
SPLITS = ("train", "val", "test")
# Keras' copy of the integer-encoded reviews, and its sha256 as keras.datasets.imdb.load_data checks it.
KERAS_IMDB_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/imdb.npz"
KERAS_IMDB_SHA256 = "69664113be75683a8fe16e3ed0ab59fda8886cb3cd7ada244f7d9544e4676b9f"
KERAS_IMDB_DEFAULT_PATH = "data/imdb.npz"
TABLE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".jsonl": "jsonl", ".json": "jsonl"}
SPLIT_VALUES = ("train", "test")
_MEMBER = re.compile(r"^(?:\./)?aclImdb/(train|test)/(pos|neg)/(\d+)_(\d+)\.txt$")
_SCHEMA = pa.schema([("text", pa.string()), ("label", pa.int64()), ("rating", pa.int64()), ("id", pa.int64())])
# Every source yields its rows in batches of this shape: the text cleaned, the label as its class
# name, and the split the source puts the row in (train or test; val is carved from train later).
ROW_COLUMNS = ["text", "label", "rating", "id", "split"]
MAX_REVIEW_BYTES = DataConfig.model_fields["max_review_bytes"].default
_SPILL_SCHEMA = pa.schema(
    [("text", pa.string()), ("label", pa.string()), ("rating", pa.int64()), ("id", pa.int64()), ("split", pa.string())]
)


class IngestError(ValueError):
    """Input the user must fix; the message names the file and the way out."""

    retryable = False


class DownloadError(IngestError):
    """The network failed us: worth another try after a pause."""

    retryable = True


def retry_unless_bad_input(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry I/O trouble, never input that will fail the same way again."""
    try:
        state.result()
    except IngestError as error:
        return error.retryable
    except Exception:
        return True
    return True


# --------------------------------------------------------------------------- locating the input


def is_url(path: str) -> bool:
    return path.startswith(("http://", "https://"))


def download(url: str, target: Path, timeout: float = 60) -> Path:
    """Fetch url into target once; the file appears only when complete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, atomic_path(target) as tmp:
            with open(tmp, "wb") as handle:
                shutil.copyfileobj(response, handle, length=1 << 20)
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(
            f"Could not download {url} ({reason}): this machine may have no network; "
            f"download the archive elsewhere and pass it with --set data.path=/path/to/aclImdb_v1.tar.gz."
        ) from None
    return target


def input_path(cfg: DataConfig) -> str:
    """data.path, except that source=keras_imdb left at the aclImdb default means data/imdb.npz."""
    if cfg.source == "keras_imdb" and Path(cfg.path) == Path(DataConfig().path):
        return KERAS_IMDB_DEFAULT_PATH
    return cfg.path


def locate_source(cfg: DataConfig, data_dir: Path = Path("data")) -> dict[str, Any]:
    """Where the input is on disk (downloading it once if needed) and a fingerprint of its content."""
    if cfg.source == "synthetic":
        return {"source": "synthetic", "path": None, "fingerprint": fingerprint(["synthetic", cfg.synthetic_reviews, cfg.synthetic_positive_fraction, cfg.seed])}
    if cfg.source == "table":
        return _locate_table(cfg)
    if cfg.source == "keras_imdb":
        return _locate_keras_imdb(cfg)
    if is_url(cfg.path):
        local = data_dir / Path(cfg.path.split("?")[0]).name
        if not local.exists():
            download(cfg.path, local)
    else:
        local = Path(cfg.path).expanduser()
        if not local.exists():
            if Path(cfg.path) == Path(DataConfig().path):
                download(cfg.url, local)
            else:
                raise IngestError(f"Input {local} does not exist: pass the IMDb archive or its unpacked folder with --set data.path=PATH.")
    local = local.resolve()
    if local.is_dir():
        digest = folder_fingerprint(local)
    elif local.is_file():
        digest = sha256_file(local)
    else:  # hashing /dev/zero or a pipe nobody writes to would never end
        raise IngestError(
            f"Input {local} is {_file_kind(local)}, not a regular file or folder: pass the IMDb archive or its unpacked folder with --set data.path=PATH."
        )
    return {"source": cfg.source, "path": str(local), "fingerprint": digest}


def _file_kind(path: Path) -> str:
    """What a path that is neither a regular file nor a folder is, in words ("a character device")."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return "unreadable"
    for test, name in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a special file"


def folder_fingerprint(folder: Path) -> str:
    """A sha256 over every .txt under folder: its relative path and the sha256 of its bytes.

    Contents, not sizes or times: a review rewritten in place with other text of the same size
    (or with its modification time put back) is a different input, so ingest and every later step rerun.
    """
    listing = []
    for file in sorted(folder.rglob("*.txt")):
        name = file.relative_to(folder).as_posix()
        if file.is_symlink() or not file.is_file():
            # Never opened here: a link may point anywhere and a pipe may never end; ingest refuses them by name.
            listing.append((name, "not a regular file"))
        else:
            listing.append((name, sha256_file(file)))
    return fingerprint(listing)


def _existing_file(path: str, key: str, what: str) -> Path:
    local = Path(path).expanduser()
    if not local.exists():
        raise IngestError(f"Input {local} does not exist: pass {what} with --set {key}=PATH.")
    if local.is_dir():
        raise IngestError(f"Input {local} is a folder, not a file: pass {what} with --set {key}=PATH.")
    if not local.is_file():
        raise IngestError(f"Input {local} is {_file_kind(local)}, not a regular file: pass {what} with --set {key}=PATH.")
    return local.resolve()


def table_format(path: Path) -> str:
    """csv, tsv, parquet or jsonl, from the file's extension."""
    fmt = TABLE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise IngestError(
            f"Input {path} has the extension {path.suffix or '(none)'!r}, which source=table cannot read: "
            f"save it as .csv, .tsv, .parquet or .jsonl (JSON Lines; .json also works), or rename it to match its format."
        )
    return fmt


def _locate_table(cfg: DataConfig) -> dict[str, Any]:
    if Path(cfg.path) == Path(DataConfig().path):
        raise IngestError("source=table reads the file named by data.path, which is still the IMDb archive default: pass your table with --set data.path=/path/to/reviews.csv.")
    local = _existing_file(cfg.path, "data.path", "a .csv, .tsv, .parquet or .jsonl table")
    formats = {"path": table_format(local)}
    test = None
    if cfg.test_path:
        if cfg.split_column:
            raise IngestError(f"Both data.test_path ({cfg.test_path}) and data.split_column ({cfg.split_column!r}) say where the test rows are: keep one of them.")
        test = _existing_file(cfg.test_path, "data.test_path", "the test table")
        formats["test_path"] = table_format(test)
    digest = fingerprint([sha256_file(local), sha256_file(test) if test else None])
    return {"source": "table", "path": str(local), "test_path": str(test) if test else None, "format": formats, "fingerprint": digest}


def _locate_keras_imdb(cfg: DataConfig) -> dict[str, Any]:
    path = input_path(cfg)
    local = Path(path).expanduser()
    if not local.exists() and Path(path) == Path(KERAS_IMDB_DEFAULT_PATH):
        download_keras_imdb(local)
    local = _existing_file(path, "data.path", "Keras' imdb.npz")
    word_index = _existing_file(cfg.word_index_path, "data.word_index_path", "Keras' imdb_word_index.json") if cfg.word_index_path else None
    digest = fingerprint([sha256_file(local), sha256_file(word_index) if word_index else None])
    return {"source": "keras_imdb", "path": str(local), "word_index_path": str(word_index) if word_index else None, "fingerprint": digest}


def download_keras_imdb(target: Path, url: str | None = None, timeout: float = 60) -> Path:
    """Fetch Keras' imdb.npz into target through keras.utils.get_file, which checks its sha256."""
    import socket

    import keras

    target = Path(target).expanduser().resolve()
    url = url or KERAS_IMDB_URL
    target.parent.mkdir(parents=True, exist_ok=True)
    # get_file's urlretrieve has no timeout of its own: on a network that drops packets it would wait forever.
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        # get_file takes a bare file name plus a folder; it removes a partial file when the fetch fails.
        fetched = keras.utils.get_file(
            fname=target.name, origin=url, file_hash=KERAS_IMDB_SHA256, cache_dir=str(target.parent), cache_subdir=""
        )
    except Exception as err:  # get_file wraps every network failure in a bare Exception
        # "URL fetch failure on <url>: <code> -- <reason>": the url is in our sentence already.
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0].rsplit(" -- ", 1)[-1]
        raise DownloadError(
            f"Could not download {url} ({reason}): this machine may have no network; "
            f"fetch imdb.npz elsewhere and pass it with --set data.path=/path/to/imdb.npz."
        ) from None
    finally:
        socket.setdefaulttimeout(previous_timeout)
    if Path(fetched).resolve() != target:  # get_file falls back to /tmp when the folder is not writable
        shutil.copyfile(fetched, target)
    return target


# --------------------------------------------------------------------------- reading the IMDb layout


def _too_big(what: str, size: int | None, limit: int) -> IngestError:
    """The error for one review larger than data.max_review_bytes (size None: more than limit, exact size unknown)."""
    told = f"is {size:,} bytes, more than" if size is not None else "holds more bytes than"
    return IngestError(f"{what} {told} data.max_review_bytes ({limit:,}): remove it or raise data.max_review_bytes.")


def _iter_archive(path: Path, max_bytes: int = MAX_REVIEW_BYTES) -> Iterator[tuple[str, str, int, int, bytes]]:
    """Stream (split, polarity, id, rating, bytes) from the .tar.gz without extracting anything.

    Only regular files whose names match the dataset's layout are read; links, devices and
    names with '..' or a leading '/' are never followed or written anywhere. A member larger
    than max_bytes is refused by name before it is read: a few hundred KB of gzip can unpack to
    gigabytes, and each review is held whole in memory.
    """
    try:
        with tarfile.open(path, mode="r|gz") as archive:
            for member in archive:
                match = _MEMBER.match(member.name)
                if not match:
                    continue
                if not member.isreg():
                    raise IngestError(f"Archive {path} holds {member.name} as a link or special file: only regular files are read; use the official archive.")
                if member.size > max_bytes:
                    raise _too_big(f"{member.name} in {path}", member.size, max_bytes)
                handle = archive.extractfile(member)
                # At most one byte past the bound, whatever the header claims.
                data = handle.read(max_bytes + 1) if handle else b""
                if len(data) > max_bytes:
                    raise _too_big(f"{member.name} in {path}", None, max_bytes)
                split, polarity, review_id, rating = match.groups()
                yield split, polarity, int(review_id), int(rating), data
    except (tarfile.ReadError, EOFError, zlib.error, OSError) as err:
        if isinstance(err, IngestError):
            raise
        raise IngestError(f"Archive {path} could not be read ({err}): it is not a complete .tar.gz; download it again.") from None


def _iter_folder(path: Path, max_bytes: int = MAX_REVIEW_BYTES) -> Iterator[tuple[str, str, int, int, bytes]]:
    """The unpacked layout's reviews as _iter_archive yields them, each a regular file of at most max_bytes."""
    root = path / "aclImdb" if (path / "aclImdb").is_dir() else path
    for file in sorted(root.glob("*/*/*.txt")):
        if file.is_symlink():
            raise IngestError(f"{file} is a symbolic link: rnnflow reads only regular files; copy the real file there.")
        match = _MEMBER.match(f"aclImdb/{file.relative_to(root).as_posix()}")
        if match:
            if not file.is_file():  # a pipe would block forever, a device never end
                raise IngestError(f"{file} is {_file_kind(file)}, not a regular file: rnnflow reads only regular files; put the review's text file there or remove it.")
            size = file.stat().st_size
            if size > max_bytes:
                raise _too_big(str(file), size, max_bytes)
            with open(file, "rb") as handle:
                data = handle.read(max_bytes + 1)  # the file may grow between stat and read
            if len(data) > max_bytes:
                raise _too_big(str(file), None, max_bytes)
            split, polarity, review_id, rating = match.groups()
            yield split, polarity, int(review_id), int(rating), data


def iter_imdb(
    path: Path, strip_html: bool = True, batch_rows: int | None = None, max_review_bytes: int = MAX_REVIEW_BYTES
) -> Iterator[pd.DataFrame]:
    """The IMDb layout (aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt) as batches of ROW_COLUMNS, in archive order.

    A review larger than max_review_bytes (data.max_review_bytes) stops it with an IngestError naming the file.
    """
    batch_rows = batch_rows or store.STREAM_ROWS
    reader = _iter_folder(path, max_review_bytes) if path.is_dir() else _iter_archive(path, max_review_bytes)
    rows: list[tuple[str, str, int, int, str]] = []
    for split, polarity, review_id, rating, raw in reader:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise IngestError(
                f"{split}/{polarity}/{review_id}_{rating}.txt in {path} is not valid UTF-8 (byte {err.start}): re-save it as UTF-8."
            ) from None
        rows.append((clean_text(text, strip_html), polarity, rating, review_id, split))
        if len(rows) >= batch_rows:
            yield pd.DataFrame(rows, columns=ROW_COLUMNS)
            rows = []
    if rows:
        yield pd.DataFrame(rows, columns=ROW_COLUMNS)


def _require_imdb_split(path: Path, split: str, n: int) -> None:
    if not n:
        raise IngestError(f"{path} has no {split} reviews in the aclImdb/{split}/pos|neg/<id>_<rating>.txt layout: pass the IMDb archive or its unpacked folder.")


def read_imdb(path: Path, strip_html: bool = True, max_review_bytes: int = MAX_REVIEW_BYTES) -> dict[str, pd.DataFrame]:
    """The whole IMDb layout in memory, a frame per split ordered by label and id (ingest streams instead)."""
    batches = list(iter_imdb(path, strip_html, max_review_bytes=max_review_bytes))
    rows = pd.concat(batches, ignore_index=True) if batches else pd.DataFrame(columns=ROW_COLUMNS)
    frames = {}
    for split in ("train", "test"):
        frame = rows[rows["split"] == split].drop(columns="split")
        _require_imdb_split(path, split, len(frame))
        frame = frame.assign(label=frame["label"].map(IMDB_LABELS.index).astype("int64"))
        frames[split] = frame.sort_values(["label", "id"], kind="stable").reset_index(drop=True)
    return frames


# --------------------------------------------------------------------------- reading tables

_COLUMN_KEYS = ("text_column", "label_column", "split_column", "rating_column", "id_column")


def first_invalid_utf8(path: Path, block_size: int = 1 << 20) -> tuple[int, int] | None:
    """(byte offset, line number) of the first byte that is not UTF-8, or None for a clean file."""
    offset, line, carry = 0, 1, b""
    with open(path, "rb") as handle:
        while True:
            block = handle.read(block_size)
            data = carry + block
            if not data:
                return None
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as err:
                if block and err.reason == "unexpected end of data":
                    # A character cut in two by the block boundary: finish it with the next block.
                    done, carry = data[: err.start], data[err.start :]
                    offset, line = offset + len(done), line + done.count(b"\n")
                    continue
                return offset + err.start, line + data[: err.start].count(b"\n")
            if not block:
                return None
            offset, line, carry = offset + len(data), line + data.count(b"\n"), b""


def _short(error: BaseException, limit: int = 160) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _header(path: Path, delimiter: str) -> list[str]:
    import csv

    with open(path, newline="", encoding="utf-8-sig") as handle:
        return next(csv.reader(handle, delimiter=delimiter), [])


class _DuplicateJsonKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json.loads' object_pairs_hook: an object naming a key twice is refused (json keeps the last silently)."""
    record: dict[str, Any] = {}
    for key, value in pairs:
        if key in record:
            raise _DuplicateJsonKey(key)
        record[key] = value
    return record


def _read_json_records(path: Path) -> pd.DataFrame:
    import pyarrow.json as pajson

    with open(path, "rb") as handle:
        opening = handle.read(256).lstrip()
    if opening.startswith(b"["):  # a .json file holding one array of objects rather than JSON Lines
        try:
            records = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_unique_keys)
        except _DuplicateJsonKey as err:
            raise IngestError(f"{path} holds an object that names the key {err.key!r} twice: keep one of them.") from None
        except json.JSONDecodeError as err:
            raise IngestError(f"{path} is not valid JSON at line {err.lineno}, column {err.colno} ({err.msg}): fix it there.") from None
        if not all(isinstance(record, dict) for record in records):
            raise IngestError(f"{path} holds a JSON array whose items are not all objects: write one object per review, e.g. {{\"text\": \"...\", \"label\": 1}}.")
        return pd.DataFrame.from_records(records)
    try:
        return pajson.read_json(path).to_pandas()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        # Mixed types in one column (label 1 on a line, "pos" on another), a key given twice in an
        # object, or a broken line: read line by line, to name the line.
        pass
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line, object_pairs_hook=_unique_keys)
            except _DuplicateJsonKey as err:
                raise IngestError(f"Line {number} of {path} names the key {err.key!r} twice: keep one of them.") from None
            except json.JSONDecodeError as err:
                raise IngestError(f"Line {number} of {path} is not valid JSON ({err.msg}): fix that line; JSON Lines holds one object per line.") from None
            if not isinstance(record, dict):
                raise IngestError(f"Line {number} of {path} is a JSON {type(record).__name__}, not an object: JSON Lines holds one object per line, e.g. {{\"text\": \"...\", \"label\": 1}}.")
            records.append(record)
    return pd.DataFrame.from_records(records)


def iter_table(path: Path, fmt: str, columns: dict[str, str], batch_rows: int | None = None) -> Iterator[pd.DataFrame]:
    """The named columns of a table (columns: config key -> column name) in batches, read with pyarrow where it can.

    CSV, TSV and Parquet stream (pyarrow's streaming CSV reader, Parquet record batches); JSON
    Lines is read whole and handed on in slices. CSV and TSV columns are read as strings and
    converted here, so a bad value is reported by row rather than as a type clash deep in a block;
    an empty cell is missing.
    """
    path = Path(path)
    batch_rows = batch_rows or store.STREAM_ROWS
    if fmt in ("csv", "tsv", "jsonl"):
        bad = first_invalid_utf8(path)
        if bad:
            raise IngestError(f"{path} is not valid UTF-8 at byte {bad[0]} (line {bad[1]}): re-save it with UTF-8 encoding (in a spreadsheet: CSV UTF-8).")
    frame = None
    try:
        if fmt in ("csv", "tsv"):
            import pyarrow.csv as pacsv

            delimiter = "," if fmt == "csv" else "\t"
            present = _header(path, delimiter)
        elif fmt == "parquet":
            schema = pq.read_schema(path)
            present = schema.names
        else:
            frame = _read_json_records(path)
            present = [str(c) for c in frame.columns]
    except IngestError:
        raise
    except Exception as err:  # pyarrow and csv raise several types for a damaged file
        raise IngestError(f"{path} could not be read as {fmt.upper()} ({_short(err)}): check that the file is complete and its extension matches its format.") from None
    for key, name in columns.items():
        if name not in present:
            shown = ", ".join(map(repr, present[:20])) + (", ..." if len(present) > 20 else "")
            raise IngestError(f"{path} has no column {name!r} for data.{key} (its columns: {shown or 'none'}): name the right one with --set data.{key}=NAME.")
        # A CSV reader takes the first of two equal names, pandas renames the second 'text.1', a Parquet
        # batch holds both: whichever it is, the column read may not be the one the user meant.
        times = present.count(name)
        if times > 1:
            raise IngestError(
                f"{path} names column {name!r} {'twice' if times == 2 else f'{times} times'} in its header, "
                f"so which one data.{key} means is unclear: rename or drop one of them."
            )
    if fmt == "parquet" and "text_column" in columns:
        kind = schema.field(columns["text_column"]).type
        value_kind = kind.value_type if pa.types.is_dictionary(kind) else kind
        if not (pa.types.is_string(value_kind) or pa.types.is_large_string(value_kind) or pa.types.is_null(value_kind)
                or getattr(pa.types, "is_string_view", lambda _: False)(value_kind)):
            raise IngestError(_not_text(columns["text_column"], path, str(kind)))
    wanted = list(dict.fromkeys(columns.values()))
    try:
        if fmt in ("csv", "tsv"):
            reader = pacsv.open_csv(
                path,
                # Blocks of about 16 MB: tens of thousands of reviews per batch.
                read_options=pacsv.ReadOptions(block_size=1 << 24),
                parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(
                    include_columns=wanted, column_types={name: pa.string() for name in wanted},
                    strings_can_be_null=True, null_values=[""],
                ),
            )
            for batch in reader:
                yield batch.to_pandas()
        elif fmt == "parquet":
            with pq.ParquetFile(path) as handle:
                for batch in handle.iter_batches(batch_size=batch_rows, columns=wanted):
                    yield batch.to_pandas()
        else:
            frame = frame[wanted].reset_index(drop=True)
            for start in range(0, len(frame), batch_rows):
                yield frame.iloc[start : start + batch_rows].reset_index(drop=True)
    except IngestError:
        raise
    except Exception as err:
        raise IngestError(f"{path} could not be read as {fmt.upper()} ({_short(err)}): fix the file there, or check that its extension matches its format.") from None


def _not_text(column: str, path: Path, kind: str) -> str:
    return f"Text column {column!r} of {path} holds {kind}, not text: point data.text_column at the column of review texts."


def _check_texts(texts: pd.Series, path: Path, cfg: DataConfig, offset: int) -> None:
    """A batch's text column holds strings (or nothing), each at most data.max_review_bytes of UTF-8.

    Numbers would otherwise be trained on as the strings "0", "1", ... without a word; CSV and TSV are
    read as strings, so this catches Parquet and JSON columns of numbers, booleans, lists or objects.
    """
    column = cfg.text_column
    if not (texts.dtype == object or isinstance(texts.dtype, pd.StringDtype)):
        raise IngestError(_not_text(column, path, str(texts.dtype)))
    if texts.dtype == object:
        not_text = texts.map(lambda v: not isinstance(v, str) and not (v is None or v is pd.NA or (isinstance(v, float) and v != v)))
        if not_text.any():
            row = _first_row(not_text, offset)
            value = texts.iloc[row - offset - 1]
            raise IngestError(
                f"Text column {column!r} of {path} holds the {type(value).__name__} {value!r} at row {row}, not text: "
                f"quote it, or point data.text_column at the column of review texts."
            )
    limit = cfg.max_review_bytes
    # Characters first (cheap), bytes only for texts long enough to pass the bound: UTF-8 spends at most 4 bytes a character.
    chars = texts.str.len().fillna(0).to_numpy()
    for position in np.flatnonzero(chars > limit // 4):
        size = len(texts.iloc[position].encode("utf-8"))
        if size > limit:
            raise IngestError(
                f"Row {offset + int(position) + 1} of {path} holds a text of {size:,} bytes in column {column!r}, "
                f"more than data.max_review_bytes ({limit:,}): shorten or drop that row, or raise data.max_review_bytes."
            )


def _first_row(mask: pd.Series, offset: int = 0) -> int:
    """The 1-based row number (header not counted) of the first True in mask, for a batch starting offset rows in."""
    return offset + int(np.flatnonzero(mask.to_numpy(dtype=bool))[0]) + 1


def _whole_number(value: Any) -> int | None:
    """value as an exact int (ids can exceed float precision), None when missing; ValueError when not whole."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    text = value.strip() if isinstance(value, str) else value
    try:
        return int(text)
    except (TypeError, ValueError):
        number = float(text)  # "5.0" is whole; "4.5" and "five" are not
        if not number.is_integer():
            raise ValueError(value) from None
        return int(number)


def _whole_numbers(values: pd.Series, path: Path, key: str, column: str, offset: int = 0) -> pd.Series:
    """A column of whole numbers as nullable int64; the first value that is not one is named by row."""
    numbers = []
    for row, value in enumerate(values.tolist()):
        try:
            numbers.append(_whole_number(value))
        except (TypeError, ValueError, OverflowError):
            raise IngestError(
                f"Column {column!r} of {path} (data.{key}) holds {value!r} at row {offset + row + 1}, not a whole number: "
                f"fix that value or leave data.{key} unset."
            ) from None
    return pd.array(numbers, dtype="Int64")


def class_names(values: pd.Series) -> pd.Series:
    """Each label as the string ingest.json records: 1 and 1.0 both become "1", booleans "true"/"false".

    Text labels lose surrounding spaces and case (casefold): "Positive", "positive " and "POSITIVE"
    are one class, "positive", not three that the model would learn to tell apart.
    """
    if pd.api.types.is_bool_dtype(values):
        return values.map(lambda v: "true" if v else "false").astype(object)
    if pd.api.types.is_numeric_dtype(values):
        numbers = values.astype("float64")
    else:
        names = values.map(lambda v: str(v).lower() if isinstance(v, (bool, np.bool_)) else str(v).strip().casefold()).astype(object)
        numbers = pd.to_numeric(names, errors="coerce")
        if numbers.isna().any():
            return names
    return numbers.map(lambda v: str(int(v)) if float(v).is_integer() else repr(float(v))).astype(object)


def sorted_classes(names: Iterable[str]) -> list[str]:
    """Distinct class names in their recorded order: by value when all are numbers, else alphabetically."""
    unique = sorted(set(names))
    numbers = pd.to_numeric(pd.Series(unique, dtype=object), errors="coerce")
    if not numbers.isna().any():
        return [name for _, name in sorted(zip(numbers.tolist(), unique))]
    return unique


def _count_missing(missing: dict[str, list[int]], key: str, mask: pd.Series, offset: int) -> None:
    """Tally rows the table lacks a value in (how many, the first row): reported once the file has streamed by."""
    if mask.any():
        tally = missing.setdefault(key, [0, _first_row(mask, offset)])
        tally[0] += int(mask.sum())


def _raise_missing(missing: dict[str, list[int]], path: Path, cfg: DataConfig) -> None:
    if "text" in missing:
        n, row = missing["text"]
        raise IngestError(f"{path} has {n} missing or empty texts in column {cfg.text_column!r}, the first at row {row}: drop or fill those rows.")
    if "label" in missing:
        n, row = missing["label"]
        raise IngestError(f"{path} has {n} missing labels in column {cfg.label_column!r}, the first at row {row}: drop those rows or fill in their labels.")


def _note_spellings(labels: pd.Series, names: pd.Series, spellings: dict[str, set[str]]) -> None:
    """Record which raw text labels became each class name, to report the ones class_names merged."""
    if pd.api.types.is_numeric_dtype(labels) or pd.api.types.is_bool_dtype(labels):
        return
    pairs = pd.DataFrame({"raw": labels.to_numpy(dtype=object), "name": names.to_numpy(dtype=object)}).drop_duplicates()
    for raw, name in pairs.itertuples(index=False):
        # Only spellings folded by case and spaces: "1.0" becoming "1" is number formatting, not a spelling.
        if isinstance(raw, str) and raw.strip().casefold() == name:
            spellings.setdefault(name, set()).add(raw)


def _table_rows(
    raw: pd.DataFrame, path: Path, cfg: DataConfig, split_values: bool, offset: int, missing: dict[str, list[int]],
    spellings: dict[str, set[str]] | None = None,
) -> pd.DataFrame:
    """One batch of table rows as ROW_COLUMNS (text cleaned, label as class name), checked; offset rows came before it.

    Rows without a text or label are tallied in missing (the caller reports them after the file) and left out;
    spellings, when given, collects the raw label spellings behind each class name.
    """
    texts = raw[cfg.text_column]
    if isinstance(texts.dtype, pd.CategoricalDtype):  # a dictionary-encoded Parquet column: check and read its values
        texts = texts.astype(object)
    _check_texts(texts, path, cfg, offset)
    blank = texts.isna() | texts.astype(object).map(lambda v: isinstance(v, str) and not v.strip())
    _count_missing(missing, "text", blank, offset)
    labels = raw[cfg.label_column]
    _count_missing(missing, "label", labels.isna(), offset)
    if missing:
        return pd.DataFrame(columns=ROW_COLUMNS)  # the file fails once it has been read: no point in converting
    names = class_names(labels)
    if spellings is not None:
        _note_spellings(labels, names, spellings)
    frame = pd.DataFrame(
        {
            "text": [clean_text(str(t), cfg.strip_html) for t in texts],
            "label": names.to_numpy(dtype=object),
            "rating": _whole_numbers(raw[cfg.rating_column], path, "rating_column", cfg.rating_column, offset)
            if cfg.rating_column else pd.array([None] * len(raw), dtype="Int64"),
        }
    )
    if cfg.id_column:
        ids = raw[cfg.id_column]
        if ids.isna().any():
            raise IngestError(f"Column {cfg.id_column!r} of {path} (data.id_column) is empty at row {_first_row(ids.isna(), offset)}: give every row an id or leave data.id_column unset.")
        frame["id"] = _whole_numbers(ids, path, "id_column", cfg.id_column, offset).astype("int64")
    else:
        frame["id"] = np.arange(offset + 1, offset + len(raw) + 1, dtype=np.int64)  # the row number, as error messages count rows
    frame["split"] = "train"
    if split_values:
        split = raw[cfg.split_column].astype(object).map(lambda v: v.strip().lower() if isinstance(v, str) else v)
        bad = ~split.isin(SPLIT_VALUES)
        if bad.any():
            row = _first_row(bad)
            raise IngestError(
                f"Split column {cfg.split_column!r} of {path} holds {raw[cfg.split_column].iloc[row - 1]!r} at row {offset + row}: use only train or test there "
                f"(validation rows are carved from train by data.val_fraction), or leave data.split_column unset."
            )
        frame["split"] = split.to_numpy(dtype=object)
    return frame


def _table_batches(
    cfg: DataConfig, source: dict[str, Any], batch_rows: int, seen: dict[str, int], spellings: dict[str, set[str]] | None = None
) -> Iterator[pd.DataFrame]:
    """A table source (one file, or a train/test pair) as batches of ROW_COLUMNS; seen counts each file's rows.

    spellings, when given, collects each class name's raw label spellings (see _note_spellings).
    """
    files = [(Path(source["path"]), source["format"]["path"], "train")]
    if source.get("test_path"):
        files.append((Path(source["test_path"]), source["format"]["test_path"], "test"))
    split_values = bool(cfg.split_column) and len(files) == 1
    columns = {key: getattr(cfg, key) for key in _COLUMN_KEYS if getattr(cfg, key) and (key != "split_column" or split_values)}
    for path, fmt, split in files:
        offset, missing = 0, {}
        for raw in iter_table(path, fmt, columns, batch_rows):
            rows = _table_rows(raw, path, cfg, split_values, offset, missing, spellings)
            if not split_values:
                rows["split"] = split
            offset += len(raw)
            yield rows
        _raise_missing(missing, path, cfg)
        seen[str(path)] = offset


def _check_table(cfg: DataConfig, source: dict[str, Any], seen: dict[str, int], meta: pd.DataFrame) -> list[str]:
    """After the table source streamed by: each file had rows, each split has rows, and the class names in index order."""
    for path, n in seen.items():
        if not n:
            raise IngestError(f"{path} has no rows: pass a table with a header and at least one labelled text per class.")
    if cfg.split_column and not source.get("test_path"):
        for wanted in SPLIT_VALUES:
            if not (meta["split"] == wanted).any():
                raise IngestError(f"Split column {cfg.split_column!r} of {source['path']} marks no {wanted} rows: mark some, or leave data.split_column unset to split by data.test_size.")
    where = f"{source['path']} and {source['test_path']}" if source.get("test_path") else str(source["path"])
    # One mapping over every file, so train and test agree on what index 2 means.
    classes = sorted_classes(meta["label"].unique())
    if len(classes) > cfg.max_classes:
        raise IngestError(
            f"Label column {cfg.label_column!r} of {where} has {len(classes)} distinct values, more than data.max_classes={cfg.max_classes}, so it looks like free text, not classes: "
            f"point data.label_column at the class column, or raise data.max_classes."
        )
    if len(classes) < 2:
        raise IngestError(
            f"Label column {cfg.label_column!r} of {where} holds one class only ({classes[0]!r}): a classifier needs at least two; add rows of other classes or check data.label_column."
        )
    return classes


def _check_train_classes(cfg: DataConfig, source: dict[str, Any], meta: pd.DataFrame, orders: dict[str, pd.DataFrame], classes: list[str]) -> None:
    """Every class reaches the train split; else the data is at fault, not validate's class balance.

    Without this, a class that only the test rows hold got validate's advice to lower
    validate.min_class_fraction, which hides the problem: the model can never predict that class.
    """
    trained = set(orders["train"]["label"].unique().tolist())
    absent = [k for k in range(len(classes)) if k not in trained]
    if not absent:
        return
    k = absent[0]
    of_class = meta["label"] == k
    outside_test = int((of_class & (meta["split"] == "train")).sum())
    if not outside_test:
        n_test = int((of_class & (meta["split"] == "test")).sum())
        where = source.get("test_path") or source.get("path") or "the synthetic corpus"
        raise IngestError(
            f"Class {classes[k]!r} appears only in the test rows ({where}), never in train: "
            f"add train rows of that class or drop its {n_test} test row{'s' if n_test != 1 else ''}."
        )
    carved = "the test and validation splits" if cfg.source == "table" and not cfg.test_path and not cfg.split_column else "the validation split"
    raise IngestError(
        f"Class {classes[k]!r} has too few rows in {source.get('path') or 'the synthetic corpus'} ({outside_test}) for any to be left to train on "
        f"after {carved}: add rows of that class or drop them."
    )


def _logger() -> logging.Logger | logging.LoggerAdapter:
    """Prefect's run logger inside a task, this module's logger outside one (tests, the bench)."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def _table_details(cfg: DataConfig, source: dict[str, Any]) -> dict[str, Any]:
    if source.get("test_path"):
        test_from = f"test file {Path(source['test_path']).name}"
    elif cfg.split_column:
        test_from = f"split column {cfg.split_column!r}"
    else:
        test_from = f"stratified, seeded split of {cfg.test_size:g} (data.test_size)"
    return {
        "format": source["format"],
        "columns": {key: getattr(cfg, key) for key in _COLUMN_KEYS},
        "test_from": test_from,
        "strip_html": cfg.strip_html,
    }


# --------------------------------------------------------------------------- reading Keras' imdb.npz

# imdb.npz stores ragged sequences as numpy object arrays, which numpy can only save as a pickle
# stream: np.load refuses them unless allow_pickle=True, and a pickle can run any code it names.
# So object arrays are rebuilt with an unpickler that allows numpy's array-building functions
# and nothing else (the approach Keras' own load_data takes); numeric arrays load with pickling off.
# Still, read only imdb.npz files you trust (the README says so).
_NUMPY_PICKLE_GLOBALS = frozenset(
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
) | {("numpy", "ndarray"), ("numpy", "dtype")}
KERAS_IMDB_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it asks to run {module}.{name}, which an array never needs")


def _read_npy(raw: bytes) -> np.ndarray:
    import io

    handle = io.BytesIO(raw)
    try:
        return np.lib.format.read_array(handle, allow_pickle=False)
    except ValueError:  # an object array: read past the header, then unpickle numpy types only
        handle.seek(0)
        version = np.lib.format.read_magic(handle)
        # Format 3.0 differs from 2.0 only in the header's text encoding, so 2.0's reader skips both.
        (np.lib.format.read_array_header_1_0 if version[0] == 1 else np.lib.format.read_array_header_2_0)(handle)
        return _NumpyOnlyUnpickler(handle).load()


def _word_index(path: Path) -> dict[int, str]:
    """id -> word from Keras' imdb_word_index.json ({word: id})."""
    try:
        index = json.loads(Path(path).read_text(encoding="utf-8"))
        return {int(i): str(word) for word, i in index.items()}
    except (ValueError, AttributeError, TypeError) as err:
        raise IngestError(f"{path} is not a word index ({_short(err)}): pass Keras' imdb_word_index.json, a JSON object of word to id.") from None


def read_keras_imdb(path: Path, word_index_path: str | Path | None = None) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Keras' imdb.npz as {train, test} frames of text, and the class names.

    The file holds word ids as imdb_word_index.json numbers them (1 = "the"), without the start id
    and the index_from=3 shift that keras.datasets.imdb.load_data adds when loading. Downstream
    steps need text, so each id becomes its word from the word index, or the token "w<id>" without
    one (or for an id the index lacks); encode then builds its own vocabulary with the same
    reserved ids (0 pad, 1 start, 2 out of vocabulary) and encode.num_words.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            present = [name[: -len(".npy")] for name in archive.namelist() if name.endswith(".npy")]
            missing = [name for name in KERAS_IMDB_ARRAYS if name not in present]
            if missing:
                raise IngestError(
                    f"{path} has no array {missing[0]!r} (its arrays: {', '.join(present) or 'none'}): pass Keras' imdb.npz, which holds x_train, y_train, x_test and y_test."
                )
            arrays = {name: _read_npy(archive.read(f"{name}.npy")) for name in KERAS_IMDB_ARRAYS}
    except IngestError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, pickle.UnpicklingError, AttributeError, TypeError) as err:
        raise IngestError(f"{path} could not be read as Keras' imdb.npz ({_short(err)}): download it again, or pass a file saved with numpy.savez.") from None
    words = _word_index(Path(word_index_path)) if word_index_path else {}

    all_labels = np.concatenate([np.asarray(arrays["y_train"]).reshape(-1), np.asarray(arrays["y_test"]).reshape(-1)])
    if all_labels.dtype.kind not in "iub" and not (all_labels.dtype.kind == "f" and np.all(all_labels % 1 == 0)):
        raise IngestError(f"{path} holds labels of type {all_labels.dtype} in y_train/y_test: they must be whole numbers (0 and 1 for IMDb).")
    values = sorted(int(v) for v in np.unique(all_labels))
    classes = IMDB_LABELS if set(values) <= {0, 1} else [str(v) for v in values]
    codes = {v: (v if classes is IMDB_LABELS else i) for i, v in enumerate(values)}

    frames = {}
    for split in ("train", "test"):
        sequences, y = arrays[f"x_{split}"], np.asarray(arrays[f"y_{split}"]).reshape(-1)
        if len(sequences) != len(y):
            raise IngestError(f"{path} holds {len(sequences)} x_{split} sequences but {len(y)} y_{split} labels: pass an unmodified imdb.npz.")
        texts = []
        for row, sequence in enumerate(sequences):
            try:
                texts.append(" ".join(words.get(i) or f"w{int(i)}" for i in sequence))
            except (TypeError, ValueError):
                raise IngestError(f"x_{split}[{row}] of {path} is not a list of word ids: pass Keras' imdb.npz (object arrays of integer lists).") from None
        frames[split] = pd.DataFrame(
            {
                "text": texts,
                "label": np.array([codes[int(v)] for v in y], dtype=np.int64),
                "rating": pd.array([None] * len(y), dtype="Int64"),
                "id": np.arange(len(y), dtype=np.int64),  # the position in x_train / x_test
            }
        )
    return frames, classes


# --------------------------------------------------------------------------- splitting and writing


def stratified_sample(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most n rows, each class keeping its share, chosen reproducibly."""
    if n >= len(frame):
        return frame
    rng = np.random.default_rng(seed)
    keep = []
    for _, group in frame.groupby("label", sort=True):
        share = max(1, round(n * len(group) / len(frame)))
        keep.append(group.index.to_numpy()[rng.permutation(len(group))[:share]])
    return frame.loc[np.sort(np.concatenate(keep))].reset_index(drop=True)


def stratified_split(frame: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rest, held_out): held_out takes `fraction` of every class, shuffled with the seed.

    Keras' validation_split takes the tail of the arrays unshuffled; IMDb is ordered by class,
    so that tail is all one class. This split is why the validation set is balanced.
    """
    rng = np.random.default_rng(seed)
    held = []
    for _, group in frame.groupby("label", sort=True):
        order = group.index.to_numpy()[rng.permutation(len(group))]
        held.append(order[: max(1, round(fraction * len(group)))])
    held_index = np.concatenate(held)
    mask = frame.index.isin(held_index)
    shuffle = lambda part: part.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # noqa: E731
    return shuffle(frame[~mask]), shuffle(frame[mask])


BUCKET_BATCHES = 10  # positions per bucket file, in batches: see _write_splits
SYNTHETIC_CHUNK = 50_000  # reviews generated per seed; fixed, so the corpus never depends on the batch size


def _synthetic_batches(cfg: DataConfig, batch_rows: int) -> Iterator[pd.DataFrame]:
    """source=synthetic as batches of ROW_COLUMNS: train from data.seed, test from data.seed + 1, chunk by chunk."""
    for split, seed in (("train", cfg.seed), ("test", cfg.seed + 1)):
        for chunk, start in enumerate(range(0, cfg.synthetic_reviews, SYNTHETIC_CHUNK)):
            n = min(SYNTHETIC_CHUNK, cfg.synthetic_reviews - start)
            # The first chunk keeps the plain seed, so a corpus of one chunk is what it always was.
            frame = synthetic_reviews(n, cfg.synthetic_positive_fraction, seed=seed if chunk == 0 else [seed, chunk])
            frame = frame.assign(
                text=[clean_text(t, cfg.strip_html) for t in frame["text"]],
                label=[IMDB_LABELS[k] for k in frame["label"]],
                id=frame["id"] + start,
                split=split,
            )[ROW_COLUMNS]
            for first in range(0, n, batch_rows):
                yield frame.iloc[first : first + batch_rows]


def _frame_batches(frames: dict[str, pd.DataFrame], classes: list[str], batch_rows: int) -> Iterator[pd.DataFrame]:
    """Frames already in memory (Keras' imdb.npz is read whole) as batches of ROW_COLUMNS."""
    for split, frame in frames.items():
        for start in range(0, len(frame), batch_rows):
            part = frame.iloc[start : start + batch_rows]
            yield part.assign(label=[classes[k] for k in part["label"]], split=split)[ROW_COLUMNS]


def _spill(batches: Iterable[pd.DataFrame], target: Path) -> None:
    """Write every batch, as it comes, to one uncompressed Parquet file that ingest_reviews reads back twice."""
    with pq.ParquetWriter(target, _SPILL_SCHEMA, compression="none", use_dictionary=False) as writer:
        for batch in batches:
            if len(batch):
                writer.write_table(pa.Table.from_pandas(batch[ROW_COLUMNS], schema=_SPILL_SCHEMA, preserve_index=False))


def _split_orders(cfg: DataConfig, meta: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Which spilled rows go to train, val and test, in which order: decided on labels and ids alone.

    meta holds one row per spilled review (label as class index, id, split, row = its place in the
    spill). The decisions are those made when the corpus sat in memory: IMDb ordered by label and
    id, a table's test carved by data.test_size, data.max_reviews per split, then a stratified
    validation split from train and a shuffled test split, all seeded.
    """
    raw = {name: meta[meta["split"] == name].drop(columns="split").reset_index(drop=True) for name in SPLIT_VALUES}
    if cfg.source == "imdb":
        raw = {name: part.sort_values(["label", "id"], kind="stable").reset_index(drop=True) for name, part in raw.items()}
    elif cfg.source == "table" and not cfg.test_path and not cfg.split_column:
        raw["train"], raw["test"] = stratified_split(raw["train"], cfg.test_size, cfg.seed)
    if cfg.max_reviews:
        raw = {name: stratified_sample(part, cfg.max_reviews, cfg.seed) for name, part in raw.items()}
    train, val = stratified_split(raw["train"], cfg.val_fraction, cfg.seed)
    return {"train": train, "val": val, "test": raw["test"].sample(frac=1.0, random_state=cfg.seed).reset_index(drop=True)}


def _write_splits(spill: Path, orders: dict[str, pd.DataFrame], classes: list[str], out_dir: Path, work: Path, batch_rows: int) -> None:
    """Write each split's Parquet file in its final order, holding no more than a bucket of text.

    Every review's place (split, position) is known from orders. One pass over the spill sends each
    batch's rows to bucket files of batch_rows consecutive positions; then each split is written
    bucket by bucket, each bucket sorted in memory: two reads and writes of the text, whatever its size.
    A bucket holds BUCKET_BATCHES batches' worth of positions, so a million reviews need tens of bucket
    files open at once, not hundreds.
    """
    bucket_rows = batch_rows * BUCKET_BATCHES
    n_rows = parquet_rows(spill)
    dest_split = np.full(n_rows, -1, dtype=np.int8)
    dest_pos = np.zeros(n_rows, dtype=np.int64)
    for code, name in enumerate(SPLITS):
        rows = orders[name]["row"].to_numpy()
        dest_split[rows], dest_pos[rows] = code, np.arange(len(rows))
    label_index = {name: i for i, name in enumerate(classes)}
    writers: dict[tuple[int, int], pq.ParquetWriter] = {}
    start = 0
    try:
        for batch in iter_parquet(spill, ["text", "label", "rating", "id"], batch_rows):
            stop = start + len(batch)
            where, place = dest_split[start:stop], dest_pos[start:stop]
            batch = batch.assign(label=batch["label"].map(label_index).astype("int64"), rating=batch["rating"].astype("Int64"), pos=place)
            for code in np.unique(where[where >= 0]):
                chosen = batch[where == code]
                for bucket, piece in chosen.groupby(chosen["pos"].to_numpy() // bucket_rows, sort=True):
                    table = pa.Table.from_pandas(piece, preserve_index=False)
                    key = (int(code), int(bucket))
                    if key not in writers:
                        writers[key] = pq.ParquetWriter(
                            work / f"bucket-{key[0]}-{key[1]}.parquet", table.schema, compression="none", use_dictionary=False
                        )
                    writers[key].write_table(table)
            start = stop
    finally:
        for writer in writers.values():
            writer.close()
    for code, name in enumerate(SPLITS):
        with atomic_path(out_dir / f"{name}.parquet") as tmp:
            writer = None
            for bucket in range(-(-len(orders[name]) // bucket_rows)):
                piece = pq.read_table(work / f"bucket-{code}-{bucket}.parquet").to_pandas()
                piece = piece.sort_values("pos", kind="stable")[["text", "label", "rating", "id"]]
                table = pa.Table.from_pandas(piece, schema=_SCHEMA, preserve_index=False)
                writer = writer or pq.ParquetWriter(tmp, table.schema, compression="zstd")
                writer.write_table(table)
            if writer is None:  # an empty split still gets its file, with the columns
                pq.write_table(_SCHEMA.empty_table(), tmp, compression="zstd")
            else:
                writer.close()


def ingest_reviews(cfg: DataConfig, source: dict[str, Any], out_dir: Path, batch_rows: int | None = None) -> dict[str, Any]:
    """Read the source, cap it at max_reviews per split, carve a stratified validation split, write Parquet.

    The source streams through in batches of batch_rows (tasks.store.STREAM_ROWS): spilled to disk
    as read, split on labels and ids alone, and written out bucket by bucket, so memory holds a batch
    of text, never the corpus. ingest.json records the class names in index order (labels), counts
    per split, and the source.
    """
    batch_rows = batch_rows or store.STREAM_ROWS
    out_dir = Path(out_dir)
    details: dict[str, Any] = {}
    seen: dict[str, int] = {}
    spellings: dict[str, set[str]] = {}
    classes: list[str] | None = IMDB_LABELS
    if cfg.source == "synthetic":
        batches: Iterable[pd.DataFrame] = _synthetic_batches(cfg, batch_rows)
    elif cfg.source == "table":
        batches, classes, details = _table_batches(cfg, source, batch_rows, seen, spellings), None, _table_details(cfg, source)
    elif cfg.source == "keras_imdb":
        frames, classes = read_keras_imdb(Path(source["path"]), source.get("word_index_path"))
        batches = _frame_batches(frames, classes, batch_rows)
    else:
        batches = iter_imdb(Path(source["path"]), cfg.strip_html, batch_rows, cfg.max_review_bytes)
    work = Path(tempfile.mkdtemp(prefix=".ingest-", dir=out_dir))
    try:
        spill = work / "rows.parquet"
        _spill(batches, spill)
        meta = pq.read_table(spill, columns=["label", "id", "split"]).to_pandas()
        if cfg.source == "imdb":
            for split in SPLIT_VALUES:
                _require_imdb_split(Path(source["path"]), split, int((meta["split"] == split).sum()))
        if classes is None:
            classes = _check_table(cfg, source, seen, meta)
        meta["label"] = meta["label"].map({name: i for i, name in enumerate(classes)}).astype("int64")
        meta["row"] = np.arange(len(meta), dtype=np.int64)
        orders = _split_orders(cfg, meta)
        _check_train_classes(cfg, source, meta, orders, classes)
        _write_splits(spill, orders, classes, out_dir, work, batch_rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    counts = {name: {classes[k]: int(v) for k, v in frame["label"].value_counts().sort_index().items()} for name, frame in orders.items()}
    summary = {
        "labels": classes,
        "n": {name: len(frame) for name, frame in orders.items()},
        "label_counts": counts,
        "source": source,
        # The cleaning every text went through; encode hands it on in vocab.json so prediction repeats it.
        "strip_html": cfg.strip_html and cfg.source != "keras_imdb",
    }
    if details:
        summary["input"] = details
    merged = {name: sorted(spellings[name]) for name in classes if len(spellings.get(name, ())) > 1}
    if merged:
        summary["label_spellings_merged"] = merged
        _logger().info(
            "Label spellings merged into one class each (case and surrounding spaces are ignored): %s.",
            "; ".join(f"{', '.join(map(repr, raw))} -> {name!r}" for name, raw in merged.items()),
        )
    write_json(out_dir / "ingest.json", summary)
    return {"n": summary["n"], "labels": classes}


def load_split(ingest_dir: Path, split: str) -> pd.DataFrame:
    return pd.read_parquet(Path(ingest_dir) / f"{split}.parquet")


@task(name="locate-source")
def locate_source_task(section: dict, data_dir: str = "data") -> dict[str, Any]:
    """Find (or download once) the input; retried with backoff, as networks and disks hiccup."""
    return locate_source(DataConfig(**section), Path(data_dir))


@task(name="ingest", cache_policy=StepCachePolicy(step="ingest"))
def ingest_task(root: str, section: dict, upstream: dict, source: dict) -> StepOutput:
    return produce_step(root, "ingest", section, upstream, lambda out: ingest_reviews(DataConfig(**section), source, out), source=source)
