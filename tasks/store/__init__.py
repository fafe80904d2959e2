"""The artifact store: run folders with manifests, the content-checked step cache, the champion record, kept in
a folder or a bucket behind one storage interface. This module is the facade (ArtifactStore) and the one place
callers import from; each concern is its own module over the interface:

    backend.py      Storage, the interface (objects by key; push/pull between the local folder and the root),
                    and LocalStorage, a folder (pushes and pulls are no-ops)
    bucket.py       BucketStorage: an fsspec bucket with a local mirror; entry claims, run copies, listing
    remote.py       RemoteRoot: the bucket's calls (timeouts, tries, one-sentence errors, conditional puts)
    lock_object.py  the bucket's champion lock object
    cache.py        CacheEntries: cache/<step>/<key>/ read, produce (claim), forget, stale scratch cleaned
    runs.py         Runs: start, list, resolve (id, latest, champion), open, mark killed; new_run_id
    record.py       RunRecord: one run folder's manifest, written whole, its step files linked in and pushed
    champions.py    ChampionRecord: champion.json, one champion per model, under a lock
    manifest.py     manifests validated, run ids checked, run files checked against their sha256, the errors
    entries.py      StepOutput (what a step hands on) and _entry.json as read back
    files.py        atomic writes, sha256, the run-folder file names; process.py: is a writer alive

Layout under the artifacts root (a folder, or the same keys in the bucket):

    runs/<run-id>/manifest.json      one folder per run, never overwritten
    runs/<run-id>/<step>/...         the step's outputs (hard links into cache/ where possible)
    cache/<step>/<key>/...           one complete entry per step fingerprint, with _entry.json (the only cache record)
    locks/<step>/<key>.lock          an entry's lock while a process looks it up or makes it (tasks/caching.py)
    champion.json, champion.lock     each model's promoted run, and the lock held while it changes

The store knows no step table: what it needs of the steps (which can be rerun alone) is handed to it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from tasks.store.files import (  # noqa: F401  (the store's one interface: callers import from tasks.store)
    ENTRY_FILE, STREAM_ROWS, WRITER_FILE, RunFile, RunFiles, _hash_tree, _link_tree, atomic_path, fingerprint, iter_parquet,
    parquet_rows, read_json, sha256_file, write_json, write_text,
)
from tasks.store.manifest import (  # noqa: F401
    LOCAL_MANIFEST_FIX, MANIFEST_FILE, ArtifactsRootError, BadRunIdError, ChampionError, DamagedRunError, Manifest, ManifestError,
    RunError, RunNotFoundError, StepRecord, load_manifest, require_run_files, verify_run_files,
)
from tasks.store.entries import StepOutput, parse_entry  # noqa: F401
from tasks.store.backend import LocalStorage, Storage  # noqa: F401
from tasks.store.bucket import BucketStorage  # noqa: F401
from tasks.store.cache import CacheEntries
from tasks.store.champions import CHAMPION_FILE, CHAMPION_LOCK, ChampionRecord, model_of_config  # noqa: F401
from tasks.store.process import ProcessStamp, pid_alive, process_stamp, stamp_gone  # noqa: F401
from tasks.store.remote import MIRROR_ENV, RemoteRoot, UnusableRemote, is_url, mirror_folder  # noqa: F401
from tasks.store.record import PROJECT_ROOT, RunRecord, environment_versions, utc_now  # noqa: F401
from tasks.store.runs import Runs, new_run_id  # noqa: F401

SPLITS = ("train", "val", "test")  # ingest writes <split>.parquet, encode X_<split>.npy / y_<split>.npy


# --------------------------------------------------------------------------- the store


def default_root() -> str:
    return os.environ.get("RNNFLOW_ARTIFACTS", "artifacts")


class ArtifactStore:
    """One artifacts root: its storage (a folder, or a bucket with a local mirror) and the concerns over it.

    root is the local folder steps read and write (for a URL root, its mirror); location is what the user named
    (the URL, or the resolved folder), what crosses to other processes. The concerns are `cache` (CacheEntries),
    `runs` (Runs) and `champions` (ChampionRecord); the methods below forward to them, so callers keep one object.
    """

    def __init__(self, root: str | Path | None = None):
        text = str(root) if root is not None else default_root()
        self.storage: Storage = BucketStorage(text) if is_url(text) else LocalStorage(text)
        self.root = self.storage.root
        self.location = self.storage.location
        self.cache = CacheEntries(self.storage)
        self.champions = ChampionRecord(self)  # <root>/champion.json: each model's promoted run
        self.runs = Runs(self)

    @property
    def remote(self) -> RemoteRoot | None:
        """A URL root's bucket objects (tasks/store/remote.py), None for a folder: for tests that look inside the
        bucket. The store's own code, and its callers, ask self.storage instead."""
        return getattr(self.storage, "remote", None)

    def where(self, path: Path | None = None) -> str:
        """A file or folder of this root as the user knows it: its URL for a URL root, else its path."""
        return self.storage.where(path)

    @property
    def runs_dir(self) -> Path:
        return self.runs.runs_dir

    @property
    def cache_dir(self) -> Path:
        return self.cache.cache_dir

    # ----- is the root usable

    def _first_existing(self) -> Path:
        """The root, or the nearest folder above it that exists (where mkdir will start)."""
        path = self.root
        while True:
            try:
                if path.exists() or path == path.parent:
                    return path
            except OSError as error:  # a parent that cannot be searched
                raise ArtifactsRootError(
                    f"Artifacts root {self.root} is not writable ({path}: {error.strerror}): choose another with --artifacts or fix its permissions."
                ) from None
            path = path.parent

    def check_folder(self) -> None:
        """One sentence when the root (or a folder it would be made in) is a file, or its bucket is not there: for every command."""
        self.storage.check_readable()
        path = self._first_existing()
        if not path.is_dir():
            where = "" if path == self.root else f" ({path} above it is a file)"
            raise ArtifactsRootError(f"Artifacts root {self.root} is a file, not a folder{where}: choose another with --artifacts.")

    def check_writable(self) -> None:
        """One sentence when this process cannot write the root: checked before any step runs or the champion lock opens.

        os.access, not a trial write: it sees read-only mounts for root too, and writes nothing (a bucket's storage
        writes, reads back and deletes one small object).
        """
        self.check_folder()
        self.storage.check_writable()
        base = self._first_existing()
        folders = [base, *(d for d in (self.runs_dir, self.cache_dir) if d.is_dir())]
        files = [f for f in (self.champions.file, self.champions.lock_file) if f.is_file()]
        for path in folders:
            if not os.access(path, os.W_OK | os.X_OK):
                raise ArtifactsRootError(
                    f"Artifacts root {self.root} is not writable (no write permission on {path}): choose another with --artifacts or fix its permissions."
                )
        for path in files:
            if not os.access(path, os.W_OK):
                raise ArtifactsRootError(
                    f"Artifacts root {self.root} is not writable (no write permission on {path}): choose another with --artifacts or fix its permissions."
                )

    # ----- cache entries (tasks/store/cache.py): the signatures tasks/caching.py and the flows call

    def entry_dir(self, step: str, key: str) -> Path:
        return self.cache.entry_dir(step, key)

    def read_entry(self, step: str, key: str) -> StepOutput | None:
        return self.cache.read_entry(step, key)

    def produce(self, step: str, key: str, work: Callable[[Path], dict[str, Any]], made_by: str | None = None,
                refresh: bool = False) -> StepOutput:
        return self.cache.produce(step, key, work, made_by=made_by, refresh=refresh)

    def local_output(self, output: StepOutput) -> StepOutput:
        return self.cache.local_output(output)

    def clean_stale_partials(self, step: str | None = None) -> list[Path]:
        return self.cache.clean_stale_partials(step)

    # ----- runs (tasks/store/runs.py)

    def run_dir(self, run_id: str) -> Path:
        return self.runs.run_dir(run_id)

    def check_run_id(self, run_id: str) -> str:
        return self.runs.check_run_id(run_id)

    def list_runs(self) -> list[dict[str, Any]]:
        return self.runs.list_runs()

    def completed_runs(self) -> list[str]:
        return self.runs.completed_runs()

    def load_manifest(self, folder: Path) -> Manifest:
        return self.runs.load_manifest(folder)

    def resolve_run(self, run_id: str, model: str | None = None) -> Path:
        return self.runs.resolve_run(run_id, model)

    def start_run(self, config: dict[str, Any], *, run_id: str | None = None, derived_from: str | None = None,
                  flow_run_id: str | None = None) -> RunRecord:
        return self.runs.start_run(config, run_id=run_id, derived_from=derived_from, flow_run_id=flow_run_id)

    def open_run(self, folder: Path) -> RunRecord:
        return self.runs.open_run(folder)

    def fetch_run_folder(self, run_id: str) -> Path:
        return self.runs.fetch_run_folder(run_id)

    def push(self, path: Path) -> None:
        """A file or folder of the local folder (a scoring run's output) to the root's storage: nothing for a folder root."""
        self.storage.push(path)
