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
        share = sampled_count(len(group), n, len(frame))
        keep.append(group.index.to_numpy()[rng.permutation(len(group))[:share]])
    return frame.loc[np.sort(np.concatenate(keep))].reset_index(drop=True)


def sampled_count(class_rows: int, n: int, total: int) -> int:
    """How many of a class's class_rows stratified_sample keeps when it takes n of total rows."""
    return class_rows if n >= total else max(1, round(n * class_rows / total))


def held_count(class_rows: int, fraction: float) -> int:
    """How many of a class's rows stratified_split holds out: the fraction, and at least one."""
    return max(1, round(fraction * class_rows))


def stratified_split(frame: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rest, held_out): held_out takes `fraction` of every class, shuffled with the seed.

    Keras' validation_split takes the tail of the arrays unshuffled; IMDb is ordered by class,
    so that tail is all one class. This split is why the validation set is balanced.
    """
    rng = np.random.default_rng(seed)
    held = []
    for _, group in frame.groupby("label", sort=True):
        order = group.index.to_numpy()[rng.permutation(len(group))]
        held.append(order[: held_count(len(group), fraction)])
    held_index = np.concatenate(held) if held else np.array([], dtype=frame.index.dtype)
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


def check_train_classes(located: dict[str, Any], meta: pd.DataFrame, orders: dict[str, pd.DataFrame], classes: list[str]) -> None:
    """Every class reaches the train split; else the data is at fault, not validate's class balance.

    Without this, a class that only the test rows hold got validate's advice to lower
    validate.min_class_fraction, which hides the problem: the model can never predict that class.
    (A class too small for the splits is check_split_sizes' to name, before the splits are made.)
    """
    trained = set(orders["train"]["label"].unique().tolist())
    absent = [k for k in range(len(classes)) if k not in trained]
    if not absent:
        return
    k = absent[0]
    of_class = meta["label"] == k
    n_test = int((of_class & (meta["split"] == "test")).sum())
    where = located.get("test_path") or located.get("path") or "the synthetic corpus"
    raise IngestError(
        f"Class {classes[k]!r} appears only in the test rows ({where}), never in train: "
        f"add train rows of that class or drop its {_reviews(n_test, 'test row')}."
    )


def least_class_rows(fractions: list[float]) -> int:
    """The fewest reviews a class needs so that stratified carves of these fractions, in turn, leave it at least one."""

    def survives(n: int) -> bool:
        for fraction in fractions:
            n = n - held_count(n, fraction) if n > 0 else 0
        return n >= 1

    high = 1
    while not survives(high):  # ends: a carve leaves about (1 - fraction) of a class, and every fraction is under 1
        high *= 2
    return _least(survives, high // 2 + 1, high)


def _least(holds: Any, low: int, high: int) -> int:
    """The least n in [low, high] for which holds(n), given that holds(high) and that holds never turns false as n grows."""
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if holds(middle) else (middle + 1, high)
    return high


def check_split_sizes(cfg: DataConfig, meta: pd.DataFrame, classes: list[str], located: dict[str, Any], carves_test: bool) -> None:
    """Each class of the train rows keeps a review in train after the test carve (carves_test), data.max_reviews and
    the validation carve; else one sentence with the class counts and what to change, before any split is made.

    The counts follow stratified_split and stratified_sample (held_count, sampled_count), so this check and the
    splits cannot disagree. A class absent from the train rows is check_train_classes' to name.
    """
    counts = meta.loc[meta["split"] == "train", "label"].value_counts().sort_index()
    keys = (["test_size"] if carves_test else []) + ["val_fraction"]
    need = least_class_rows([getattr(cfg, key) for key in keys])
    short = [k for k, n in counts.items() if n < need]
    if short:
        raise IngestError(_too_few_sentence(cfg, counts, short, classes, located, keys, need))
    if cfg.max_reviews:
        _check_max_reviews(cfg, counts - counts.map(lambda n: held_count(n, cfg.test_size)) if carves_test else counts, classes)


def _too_few_sentence(cfg: DataConfig, counts: pd.Series, short: list[int], classes: list[str], located: dict[str, Any], keys: list[str], need: int) -> str:
    """Why some classes of the train rows cannot fill every split, and what to change."""
    named = " and ".join(repr(classes[k]) for k in short)
    named = f"class {named}" if len(short) == 1 else f"classes {named}"
    where = located.get("path") or "the synthetic corpus"
    where = f"The train rows of {where} hold" if cfg.split_column or located.get("test_path") else f"{where[0].upper()}{where[1:]} holds"
    # One review per split is the least any fractions can leave: below that, only more reviews help.
    if min(counts[k] for k in short) < len(keys) + 1:
        fix = f"add reviews of {named}" + ((" or drop it" if len(short) == 1 else " or drop them") if len(counts) - len(short) >= 2 else "")
    else:
        fix = f"lower {' or '.join(f'data.{key}' for key in keys)}, or add reviews of {named}"
    settings = " and ".join(f"data.{key}={getattr(cfg, key):g}" for key in keys)
    splits = "train, validation and test" if len(keys) == 2 else "train and validation"
    return (f"{where} too few reviews of {named} ({_listed(counts, classes)}) to keep one for each of {splits}: "
            f"with {settings} each class needs at least {need}; {fix}.")


def _check_max_reviews(cfg: DataConfig, counts: pd.Series, classes: list[str]) -> None:
    """data.max_reviews leaves each class of train (counts: after any test carve) enough for the validation carve."""
    total = int(counts.sum())
    kept_at = lambda m: pd.Series({k: sampled_count(n, m, total) for k, n in counts.items()}, dtype="int64")  # noqa: E731
    need = least_class_rows([cfg.val_fraction])
    kept = kept_at(cfg.max_reviews)
    if (kept >= need).all():
        return
    k = kept.index[kept < need][0]
    # The whole train split is enough (check_split_sizes saw to it), so some cap up to its size is.
    enough = _least(lambda m: bool((kept_at(m) >= need).all()), cfg.max_reviews + 1, total)
    raise IngestError(
        f"data.max_reviews={cfg.max_reviews} keeps {_reviews(kept[k])} of class {classes[k]!r} in train ({_listed(kept, classes)}), "
        f"too few to carve the validation split (data.val_fraction={cfg.val_fraction:g}) and keep one to train on: "
        f"raise data.max_reviews to at least {enough}."
    )


def _reviews(n: int, noun: str = "review") -> str:
    return f"{int(n)} {noun}{'' if n == 1 else 's'}"


def _listed(counts: pd.Series, classes: list[str]) -> str:
    """'neg 1, pos 1': a class count per class index of counts."""
    return ", ".join(f"{classes[k]} {int(n)}" for k, n in counts.items())


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

