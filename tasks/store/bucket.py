"""The bucket backend (BucketStorage): a URL root's files between this machine's mirror and the bucket: cache entries, run folders, manifests.

A cache entry in a bucket is written once. Its writer uploads the files under a folder of its own,
cache/<step>/<key>/<version>/..., and then claims the entry by creating cache/<step>/<key>/_entry.json
only if there is none (S3 If-None-Match: *), naming that version. Two machines that computed the same
key at once never mix their files: the first claim wins, and the other discards its upload and takes
the winner's entry, its mirror re-linked to the winner's files. A claim is replaced only when it is
damaged (its files missing or not matching their sha256) or on --refresh, and then only the claim that
was read (If-Match its ETag), so two replacers cannot both win. A run folder's files are copied in the
bucket from the version its manifest records, which nobody rewrites: what a manifest records is what
its folder holds.

The mirror is a cache of the bucket, never a second source of truth: runs are listed from the bucket,
and a run gone from the bucket is dropped from the mirror too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, cast

from tasks.store.backend import Storage
from tasks.store.entries import StepOutput, new_version, parse_entry
from tasks.store.lock_object import hold_lock_object
from tasks.store.files import ENTRY_FILE, WRITER_FILE, atomic_path, install_folder, safe_relative_name, sha256_file, write_json
from tasks.store.manifest import MANIFEST_FILE, ArtifactsRootError, BadRunIdError, ManifestError, RunError, load_manifest, manifest_from_text
from tasks.store.process import process_stamp
from tasks.store.remote import RemoteRoot, UnusableRemote, mirror_folder

CLAIM_TRIES = 3  # claims replaced under this writer this many times in a row: it keeps its own version, unclaimed


class BucketStorage(Storage):
    """A URL root: its objects in a bucket (self.remote, tasks/store/remote.py), worked on in a local mirror (self.root)."""

    def __init__(self, url: str):
        try:
            self.remote = RemoteRoot(url)
        except ArtifactsRootError as error:  # callers make the store before their error handling: its first use says it
            self.remote = cast(RemoteRoot, UnusableRemote(url, error))
        self.location = self.remote.url
        self.root = mirror_folder(self.location)

    def where(self, path: Path | None = None) -> str:
        path = self.root if path is None else Path(path)
        try:
            rel = path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)
        return self.remote.url_of("" if rel == "." else rel)

    def _rel(self, path: Path) -> str:
        return self.key(path)

    def entry_dir(self, step: str, key: str) -> Path:
        return self.root / "cache" / step / key

    def _objects(self, output: StepOutput) -> str:
        """Where an entry's files are in the bucket: its version's folder (entries made before versions: the entry's)."""
        rel = self._rel(self.entry_dir(output.step, output.key))
        return f"{rel}/{output.objects}" if output.objects else rel

    # ----- objects, whole (tasks/store/remote.py does the calls)

    def read_bytes(self, key: str) -> bytes | None:
        return self.remote.read_bytes(key)

    def read_with_tag(self, key: str) -> tuple[bytes | None, str | None]:
        return self.remote.read_with_tag(key)

    def write_bytes(self, key: str, data: bytes, *, create: bool = False, if_match: str | None = None, if_absent: bool = False) -> None:
        self.remote.write_bytes(key, data, create=create, if_match=if_match, if_absent=if_absent)

    def delete(self, key: str) -> None:
        self.remote.delete(key)

    def replace(self, key: str, data: bytes, tag: str | None) -> None:
        """On S3 conditional on the record read being the one there (If-Match its ETag, If-None-Match when there was
        none); then the mirror's copy, for anyone reading this folder."""
        super().replace(key, data, tag)
        with atomic_path(self.root / key) as scratch:
            scratch.write_bytes(data)

    @contextlib.contextmanager
    def exclusive(self, key: str) -> Iterator[None]:
        with hold_lock_object(self, key):
            yield

    def check_readable(self) -> None:
        self.remote.check_readable()

    def check_writable(self) -> None:
        self.remote.check()

    def manifest_fix(self, folder: Path) -> str:
        url = self.where(folder)
        delete = f"aws s3 rm --recursive {url}/" if self.remote.is_s3 else f"delete every object under {url}/"
        return f"restore it from a backup or an earlier version of the object, or delete the run with `{delete}`"

    def holds_locally(self, path: Path) -> bool:
        """A pointer made on another worker names a folder of that worker's mirror: not readable here."""
        return Path(path).is_dir() and Path(path).is_relative_to(self.root)

    def transfer_summary(self) -> list[str]:
        """What this process sent to the bucket (server-side copies not counted: nothing travels)."""
        return [f"uploaded {RemoteRoot.uploaded_bytes} bytes to {self.location}"]

    # ----- cache entries

    def publish_entry(self, scratch: Path, output: StepOutput, *, refresh: bool = False) -> tuple[StepOutput, bool]:
        """Upload a new entry's files under a version of its own, then claim the entry.

        Returns the output to use and whether to install it from scratch: this writer's own when its claim
        won (True); else the claim already there, fetched into the mirror and checked, marked reused (False),
        even when its bytes are these (a damaged claim is told only by fetching it). refresh, or a damaged
        claim, replaces the claim that was read, and only that one.
        """
        mine = output.model_copy(update={"objects": new_version()})
        for name in sorted(mine.files):
            self.remote.put_file(scratch / name, f"{self._objects(mine)}/{name}")
        claim = f"{self._rel(self.entry_dir(mine.step, mine.key))}/{ENTRY_FILE}"
        body = mine.model_dump_json(indent=2).encode()
        for _ in range(CLAIM_TRIES):
            data, tag = self.remote.read_with_tag(claim)
            current = parse_entry(data, mine.step, mine.key)
            if current is not None and not refresh:
                adopted = self._download_entry(current)
                if adopted is not None:
                    self._delete_objects(mine)
                    return adopted.model_copy(update={"reused": True}), False
            try:
                if data is None:
                    self.remote.write_bytes(claim, body, create=True, if_absent=True)
                else:  # S3: only if it is still the claim read (If-Match); elsewhere a plain replace
                    self.remote.write_bytes(claim, body, if_match=tag)
            except FileExistsError:
                refresh = False  # another writer claimed it meanwhile: theirs stands, even against --refresh
                continue
            if current is not None:
                self._delete_objects(current)  # superseded: no claim names it now
            return mine, True
        return mine, True

    def _download_entry(self, output: StepOutput) -> StepOutput | None:
        """Download a claimed entry's files into the mirror, each checked against its sha256, and install
        them whole; None when one is missing or differs (replaced meanwhile, or damaged)."""
        final = self.entry_dir(output.step, output.key)
        final.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{output.key}.", suffix=".partial", dir=final.parent))
        try:
            write_json(scratch / WRITER_FILE, process_stamp())
            for name, digest in sorted(output.files.items()):
                try:
                    self.remote.get_file(f"{self._objects(output)}/{name}", scratch / name)
                except FileNotFoundError:
                    return None
                if sha256_file(scratch / name) != digest:
                    return None
            (scratch / WRITER_FILE).unlink()
            local = output.model_copy(update={"dir": str(final), "reused": False})
            write_json(scratch / ENTRY_FILE, local.model_dump(mode="json"))
            install_folder(scratch, final)
            return local
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def fetch_entry(self, step: str, key: str) -> StepOutput | None:
        """The bucket's entry for this key, fetched whole into the mirror; None when there is none (or it is damaged)."""
        claim = self.remote.read_bytes(f"{self._rel(self.entry_dir(step, key))}/{ENTRY_FILE}")
        current = parse_entry(claim, step, key)
        return self._download_entry(current) if current is not None else None

    def _delete_objects(self, output: StepOutput) -> None:
        """An entry version no claim names any more. Best effort: a reader still copying from it sends its own bytes."""
        with contextlib.suppress(Exception):
            for name in sorted(output.files):
                self.remote.delete(f"{self._objects(output)}/{name}")

    # ----- run folders

    def push(self, path: Path) -> None:
        """Upload a file, or every file of a folder, of the mirror to the same place in the bucket."""
        path = Path(path)
        if path.is_file():
            self.remote.put_file(path, self._rel(path))
        elif path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                self.remote.put_file(file, self._rel(file))

    def push_step(self, target: Path, source: Path, objects: str | None = None) -> None:
        """A step's folder of a run, in the bucket: copied from where its files already are in the bucket (the
        entry version `objects` its output names, another run's folder: server-side, the bytes went up once), else
        uploaded (promote's own folder, a failed step's scratch, a version deleted meanwhile)."""
        source, target = Path(source), Path(target)
        inside = source.is_relative_to(self.root) and not any(part.endswith(".partial") for part in source.relative_to(self.root).parts)
        copied = inside and source.resolve() != target.resolve()
        base = (f"{self._rel(source)}/{objects}" if objects else self._rel(source)) if copied else ""
        for file in sorted(p for p in target.rglob("*") if p.is_file()):
            name = file.relative_to(target).as_posix()
            try:
                if copied:
                    self.remote.copy(f"{base}/{name}", self._rel(file))
                    continue
            except FileNotFoundError:  # what the mirror kept but the bucket lost: send the bytes
                pass
            self.remote.put_file(file, self._rel(file))

    def pull_manifest(self, folder: Path) -> bool:
        """The bucket's manifest.json of a run (or sweep) folder, validated, into the mirror; False when the
        bucket has none (the mirror's copy is dropped then). ManifestError, naming the bucket's object, when damaged."""
        folder = Path(folder)
        data = self.remote.read_bytes(f"{self._rel(folder)}/{MANIFEST_FILE}")
        if data is None:
            self.drop_mirror_copy(folder)
            return False
        try:
            manifest_from_text(data, self.where(folder / MANIFEST_FILE), self.manifest_fix(folder))
        except ManifestError:
            (folder / MANIFEST_FILE).unlink(missing_ok=True)  # no copy here of what the bucket no longer holds
            raise
        with atomic_path(folder / MANIFEST_FILE) as scratch:
            scratch.write_bytes(data)
        return True

    def drop_mirror_copy(self, folder: Path) -> None:
        """Remove a run (or sweep) folder from the mirror: the bucket has no manifest for it (deleted there).

        Kept only while it is this machine's run being started: its manifest written here, not yet sent.
        """
        folder = Path(folder)
        if not folder.is_dir():
            return
        try:
            manifest = load_manifest(folder)
        except RunError:
            manifest = None
        process = manifest.process if manifest is not None else None
        if manifest is not None and manifest.status == "running" and process is not None and process.host == socket.gethostname() and not process.gone():
            return
        shutil.rmtree(folder, ignore_errors=True)

    def pull_run(self, folder: Path) -> bool:
        """Fetch a run folder: its manifest, then every step file it records that the mirror lacks or holds
        changed (taken from the mirror's cache entry when that has it, else downloaded); False when the bucket has no run there."""
        folder = Path(folder)
        if not self.pull_manifest(folder):
            return False
        manifest = load_manifest(folder, self.where(folder / MANIFEST_FILE), self.manifest_fix(folder))
        for step, record in manifest.steps.items():
            for name, digest in record.outputs.items():
                target = folder / (record.dir or step) / name
                if target.is_file() and sha256_file(target) == digest:
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                if record.key and safe_relative_name(record.key) and "/" not in record.key:
                    cached = self.entry_dir(step, record.key) / name
                    if cached.is_file() and sha256_file(cached) == digest:
                        target.unlink(missing_ok=True)
                        os.link(cached, target)
                        continue
                with contextlib.suppress(FileNotFoundError):  # missing in the bucket: verify_run_files names it
                    with atomic_path(target) as scratch:
                        self.remote.get_file(self._rel(target), scratch)
        return True

    def run_folders(self, runs_dir: Path, check_run_id: Callable[[str], str]) -> tuple[list[Path], list[dict[str, Any]]]:
        """The run folders the bucket holds, their manifests fresh in the mirror, and a row for each damaged
        manifest; mirror folders of runs gone from the bucket are dropped."""
        names = set()
        for name in self.remote.children("runs"):
            with contextlib.suppress(BadRunIdError):
                names.add(check_run_id(name))
        for folder in sorted(runs_dir.iterdir()) if runs_dir.is_dir() else []:
            if folder.name not in names:
                with contextlib.suppress(OSError):
                    self.drop_mirror_copy(folder)
        folders, damaged = [], []
        for name in sorted(names):
            folder = runs_dir / name
            try:
                if self.pull_manifest(folder):
                    folders.append(folder)
            except ManifestError as error:
                damaged.append({"run_id": name, "status": "unreadable", "path": self.where(folder / MANIFEST_FILE), "problem": str(error)})
        return folders, damaged
