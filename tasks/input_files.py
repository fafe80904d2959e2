"""The input's files, checked without reading their rows: does each named file exist, is its format one rnnflow
reads, does a table's header hold the named columns.

Ingest's sources (tasks/ingest/) raise these errors as they locate and open their input; the CLI runs the same
checks first (check_input), before Prefect or TensorFlow start, so a mistyped path or column is one sentence in
a second, with no run folder made. Light on purpose: no Prefect, pandas or TensorFlow at import.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from tasks.config import DataConfig
from tasks.input_base import DownloadError, IngestError, existing_file, file_kind  # noqa: F401  (imported from here by ingest and the CLI)
from tasks.spelling import closest


TABLE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".jsonl": "jsonl", ".json": "jsonl"}
COLUMN_KEYS = ("text_column", "label_column", "split_column", "rating_column", "id_column")


def is_url(text: str | Path) -> bool:
    """Whether an input names a URL (s3://, https://, ...; a Path never does) rather than a local path."""
    return isinstance(text, str) and "://" in text


def table_format(path: Path | str) -> str:
    """csv, tsv, parquet or jsonl, from the file's extension (a URL's: its path's, query left out); a .txt whose first
    line holds tabs is a TSV."""
    suffix = PurePosixPath(urlsplit(path).path).suffix if is_url(path) else Path(path).suffix
    fmt = TABLE_FORMATS.get(suffix.lower())
    if fmt is None and suffix.lower() == ".txt" and _header_has_tab(path):
        return "tsv"  # NSMC's ratings_train.txt and its like: a header of names separated by tabs
    if fmt is None:
        raise IngestError(
            f"Input {path} has the extension {suffix or '(none)'!r}, which source=table cannot read: "
            f"save it as .csv, .tsv, .parquet or .jsonl (JSON Lines; .json also works; .txt with a header of tab-separated names), or rename it to match its format."
        )
    return fmt


def _header_has_tab(path: Path | str) -> bool:
    """Whether a file's first line holds a tab (False where it cannot be read: the caller's sentence names the file)."""
    from tasks.remote_input import open_input

    try:
        with open_input(path) as raw:
            return b"\t" in raw.read(1 << 16).split(b"\n", 1)[0]
    except Exception:  # missing, unreadable, no answer: not a table this rule can name
        return False


def check_table_keys(cfg: DataConfig) -> None:
    """The table keys that contradict each other or were left at the IMDb default, before any file is opened."""
    if Path(cfg.path) == Path(DataConfig().path):
        raise IngestError("source=table reads the file named by data.path, which is still the IMDb archive default: pass your table with --set data.path=/path/to/reviews.csv.")
    if cfg.test_path and cfg.split_column:
        raise IngestError(f"Both data.test_path ({cfg.test_path}) and data.split_column ({cfg.split_column!r}) say where the test rows are: keep one of them.")


# A .csv's separator: the comma, or the one of these that splits its header into more columns (a spreadsheet saved
# where the comma is the decimal mark writes semicolons).
CSV_DELIMITERS = (",", ";", "\t", "|")


def csv_delimiter(path: Path | str, fmt: str) -> str:
    """A TSV's tab; a CSV's comma, or the one of CSV_DELIMITERS that splits its header line into the most columns
    (ties: the comma). A header of one column keeps the comma."""
    if fmt == "tsv":
        return "\t"
    import csv
    import io

    from tasks.remote_input import open_input

    # errors="replace": counting separators needs no exact text; ingest names a byte that is not UTF-8 where it reads.
    with open_input(path) as raw, io.TextIOWrapper(raw, newline="", encoding="utf-8-sig", errors="replace") as handle:
        line = handle.readline()
    return max(CSV_DELIMITERS, key=lambda delimiter: len(next(csv.reader([line], delimiter=delimiter), [])))


# How much of a TSV tsv_quoted reads to tell quoting from quote marks that are part of the text.
QUOTING_SAMPLE_BYTES = 4 << 20


def tsv_quoted(path: Path | str) -> bool:
    """Whether a TSV's double quotes are CSV quoting (pandas' to_csv writes "a ""quoted"" text") or part of its texts
    (tab-separated exports that never quote hold reviews such as `"Title" was dull` or an unclosed `"wow`). Judged on
    the first QUOTING_SAMPLE_BYTES, whole lines: quoting, unless reading it so breaks a rule of CSV quoting (a closing
    quote not followed by a tab or the line's end, a quote left open: Python's csv module, strict) or gives fewer rows
    than reading every line as one row of the header's columns does. A file that reads neither way keeps quoting
    (ingest names its bad line)."""
    import csv
    import io

    import pyarrow.csv as pacsv

    from tasks.remote_input import open_input

    with open_input(path) as raw:
        sample = raw.read(QUOTING_SAMPLE_BYTES + 1)
    if len(sample) > QUOTING_SAMPLE_BYTES:
        sample = sample[: sample.rfind(b"\n", 0, QUOTING_SAMPLE_BYTES) + 1] or sample
    if b'"' not in sample:
        return True
    try:  # every line one row of the header's columns, quote marks as text (pyarrow raises on another width)
        options = pacsv.ParseOptions(delimiter="\t", quote_char=False, newlines_in_values=False)
        as_lines = pacsv.read_csv(io.BytesIO(sample), parse_options=options,
                                  convert_options=pacsv.ConvertOptions(include_columns=[], strings_can_be_null=True)).num_rows
    except Exception:  # pyarrow's parse errors
        return True
    text = sample.decode("utf-8-sig", errors="replace")
    try:
        as_quoted = sum(1 for row in csv.reader(io.StringIO(text, newline=""), delimiter="\t", strict=True) if row) - 1  # less the header
    except csv.Error:
        return False
    return as_quoted >= as_lines


def csv_dialect(path: Path | str, fmt: str) -> dict[str, Any]:
    """How ingest and score read a CSV or TSV (ingest.json's input records it): its separator (csv_delimiter), and
    whether double quotes are quoting (always in a CSV; in a TSV unless they are part of its texts, tsv_quoted)."""
    return {"separator": csv_delimiter(path, fmt), "quoting": fmt == "csv" or tsv_quoted(path)}


def csv_header(path: Path | str, delimiter: str) -> list[str]:
    """The first row of a CSV or TSV file (or URL, tasks/remote_input.py): its column names."""
    import csv
    import io

    from tasks.remote_input import open_input

    with open_input(path) as raw, io.TextIOWrapper(raw, newline="", encoding="utf-8-sig") as handle:
        return next(csv.reader(handle, delimiter=delimiter), [])


def check_columns(path: Path, present: list[str], columns: dict[str, str]) -> None:
    """Each named column (config key -> column name) is in the header, once."""
    for key, name in columns.items():
        if name not in present:
            shown = ", ".join(map(repr, present[:20])) + (", ..." if len(present) > 20 else "")
            close = closest(name, present)
            fix = f"is it {close!r}? Then --set data.{key}={close}" if close else f"name the right one with --set data.{key}=NAME"
            raise IngestError(f"{path} has no column {name!r} for data.{key} (its columns: {shown or 'none'}): {fix}.")
        # A CSV reader takes the first of two equal names, pandas renames the second 'text.1', a Parquet
        # batch holds both: whichever it is, the column read may not be the one the user meant.
        times = present.count(name)
        if times > 1:
            raise IngestError(
                f"{path} names column {name!r} {'twice' if times == 2 else f'{times} times'} in its header, "
                f"so which one data.{key} means is unclear: rename or drop one of them."
            )


def named_columns(cfg: DataConfig) -> dict[str, str]:
    """The columns each table file must have (config key -> name); split_column is refused with data.test_path."""
    return {key: getattr(cfg, key) for key in COLUMN_KEYS if getattr(cfg, key)}


def _header_of(path: Path, fmt: str) -> list[str] | None:
    """A CSV, TSV or Parquet file's column names, read from its first line or schema; None for JSON Lines (whose
    records may each name other keys) or a file whose header cannot be read (ingest then says why)."""
    try:
        if fmt in ("csv", "tsv"):
            return csv_header(path, csv_delimiter(path, fmt))
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
    except Exception:  # damaged, not UTF-8, ...: ingest reads it and names the problem with the row
        return None
    return None


def check_input(cfg: DataConfig) -> None:
    """What can be checked of data.* without reading the rows or downloading: the named files exist, a table has a
    format rnnflow reads and the named columns. Raises IngestError with ingest's own sentence; the default IMDb
    archive and keras' imdb.npz, which ingest downloads when missing, pass; a table URL is checked to be there."""
    default_path = Path(cfg.path) == Path(DataConfig().path)
    if cfg.source == "imdb":
        local = Path(cfg.path).expanduser()
        if not cfg.path.startswith(("http://", "https://")) and not default_path and not local.exists():
            raise IngestError(f"Input {local} does not exist: pass the IMDb archive or its unpacked folder with --set data.path=PATH.")
    elif cfg.source == "keras_imdb":
        if not default_path:
            existing_file(cfg.path, "data.path", "Keras' imdb.npz")
        if cfg.word_index_path:
            existing_file(cfg.word_index_path, "data.word_index_path", "Keras' imdb_word_index.json")
    elif cfg.source == "table":
        check_table_keys(cfg)
        files = [_table_file(cfg.path, "data.path", "a .csv, .tsv, .parquet or .jsonl table")]
        if cfg.test_path:
            files.append(_table_file(cfg.test_path, "data.test_path", "the test table"))
        for local in files:
            if isinstance(local, str):  # a URL: there and readable (one HEAD); its header is read by ingest, not here
                table_format(local)
                continue
            present = _header_of(local, table_format(local))
            if present is not None:
                check_columns(local, present, named_columns(cfg))


def _table_file(text: str, key: str, what: str) -> Path | str:
    """A table named by data.path or data.test_path: a local file that exists, or a URL whose object is there
    (tasks/remote_input.py: missing, no credentials, no answer are each one sentence)."""
    if not is_url(text):
        return existing_file(text, key, what)
    from tasks.remote_input import check_input as check_url

    check_url(text, key, what)
    return text
