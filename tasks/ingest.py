"""Ingest: raw labelled reviews in, one Parquet file per split (train, val, test) out."""

from __future__ import annotations

import re
import shutil
import tarfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import task

from tasks.caching import StepCachePolicy, produce_step
from tasks.config import DataConfig
from tasks.store import StepOutput, atomic_path, fingerprint, sha256_file, write_json
from tasks.synthetic import synthetic_reviews
from tasks.text import clean_text

IMDB_LABELS = ["neg", "pos"]
SPLITS = ("train", "val", "test")
_MEMBER = re.compile(r"^(?:\./)?aclImdb/(train|test)/(pos|neg)/(\d+)_(\d+)\.txt$")
_SCHEMA = pa.schema([("text", pa.string()), ("label", pa.int64()), ("rating", pa.int64()), ("id", pa.int64())])


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


def locate_source(cfg: DataConfig, data_dir: Path = Path("data")) -> dict[str, Any]:
    """Where the input is on disk (downloading it once if needed) and a fingerprint of its content."""
    if cfg.source == "synthetic":
        return {"source": "synthetic", "path": None, "fingerprint": fingerprint(["synthetic", cfg.synthetic_reviews, cfg.synthetic_positive_fraction, cfg.seed])}
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
        listing = sorted((str(p.relative_to(local)), p.stat().st_size) for p in local.rglob("*.txt"))
        digest = fingerprint(listing)
    else:
        digest = sha256_file(local)
    return {"source": cfg.source, "path": str(local), "fingerprint": digest}


# --------------------------------------------------------------------------- reading the IMDb layout


def _iter_archive(path: Path) -> Iterator[tuple[str, str, int, int, bytes]]:
    """Stream (split, polarity, id, rating, bytes) from the .tar.gz without extracting anything.

    Only regular files whose names match the dataset's layout are read; links, devices and
    names with '..' or a leading '/' are never followed or written anywhere.
    """
    try:
        with tarfile.open(path, mode="r|gz") as archive:
            for member in archive:
                match = _MEMBER.match(member.name)
                if not match:
                    continue
                if not member.isreg():
                    raise IngestError(f"Archive {path} holds {member.name} as a link or special file: only regular files are read; use the official archive.")
                handle = archive.extractfile(member)
                split, polarity, review_id, rating = match.groups()
                yield split, polarity, int(review_id), int(rating), handle.read() if handle else b""
    except (tarfile.ReadError, EOFError, zlib.error, OSError) as err:
        if isinstance(err, IngestError):
            raise
        raise IngestError(f"Archive {path} could not be read ({err}): it is not a complete .tar.gz; download it again.") from None


def _iter_folder(path: Path) -> Iterator[tuple[str, str, int, int, bytes]]:
    root = path / "aclImdb" if (path / "aclImdb").is_dir() else path
    for file in sorted(root.glob("*/*/*.txt")):
        if file.is_symlink():
            raise IngestError(f"{file} is a symbolic link: rnnflow reads only regular files; copy the real file there.")
        match = _MEMBER.match(f"aclImdb/{file.relative_to(root).as_posix()}")
        if match:
            split, polarity, review_id, rating = match.groups()
            yield split, polarity, int(review_id), int(rating), file.read_bytes()


def read_imdb(path: Path) -> dict[str, pd.DataFrame]:
    """The IMDb layout (aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt) as a frame per split."""
    rows: dict[str, list[tuple[str, int, int, int]]] = {"train": [], "test": []}
    reader = _iter_folder(path) if path.is_dir() else _iter_archive(path)
    for split, polarity, review_id, rating, raw in reader:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise IngestError(
                f"{split}/{polarity}/{review_id}_{rating}.txt in {path} is not valid UTF-8 (byte {err.start}): re-save it as UTF-8."
            ) from None
        rows[split].append((clean_text(text), IMDB_LABELS.index(polarity), rating, review_id))
    frames = {}
    for split, items in rows.items():
        if not items:
            raise IngestError(f"{path} has no {split} reviews in the aclImdb/{split}/pos|neg/<id>_<rating>.txt layout: pass the IMDb archive or its unpacked folder.")
        frame = pd.DataFrame(items, columns=["text", "label", "rating", "id"])
        frames[split] = frame.sort_values(["label", "id"], kind="stable").reset_index(drop=True)
    return frames


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


def write_split(frame: pd.DataFrame, target: Path) -> None:
    table = pa.Table.from_pandas(frame[["text", "label", "rating", "id"]], schema=_SCHEMA, preserve_index=False)
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def ingest_reviews(cfg: DataConfig, source: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Read the source, cap it at max_reviews per split, carve a stratified validation split, write Parquet."""
    if cfg.source == "synthetic":
        n = cfg.synthetic_reviews
        raw = {
            "train": synthetic_reviews(n, cfg.synthetic_positive_fraction, seed=cfg.seed),
            "test": synthetic_reviews(n, cfg.synthetic_positive_fraction, seed=cfg.seed + 1),
        }
        for frame in raw.values():
            frame["text"] = [clean_text(t) for t in frame["text"]]
        labels = IMDB_LABELS
    else:
        raw = read_imdb(Path(source["path"]))
        labels = IMDB_LABELS
    if cfg.max_reviews:
        raw = {split: stratified_sample(frame, cfg.max_reviews, cfg.seed) for split, frame in raw.items()}
    train, val = stratified_split(raw["train"], cfg.val_fraction, cfg.seed)
    splits = {"train": train, "val": val, "test": raw["test"].sample(frac=1.0, random_state=cfg.seed).reset_index(drop=True)}
    for name, frame in splits.items():
        write_split(frame, out_dir / f"{name}.parquet")
    counts = {name: {labels[k]: int(v) for k, v in frame["label"].value_counts().sort_index().items()} for name, frame in splits.items()}
    summary = {"labels": labels, "n": {name: len(frame) for name, frame in splits.items()}, "label_counts": counts, "source": source}
    write_json(out_dir / "ingest.json", summary)
    return {"n": summary["n"], "labels": labels}


def load_split(ingest_dir: Path, split: str) -> pd.DataFrame:
    return pd.read_parquet(Path(ingest_dir) / f"{split}.parquet")


@task(name="locate-source")
def locate_source_task(section: dict, data_dir: str = "data") -> dict[str, Any]:
    """Find (or download once) the input; retried with backoff, as networks and disks hiccup."""
    return locate_source(DataConfig(**section), Path(data_dir))


@task(name="ingest", cache_policy=StepCachePolicy(step="ingest"))
def ingest_task(root: str, section: dict, upstream: dict, source: dict) -> StepOutput:
    return produce_step(root, "ingest", section, upstream, lambda out: ingest_reviews(DataConfig(**section), source, out), source=source)
