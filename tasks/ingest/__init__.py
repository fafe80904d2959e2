"""Ingest: raw labelled texts in, one Parquet file per split (train, val, test) out.

Sources (data.source), one module each, all ending in the same files (text, label, rating, id + ingest.json):

    imdb        imdb.py        the aclImdb archive or its unpacked folder
    synthetic   synthetic.py   seeded review-like texts, no file
    table       table.py       CSV, TSV, Parquet or JSON Lines: one file, or a train/test pair
    keras_imdb  keras_imdb.py  Keras' imdb.npz (integer-encoded), decoded back to text

Each is a base.Source (locate, read, name its classes, choose its test split); splits.py carves
the validation split, caps and shuffles, and writes the Parquet files.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from prefect import task

from tasks import store
from tasks.caching import CacheSlot, produce_step, step_task
from tasks.config import DataConfig
from tasks.ingest import imdb, keras_imdb, synthetic, table
from tasks.ingest.base import IMDB_LABELS, ROW_COLUMNS, SPLIT_VALUES, DownloadError, IngestError, Reading, Source
from tasks.ingest.imdb import iter_imdb, read_imdb
from tasks.ingest.keras_imdb import read_keras_imdb
from tasks.ingest.splits import SPLITS, check_split_sizes, check_train_classes, spill_rows, split_orders, stratified_sample, stratified_split, write_splits
from tasks.ingest.table import class_names, first_invalid_utf8, iter_table, sorted_classes
from tasks.logs import step_logger
from tasks.store import StepOutput, write_json

# What callers (flows, bench, tests) import from tasks.ingest, wherever it is defined.
__all__ = [
    "IMDB_LABELS", "ROW_COLUMNS", "SPLITS", "SPLIT_VALUES", "SOURCES", "DownloadError", "IngestError", "Reading", "Source",
    "class_names", "first_invalid_utf8", "ingest_reviews", "ingest_task", "input_path", "iter_imdb", "iter_table", "load_split",
    "locate_source", "locate_source_task", "read_imdb", "read_keras_imdb", "retry_unless_bad_input", "sorted_classes",
    "source_for", "stratified_sample", "stratified_split",
]

# data.source -> its Source: the one place that branches on it.
SOURCES: dict[str, Source] = {
    "imdb": imdb.SOURCE,
    "synthetic": synthetic.SOURCE,
    "table": table.SOURCE,
    "keras_imdb": keras_imdb.SOURCE,
}


def source_for(cfg: DataConfig) -> Source:
    """The Source that reads data.source."""
    return SOURCES[cfg.source]


def retry_unless_bad_input(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry I/O trouble, never input that will fail the same way again."""
    try:
        state.result()
    except IngestError as error:
        return error.retryable
    except Exception:
        return True
    return True


def input_path(cfg: DataConfig) -> str:
    """data.path, except that source=keras_imdb left at the aclImdb default means data/imdb.npz."""
    return source_for(cfg).input_path(cfg)


def locate_source(cfg: DataConfig, data_dir: Path = Path("data")) -> dict[str, Any]:
    """Where the input is on disk (downloading it once if needed) and a fingerprint of its content."""
    return source_for(cfg).locate(cfg, data_dir)


def ingest_reviews(cfg: DataConfig, source: dict[str, Any], out_dir: Path, batch_rows: int | None = None) -> dict[str, Any]:
    """Read the located source, cap it at max_reviews per split, carve a stratified validation split, write Parquet.

    The source streams through in batches of batch_rows (tasks.store.STREAM_ROWS): spilled to disk
    as read, split on labels and ids alone, and written out bucket by bucket, so memory holds a batch
    of text, never the corpus. ingest.json records the class names in index order (labels), counts
    per split, and the source.
    """
    batch_rows = batch_rows or store.STREAM_ROWS
    out_dir = Path(out_dir)
    kind = source_for(cfg)  # source is the located input (locate_source's dict), kind the Source reading it
    reading = kind.read(cfg, source, batch_rows)
    work = Path(tempfile.mkdtemp(prefix=".ingest-", dir=out_dir))
    try:
        spill = work / "rows.parquet"
        spill_rows(reading.batches, spill)
        meta = pq.read_table(spill, columns=["label", "id", "split"]).to_pandas()
        classes = kind.name_classes(cfg, source, reading, meta)
        meta["label"] = meta["label"].map({name: i for i, name in enumerate(classes)}).astype("int64")
        meta["row"] = np.arange(len(meta), dtype=np.int64)
        check_split_sizes(cfg, meta, classes, source, kind.carves_test(cfg))
        orders = split_orders(cfg, meta, kind)
        check_train_classes(source, meta, orders, classes)
        write_splits(spill, orders, classes, out_dir, work, batch_rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    counts = {name: {classes[k]: int(v) for k, v in frame["label"].value_counts().sort_index().items()} for name, frame in orders.items()}
    summary = {
        "labels": classes,
        "n": {name: len(frame) for name, frame in orders.items()},
        "label_counts": counts,
        "source": source,
        # The cleaning every text went through; encode hands it on in vocab.json so prediction repeats it.
        "strip_html": cfg.strip_html and kind.strips_html,
    }
    if reading.details:
        summary["input"] = reading.details
    merged = {name: sorted(reading.spellings[name]) for name in classes if len(reading.spellings.get(name, ())) > 1}
    if merged:
        summary["label_spellings_merged"] = merged
        step_logger().info(
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


@step_task("ingest")
def ingest_task(data: DataConfig, *, source: dict, slot: CacheSlot) -> StepOutput:
    """source: the located input (locate_source), its fingerprint in the key."""
    return produce_step(slot, lambda out: ingest_reviews(data, source, out))
