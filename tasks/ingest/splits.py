"""Which rows go to train, val and test, in which order, and writing each split's Parquet file.

A source's rows are first spilled to one Parquet file; the split decisions are made on labels and
ids alone; then the text is written out bucket by bucket, so memory never holds the corpus.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.config import DataConfig
from tasks.ingest.base import ROW_COLUMNS, SPLIT_VALUES, IngestError, Source
from tasks.store import SPLITS, atomic_path, iter_parquet, parquet_rows

BUCKET_BATCHES = 10  # positions per bucket file, in batches: see write_splits
_SCHEMA = pa.schema([("text", pa.string()), ("label", pa.int64()), ("rating", pa.int64()), ("id", pa.int64())])
_SPILL_SCHEMA = pa.schema(
    [("text", pa.string()), ("label", pa.string()), ("rating", pa.int64()), ("id", pa.int64()), ("split", pa.string())]
)


# --------------------------------------------------------------------------- splitting


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


def split_orders(cfg: DataConfig, meta: pd.DataFrame, source: Source) -> dict[str, pd.DataFrame]:
    """Which spilled rows go to train, val and test, in which order: decided on labels and ids alone.

    meta holds one row per spilled review (label as class index, id, split, row = its place in the
    spill). The decisions are those made when the corpus sat in memory: the source's train and test
    rows in its order (source.test_split), data.max_reviews per split, then a stratified validation
    split from train and a shuffled test split, all seeded.
    """
    raw = {name: meta[meta["split"] == name].drop(columns="split").reset_index(drop=True) for name in SPLIT_VALUES}
    raw = source.test_split(cfg, raw)
    if cfg.max_reviews:
        raw = {name: stratified_sample(part, cfg.max_reviews, cfg.seed) for name, part in raw.items()}
    train, val = stratified_split(raw["train"], cfg.val_fraction, cfg.seed)
    return {"train": train, "val": val, "test": raw["test"].sample(frac=1.0, random_state=cfg.seed).reset_index(drop=True)}


def check_train_classes(located: dict[str, Any], meta: pd.DataFrame, orders: dict[str, pd.DataFrame], classes: list[str], carved_test: bool) -> None:
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
        where = located.get("test_path") or located.get("path") or "the synthetic corpus"
        raise IngestError(
            f"Class {classes[k]!r} appears only in the test rows ({where}), never in train: "
            f"add train rows of that class or drop its {n_test} test row{'s' if n_test != 1 else ''}."
        )
    carved = "the test and validation splits" if carved_test else "the validation split"
    raise IngestError(
        f"Class {classes[k]!r} has too few rows in {located.get('path') or 'the synthetic corpus'} ({outside_test}) for any to be left to train on "
        f"after {carved}: add rows of that class or drop them."
    )


# --------------------------------------------------------------------------- writing


def spill_rows(batches: Iterable[pd.DataFrame], target: Path) -> None:
    """Write every batch, as it comes, to one uncompressed Parquet file that ingest_reviews reads back twice."""
    with pq.ParquetWriter(target, _SPILL_SCHEMA, compression="none", use_dictionary=False) as writer:
        for batch in batches:
            if len(batch):
                writer.write_table(pa.Table.from_pandas(batch[ROW_COLUMNS], schema=_SPILL_SCHEMA, preserve_index=False))


def write_splits(spill: Path, orders: dict[str, pd.DataFrame], classes: list[str], out_dir: Path, work: Path, batch_rows: int) -> None:
    """Write each split's Parquet file in its final order, holding no more than a bucket of text.

    Every review's place (split, position) is known from orders. One pass over the spill sends each
    batch's rows to bucket files of consecutive positions; then each split is written
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

