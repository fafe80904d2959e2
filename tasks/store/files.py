"""Files as the store writes them: whole or not at all (temporary file + rename), sha256-checked, and the
run-folder files other code reads, each named once."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

ENTRY_FILE = "_entry.json"  # in a cache entry: its StepOutput, written last
WRITER_FILE = "_writer.json"  # in a .partial scratch folder: the process writing it, so a dead writer's scratch can go


# --------------------------------------------------------------------------- run-folder files


@dataclass(frozen=True)
class RunFile:
    """A file one step writes and other code reads: <run folder>/<step>/<name>, spelled once, here."""

    step: str
    name: str

    @property
    def path(self) -> str:
        """Relative to the run folder, as manifests and messages name it: "train/model.keras"."""
        return f"{self.step}/{self.name}"

    def of_run(self, folder: str | Path) -> Path:
        return Path(folder) / self.step / self.name

    def of_step(self, step_dir: str | Path) -> Path:
        """In the step's own folder (a cache entry, or the folder a step writes into)."""
        return Path(step_dir) / self.name


class RunFiles:
    """The run-folder files read beyond the step that writes them."""

    TEST_TEXTS = RunFile("ingest", "test.parquet")
    VALIDATION = RunFile("validate", "validation.json")
    ENCODING = RunFile("encode", "encode.json")
    LABELS = RunFile("encode", "labels.json")
    VOCABULARY = RunFile("encode", "vocab.json")
    SUBWORD_MODEL = RunFile("encode", "subword.model")
    MODEL = RunFile("train", "model.keras")
    TEXT_MODEL = RunFile("train", "model_text.keras")
    TRAINING = RunFile("train", "train.json")
    HISTORY = RunFile("train", "history.json")
    METRICS = RunFile("evaluate", "metrics.json")
    DECISION = RunFile("promote", "decision.json")
    REPORT_HTML = RunFile("report", "report.html")
    REPORT_MARKDOWN = RunFile("report", "report.md")


# --------------------------------------------------------------------------- atomic files


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(value: Any) -> str:
    """A stable sha256 of JSON-able data (sorted keys), for cache keys and input identities."""
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling of target; rename it into place only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o644)  # mkstemp makes 0600; outputs are meant to be read by others
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


# Rows per record batch where a step streams a split (ingest, validate, encode): memory per step
# stays near one batch of text however large the corpus grows.
STREAM_ROWS = 10_000


def parquet_rows(path: Path) -> int:
    """A Parquet file's row count, from its footer alone."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def iter_parquet(path: Path, columns: list[str] | None = None, batch_rows: int = STREAM_ROWS) -> Iterator[Any]:
    """A Parquet file as pandas frames of at most batch_rows rows, in file order, one record batch at a time."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as handle:
        for batch in handle.iter_batches(batch_size=batch_rows, columns=columns):
            yield batch.to_pandas()


def write_text(target: Path, text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def write_json(target: Path, data: Any) -> Path:
    return write_text(target, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def safe_relative_name(name: str) -> bool:
    """Whether a recorded file name ("sub/b.bin") stays inside the folder it is joined to: relative, no '..', no
    backslashes or NULs. Names come from manifests and entries other processes wrote, and become paths written here."""
    text = str(name)
    if not text or "\\" in text or "\0" in text or text.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in text.split("/"))


def install_folder(scratch: Path, final: Path) -> None:
    """Swap a finished scratch folder in as final by one rename (a stale or refreshed one moved aside first)."""
    if final.exists():
        trash = final.with_name(f".{final.name}.{secrets.token_hex(3)}.old")
        os.replace(final, trash)
        shutil.rmtree(trash, ignore_errors=True)
    os.replace(scratch, final)


def _hash_tree(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name not in (ENTRY_FILE, WRITER_FILE)
    }


def _link_tree(source: Path, target: Path) -> None:
    """Hard-link every file of source under target (copy across file systems): cheap and independent of the cache."""
    for path in sorted(source.rglob("*")):
        if path.name in (ENTRY_FILE, WRITER_FILE):
            continue
        destination = target / path.relative_to(source)
        if path.is_dir():
            destination.mkdir(parents=True, exist_ok=True)
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, destination)
        except OSError:
            shutil.copy2(path, destination)

