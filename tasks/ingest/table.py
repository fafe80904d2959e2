"""source=table: labelled texts in a CSV, TSV, Parquet or JSON Lines file, or a train/test pair of them.

The test rows come from data.test_path, from data.split_column, or else a stratified, seeded share
(data.test_size) of the one file. Labels become class names (see class_names), which are checked
once every row has streamed by.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tasks import store
from tasks.config import DataConfig
from tasks.ingest.base import ROW_COLUMNS, SPLIT_VALUES, IngestError, Reading, Source, short
from tasks.remote_input import Location, as_location, check_input, open_input, read_chunks
from tasks.remote_input import fingerprint as input_fingerprint
from tasks.ingest.splits import stratified_split
from tasks.store import fingerprint
from tasks.input_files import COLUMN_KEYS as _COLUMN_KEYS
from tasks.input_files import TABLE_FORMATS, check_columns, check_table_keys, csv_dialect, csv_header, table_format  # noqa: F401
from tasks.text import clean_text


class TableSource(Source):
    def locate(self, cfg: DataConfig, data_dir: Path) -> dict[str, Any]:
        """data.path (and data.test_path when set), each with its format, fingerprinted together (tasks/remote_input.py:
        a local file by its bytes, a URL's object by its version/ETag and size)."""
        check_table_keys(cfg)
        local = _input(cfg.path, "data.path", "a .csv, .tsv, .parquet or .jsonl table")
        formats = {"path": table_format(local)}
        test = None
        if cfg.test_path:
            test = _input(cfg.test_path, "data.test_path", "the test table")
            formats["test_path"] = table_format(test)
        digest = fingerprint([input_fingerprint(local, "data.path"), input_fingerprint(test, "data.test_path") if test else None])
        return {"source": "table", "path": str(local), "test_path": str(test) if test else None, "format": formats, "fingerprint": digest}

    def read(self, cfg: DataConfig, located: dict[str, Any], batch_rows: int) -> Reading:
        rows_per_file: dict[str, int] = {}
        spellings: dict[str, set[str]] = {}
        details = _table_details(cfg, located)
        batches = _table_batches(cfg, located, batch_rows, rows_per_file, spellings, details.get("dropped_rows"), details["dialect"])
        return Reading(batches, details=details, rows_per_file=rows_per_file, spellings=spellings)

    def name_classes(self, cfg: DataConfig, located: dict[str, Any], reading: Reading, meta: pd.DataFrame) -> list[str]:
        return _check_table(cfg, located, reading.rows_per_file, meta)

    def carves_test(self, cfg: DataConfig) -> bool:
        return not cfg.test_path and not cfg.split_column

    def test_split(self, cfg: DataConfig, raw: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
        """The test file's or split column's rows, else a stratified data.test_size of the one file."""
        if self.carves_test(cfg):
            raw["train"], raw["test"] = stratified_split(raw["train"], cfg.test_size, cfg.seed)
        return raw


SOURCE = TableSource()


def _input(text: str, key: str, what: str) -> Location:
    """A local file (resolved) or a URL (kept as spelt) that is there to read; one sentence otherwise."""
    location = as_location(text)
    found = check_input(location, key, what)
    return location if isinstance(location, str) else Path(found["name"])


# --------------------------------------------------------------------------- reading the file


def first_invalid_utf8(path: Location, block_size: int = 1 << 20) -> tuple[int, int] | None:
    """(byte offset, line number) of the first byte that is not UTF-8, or None for a clean file (or URL, streamed)."""
    offset, line, carry = 0, 1, b""
    with open_input(as_location(path)) as handle:
        while True:
            block = next(read_chunks(handle, path, size=block_size), b"")
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


def _read_json_records(path: Location) -> pd.DataFrame:
    import pyarrow.json as pajson

    with open_input(path) as handle:  # JSON is read whole anyway (see iter_table)
        data = b"".join(read_chunks(handle, path))
    if data.lstrip()[:1] == b"[":  # a .json file holding one array of objects rather than JSON Lines
        try:
            records = json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys)
        except _DuplicateJsonKey as err:
            raise IngestError(f"{path} holds an object that names the key {err.key!r} twice: keep one of them.") from None
        except json.JSONDecodeError as err:
            raise IngestError(f"{path} is not valid JSON at line {err.lineno}, column {err.colno} ({err.msg}): fix it there.") from None
        if not all(isinstance(record, dict) for record in records):
            raise IngestError(f"{path} holds a JSON array whose items are not all objects: write one object per review, e.g. {{\"text\": \"...\", \"label\": 1}}.")
        return pd.DataFrame.from_records(records)
    try:
        return pajson.read_json(io.BytesIO(data)).to_pandas()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        # Mixed types in one column (label 1 on a line, "pos" on another), a key given twice in an
        # object, or a broken line: read line by line, to name the line.
        pass
    records = []
    with io.StringIO(data.decode("utf-8"), newline=None) as handle:
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


def iter_table(path: Location, fmt: str, columns: dict[str, str], batch_rows: int | None = None,
               dialect: dict[str, Any] | None = None) -> Iterator[pd.DataFrame]:
    """The named columns of a table (columns: config key -> column name) in batches, read with pyarrow where it can.

    CSV, TSV and Parquet stream (pyarrow's streaming CSV reader, Parquet record batches); JSON
    Lines is read whole and handed on in slices. CSV and TSV columns are read as strings and
    converted here, so a bad value is reported by row rather than as a type clash deep in a block;
    an empty cell is missing. path may be a URL (tasks/remote_input.py): its object is streamed the same way.
    """
    path = as_location(path)
    batch_rows = batch_rows or store.STREAM_ROWS
    if fmt in ("csv", "tsv", "jsonl"):
        bad = first_invalid_utf8(path)
        if bad:
            raise IngestError(f"{path} is not valid UTF-8 at byte {bad[0]} (line {bad[1]}): re-save it with UTF-8 encoding (in a spreadsheet: CSV UTF-8).")
    frame = None
    try:
        if fmt in ("csv", "tsv"):
            import pyarrow.csv as pacsv

            dialect = dialect or csv_dialect(path, fmt)  # ingest's, decided once for ingest.json and the reading
            delimiter, quoted = dialect["separator"], dialect["quoting"]
            present = csv_header(path, delimiter)
        elif fmt == "parquet":
            with open_input(path, seekable=True) as handle:
                schema = pq.read_schema(handle)
            present = schema.names
        else:
            frame = _read_json_records(path)
            present = [str(c) for c in frame.columns]
    except IngestError:
        raise
    except Exception as err:  # pyarrow and csv raise several types for a damaged file
        raise IngestError(f"{path} could not be read as {fmt.upper()} ({short(err)}): check that the file is complete and its extension matches its format.") from None
    check_columns(path, present, columns)
    if fmt == "parquet" and "text_column" in columns:
        kind = schema.field(columns["text_column"]).type
        value_kind = kind.value_type if pa.types.is_dictionary(kind) else kind
        if not (pa.types.is_string(value_kind) or pa.types.is_large_string(value_kind) or pa.types.is_null(value_kind)
                or getattr(pa.types, "is_string_view", lambda _: False)(value_kind)):
            raise IngestError(_not_text(columns["text_column"], path, str(kind)))
    wanted = list(dict.fromkeys(columns.values()))
    try:
        if fmt in ("csv", "tsv"):
            stream = open_input(path)
            reader = pacsv.open_csv(
                stream,
                # Blocks of about 16 MB: tens of thousands of reviews per batch.
                read_options=pacsv.ReadOptions(block_size=1 << 24),
                parse_options=pacsv.ParseOptions(delimiter=delimiter, quote_char='"' if quoted else False, newlines_in_values=quoted),
                convert_options=pacsv.ConvertOptions(
                    include_columns=wanted, column_types={name: pa.string() for name in wanted},
                    strings_can_be_null=True, null_values=[""],
                ),
            )
            with stream:
                for batch in reader:
                    yield batch.to_pandas()
        elif fmt == "parquet":
            with open_input(path, seekable=True) as stream, pq.ParquetFile(stream) as handle:
                for batch in handle.iter_batches(batch_size=batch_rows, columns=wanted):
                    yield batch.to_pandas()
        else:
            frame = frame[wanted].reset_index(drop=True)
            for start in range(0, len(frame), batch_rows):
                yield frame.iloc[start : start + batch_rows].reset_index(drop=True)
    except IngestError:
        raise
    except Exception as err:
        raise IngestError(f"{path} could not be read as {fmt.upper()} ({short(err)}): fix the file there, or check that its extension matches its format.") from None


# --------------------------------------------------------------------------- its rows, checked


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
    leave_out = "or leave them out with --set data.incomplete_rows=drop"
    if "text" in missing:
        n, row = missing["text"]
        raise IngestError(f"{path} has {n} missing or empty texts in column {cfg.text_column!r}, the first at row {row}: drop or fill those rows, {leave_out}.")
    if "label" in missing:
        n, row = missing["label"]
        raise IngestError(f"{path} has {n} missing labels in column {cfg.label_column!r}, the first at row {row}: drop those rows or fill in their labels, {leave_out}.")


def _record_dropped(missing: dict[str, list[int]], path: Path, dropped: dict[str, Any]) -> None:
    """data.incomplete_rows drop: the rows left out of one file, in ingest.json's input.dropped_rows and the step's log."""
    if not missing:
        return
    dropped[str(path)] = {"without_text": missing.get("text", [0])[0], "without_label": missing.get("label", [0])[0],
                          "first_row": min(row for _, row in missing.values())}
    from tasks.logs import step_logger

    step_logger().warning("Left out rows of %s (data.incomplete_rows drop): %s without a text, %s without a label, the first at row %s.",
                          path, dropped[str(path)]["without_text"], dropped[str(path)]["without_label"], dropped[str(path)]["first_row"])


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
    if missing and cfg.incomplete_rows == "error":
        return pd.DataFrame(columns=ROW_COLUMNS)  # the file fails once it has been read: no point in converting
    # data.incomplete_rows drop: the rows without a text or label are read (their row numbers stay theirs) and left out.
    keep = ~(blank | labels.isna()).to_numpy()
    names = class_names(labels) if keep.all() else class_names(labels[keep]).reindex(labels.index)
    if spellings is not None:
        _note_spellings(labels[keep], names[keep], spellings)
    frame = pd.DataFrame(
        {
            "text": [clean_text(str(t), cfg.strip_html) if k else "" for t, k in zip(texts, keep)],
            "label": names.to_numpy(dtype=object),
            "rating": _whole_numbers(raw[cfg.rating_column], path, "rating_column", cfg.rating_column, offset)
            if cfg.rating_column else pd.array([None] * len(raw), dtype="Int64"),
        }
    )
    if cfg.id_column:
        ids = raw[cfg.id_column].where(keep, 0)  # a row left out needs no id
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
    return frame if keep.all() else frame[keep].reset_index(drop=True)


def _table_batches(
    cfg: DataConfig, source: dict[str, Any], batch_rows: int, rows_per_file: dict[str, int], spellings: dict[str, set[str]] | None = None,
    dropped: dict[str, Any] | None = None, dialects: dict[str, dict[str, Any]] | None = None,
) -> Iterator[pd.DataFrame]:
    """A table source (one file, or a train/test pair) as batches of ROW_COLUMNS; rows_per_file counts each file's rows kept.

    spellings, when given, collects each class name's raw label spellings (see _note_spellings); dropped, with
    data.incomplete_rows drop, the rows left out of each file for want of a text or label (_record_dropped); dialects,
    each CSV or TSV's csv_dialect by its source key (path, test_path), as ingest.json records them.
    """
    files = [("path", "train")] + ([("test_path", "test")] if source.get("test_path") else [])
    split_values = bool(cfg.split_column) and len(files) == 1
    columns = {key: getattr(cfg, key) for key in _COLUMN_KEYS if getattr(cfg, key) and (key != "split_column" or split_values)}
    for key, split in files:
        path, fmt = as_location(source[key]), source["format"][key]
        offset, kept, missing = 0, 0, {}
        for raw in iter_table(path, fmt, columns, batch_rows, (dialects or {}).get(key)):
            rows = _table_rows(raw, path, cfg, split_values, offset, missing, spellings)
            if not split_values:
                rows["split"] = split
            offset += len(raw)
            kept += len(rows)
            yield rows
        if cfg.incomplete_rows == "drop":
            _record_dropped(missing, path, dropped if dropped is not None else {})
        else:
            _raise_missing(missing, path, cfg)
        rows_per_file[str(path)] = kept


def _check_table(cfg: DataConfig, source: dict[str, Any], rows_per_file: dict[str, int], meta: pd.DataFrame) -> list[str]:
    """After the table source streamed by: each file had rows, each split has rows, and the class names in index order."""
    for path, n in rows_per_file.items():
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


def _table_details(cfg: DataConfig, source: dict[str, Any]) -> dict[str, Any]:
    if source.get("test_path"):
        test_from = f"test file {Path(source['test_path']).name}"
    elif cfg.split_column:
        test_from = f"split column {cfg.split_column!r}"
    else:
        test_from = f"stratified, seeded split of {cfg.test_size:g} (data.test_size)"
    return {
        "format": source["format"],
        # Each CSV or TSV's separator, and whether its double quotes were read as quoting or as text.
        "dialect": {key: csv_dialect(source[key], fmt) for key, fmt in source["format"].items() if fmt in ("csv", "tsv")},
        "columns": {key: getattr(cfg, key) for key in _COLUMN_KEYS},
        "test_from": test_from,
        "strip_html": cfg.strip_html,
        # data.incomplete_rows drop: per file, the rows left out (filled as the files stream by; {} when none were)
        **({"dropped_rows": {}} if cfg.incomplete_rows == "drop" else {}),
    }
