"""Where an artifacts root's files are kept: one storage interface (Storage), two backends.

The store always works on local files (steps read and write a folder; X_*.npy stay memory-mappable): the
backend says where the root's files truly are and moves them between there and that folder. LocalStorage is a
folder on this machine: the folder is the root, so every push and pull is a no-op and every write is a
temporary file + rename. BucketStorage (tasks/store/bucket.py) is an fsspec bucket with a local mirror: it does
the copying, and owns what a bucket needs that a folder does not (claims created only if absent, replaces
conditional on an ETag, a lock object beside the flock). The concern modules (cache.py, runs.py, champions.py)
call this interface only, never asking which backend they have.

Keys are paths relative to the root, "/"-separated ("runs/<id>/manifest.json"), as Metaflow's DataStoreStorage
names its objects.
"""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from tasks.store.files import atomic_path
from tasks.store.manifest import LOCAL_MANIFEST_FIX, MANIFEST_FILE

if TYPE_CHECKING:  # pragma: no cover
    from tasks.store.entries import StepOutput


class Storage(ABC):
    """An artifacts root's storage: whole-object operations by key, and what keeps the local folder (`root`) in step.

    root: the local folder steps read and write (the root itself, or a bucket's mirror); location: the root as
    the user named it (the folder's path, or the URL), what crosses to other processes.
    """

    root: Path
    location: str

    def key(self, path: Path) -> str:
        """A path inside the local folder as a key of this root."""
        return Path(path).relative_to(self.root).as_posix()

    def where(self, path: Path | None = None) -> str:
        """A file or folder of this root as the user knows it (a path, or its URL in the bucket)."""
        return str(self.root if path is None else path)

    # ----- objects, whole

    @abstractmethod
    def read_bytes(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is none."""

    @abstractmethod
    def read_with_tag(self, key: str) -> tuple[bytes | None, str | None]:
        """The object's bytes and a tag naming that version (an ETag) where the backend has one, for replace()."""

    @abstractmethod
    def write_bytes(self, key: str, data: bytes, *, create: bool = False, if_match: str | None = None, if_absent: bool = False) -> None:
        """Write one object whole. create: FileExistsError if it exists. if_match (a tag from read_with_tag) or
        if_absent: only if the object is still that version (or still absent), FileExistsError otherwise, where
        the backend can tell (a local folder's writers are serialised by the caller's flock instead)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object; nothing when there is none."""

    def exists(self, key: str) -> bool:
        return self.read_bytes(key) is not None

    def replace(self, key: str, data: bytes, tag: str | None) -> None:
        """Replace an object whole, only if it is still the version `tag` names (absent when None), and keep the
        local folder's copy: FileExistsError when another writer replaced it since it was read."""
        self.write_bytes(key, data, if_match=tag, if_absent=tag is None)

    # ----- the local folder and the root

    def push(self, path: Path) -> None:
        """Send a file, or every file of a folder, of the local folder to the root (nothing to do when they are one)."""

    def push_step(self, target: Path, source: Path, objects: str | None = None) -> None:
        """A run's step folder `target`, just linked from `source` (a cache entry, version `objects`), to the root."""

    def pull_manifest(self, folder: Path) -> bool:
        """A run (or sweep) folder's manifest, current in the local folder; False when the root holds none."""
        return (Path(folder) / MANIFEST_FILE).is_file()

    def pull_run(self, folder: Path) -> bool:
        """A run folder's manifest and the files it records, in the local folder; False when the root holds no run there."""
        return self.pull_manifest(folder)

    def drop_mirror_copy(self, folder: Path) -> None:
        """Forget a local copy of a run folder the root no longer holds (a folder root: the copy is the run, kept)."""

    def run_folders(self, runs_dir: Path, check_run_id: Any) -> tuple[list[Path], list[dict[str, Any]]]:
        """The run folders the root holds, their manifests current locally, and a row for each damaged manifest
        (a bucket's is found damaged while fetched; a folder's when it is read)."""
        if not runs_dir.is_dir():
            return [], []
        return sorted(folder for folder in runs_dir.iterdir() if (folder / MANIFEST_FILE).is_file()), []

    def holds_locally(self, path: Path) -> bool:
        """Whether a step output's folder can be read here as it is (a folder root: always)."""
        return True

    def publish_entry(self, scratch: Path, output: "StepOutput", *, refresh: bool = False) -> tuple["StepOutput", bool]:
        """Make a finished cache entry (files in `scratch`) the root's: the output to use, and whether to install
        scratch as the local entry (a folder root: always this one, installed by the caller's rename)."""
        return output, True

    def fetch_entry(self, step: str, key: str) -> "StepOutput | None":
        """A cache entry the local folder lacks, fetched whole from the root; None when there is none there."""
        return None

    def manifest_fix(self, folder: Path) -> str:
        """What to do about a run folder's damaged manifest, where it lives."""
        return LOCAL_MANIFEST_FIX

    @contextlib.contextmanager
    def exclusive(self, key: str) -> Iterator[None]:
        """Held, beyond the caller's flock, while one writer reads, compares and replaces `key`'s record: a lock
        other machines see (a folder root: the flock is enough)."""
        yield

    # ----- is it usable

    def check_readable(self) -> None:
        """One sentence when the root cannot be read (a missing bucket); a folder is checked by the store."""

    def check_writable(self) -> None:
        """One sentence when this process cannot write the root's objects; a folder is checked by the store."""

    def transfer_summary(self) -> list[str]:
        """Lines a command prints about what it sent to the root (a folder root: nothing travels)."""
        return []


class LocalStorage(Storage):
    """A folder on this machine: the folder is the root."""

    def __init__(self, folder: str | Path):
        self.root = Path(folder).expanduser().resolve()
        self.location = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / key if key else self.root

    def read_bytes(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def read_with_tag(self, key: str) -> tuple[bytes | None, str | None]:
        return self.read_bytes(key), None

    def write_bytes(self, key: str, data: bytes, *, create: bool = False, if_match: str | None = None, if_absent: bool = False) -> None:
        path = self._path(key)
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "xb") as handle:  # FileExistsError when it is there
                handle.write(data)
            return
        with atomic_path(path) as scratch:
            scratch.write_bytes(data)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return os.path.lexists(self._path(key))
