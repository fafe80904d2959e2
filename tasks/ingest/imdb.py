"""source=imdb: the aclImdb archive (.tar.gz, read as a stream, never extracted) or its unpacked folder.

The layout is aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt; the archive's own train and test
halves are the splits, each ordered by label and id.
"""

from __future__ import annotations

import re
import shutil
import tarfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from tasks import store
from tasks.config import DataConfig
from tasks.ingest.base import IMDB_LABELS, MAX_REVIEW_BYTES, ROW_COLUMNS, SPLIT_VALUES, DownloadError, IngestError, Reading, Source, file_kind
from tasks.store import atomic_path, fingerprint, sha256_file
from tasks.text import clean_text

_MEMBER = re.compile(r"^(?:\./)?aclImdb/(train|test)/(pos|neg)/(\d+)_(\d+)\.txt$")


class ImdbSource(Source):
    def locate(self, cfg: DataConfig, data_dir: Path) -> dict[str, Any]:
        """data.path (a URL is downloaded into data_dir once; the default path from data.url), hashed by content."""
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
                f"Input {local} is {file_kind(local)}, not a regular file or folder: pass the IMDb archive or its unpacked folder with --set data.path=PATH."
            )
        return {"source": cfg.source, "path": str(local), "fingerprint": digest}

    def read(self, cfg: DataConfig, located: dict[str, Any], batch_rows: int) -> Reading:
        return Reading(iter_imdb(Path(located["path"]), cfg.strip_html, batch_rows, cfg.max_review_bytes), classes=IMDB_LABELS)

    def name_classes(self, cfg: DataConfig, located: dict[str, Any], reading: Reading, meta: pd.DataFrame) -> list[str]:
        """neg and pos, once both halves of the layout turned out to hold reviews."""
        for split in SPLIT_VALUES:
            _require_imdb_split(Path(located["path"]), split, int((meta["split"] == split).sum()))
        return IMDB_LABELS

    def test_split(self, cfg: DataConfig, raw: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
        """The archive's own train and test halves, each ordered by label and id (as read_imdb orders them)."""
        return {name: part.sort_values(["label", "id"], kind="stable").reset_index(drop=True) for name, part in raw.items()}


SOURCE = ImdbSource()


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


# --------------------------------------------------------------------------- reading the layout


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
                raise IngestError(f"{file} is {file_kind(file)}, not a regular file: rnnflow reads only regular files; put the review's text file there or remove it.")
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
    for split in SPLIT_VALUES:
        frame = rows[rows["split"] == split].drop(columns="split")
        _require_imdb_split(path, split, len(frame))
        frame = frame.assign(label=frame["label"].map(IMDB_LABELS.index).astype("int64"))
        frames[split] = frame.sort_values(["label", "id"], kind="stable").reset_index(drop=True)
    return frames
