"""The step cache: one complete entry per step fingerprint, cache/<step>/<key>/ with its _entry.json, over the
root's storage (tasks/store/backend.py): read, produce (and claim, where the storage is shared), forget, and
clean the scratch folders of writers that died."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from tasks.store.backend import Storage
from tasks.store.entries import StepOutput, parse_entry
from tasks.store.files import ENTRY_FILE, WRITER_FILE, _hash_tree, install_folder, read_json, sha256_file, write_json
from tasks.store.manifest import RunError
from tasks.store.process import process_stamp, stamp_gone


class CacheEntries:
    """The cache entries of one artifacts root, read and written in its local folder, kept in the root by its storage."""

    def __init__(self, storage: Storage):
        self.storage = storage

    @property
    def cache_dir(self) -> Path:
        return self.storage.root / "cache"

    def entry_dir(self, step: str, key: str) -> Path:
        return self.cache_dir / step / key

    def read_entry(self, step: str, key: str) -> StepOutput | None:
        """The cached output for this key, only if every file is present and matches its sha256; an entry the local
        folder lacks is fetched from the root's storage first (a bucket's; a folder has nothing more)."""
        return self._read_local_entry(step, key) or self.storage.fetch_entry(step, key)

    def _read_local_entry(self, step: str, key: str) -> StepOutput | None:
        folder = self.entry_dir(step, key)
        try:
            output = parse_entry((folder / ENTRY_FILE).read_bytes(), step, key)
        except OSError:
            return None
        if output is None:
            return None
        for name, digest in output.files.items():
            path = folder / name
            if not path.is_file() or sha256_file(path) != digest:
                return None
        return output

    def produce(self, step: str, key: str, work: Callable[[Path], dict[str, Any]], made_by: str | None = None,
                refresh: bool = False) -> StepOutput:
        """Run work(out_dir) in a scratch folder and move the result into the cache whole.

        A failed or killed step leaves only a scratch folder (cleaned here, or ignored later),
        never a partial entry: the entry appears by one rename once every file is written.
        The storage publishes it first (Storage.publish_entry): a bucket claims the entry, and when another
        writer's claim is there, this one's output is discarded and that entry returned (reused);
        refresh replaces the bucket's claim as a folder's entry is replaced.
        """
        final = self.entry_dir(step, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        self.clean_stale_partials(step)
        scratch = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".partial", dir=final.parent))
        try:
            write_json(scratch / WRITER_FILE, process_stamp())
            summary = work(scratch) or {}
            output = StepOutput(step=step, key=key, dir=str(final), files=_hash_tree(scratch), summary=summary, made_by=made_by)
            output, install = self.storage.publish_entry(scratch, output, refresh=refresh)
            if install:
                write_json(scratch / ENTRY_FILE, output.model_copy(update={"reused": False}).model_dump(mode="json"))
                install_folder(scratch, final)
                (final / WRITER_FILE).unlink(missing_ok=True)  # the entry is whole now; hashing and linking skip it anyway
            return output
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def local_output(self, output: StepOutput) -> StepOutput:
        """A step's output as this process can read it: for a bucket, the entry in this machine's mirror
        (fetched when missing; a pointer made on another worker names a folder of that worker's)."""
        if self.storage.holds_locally(output.path):
            return output
        found = self.read_entry(output.step, output.key)
        if found is None:
            raise RunError(
                f"The {output.step} output {output.key} is not in the cache at {self.storage.where(self.cache_dir)}: rerun the step with 'rnnflow run'."
            )
        return found

    def clean_stale_partials(self, step: str | None = None) -> list[Path]:
        """Remove .partial scratch folders (of one step, or all) whose writer is gone from this host.

        A writer killed with SIGKILL never reaches produce's cleanup. Scratch without a readable
        writer record, or written on another host, is left alone: its writer may be alive.
        """
        steps = [step] if step else [p.name for p in self.cache_dir.iterdir() if p.is_dir()] if self.cache_dir.is_dir() else []
        removed = []
        for name in steps:
            for scratch in (self.cache_dir / name).glob(".*.partial"):
                try:
                    writer = read_json(scratch / WRITER_FILE)
                except (OSError, ValueError):
                    continue
                if stamp_gone(writer):
                    shutil.rmtree(scratch, ignore_errors=True)
                    removed.append(scratch)
        return removed
