"""The artifact store: run folders with manifests, and the content-checked step cache behind them.

tasks/store/files.py writes files whole and names the run-folder files; manifest.py reads and checks
manifests; process.py tells a live writer from a dead one. This module is the store itself, and the
one place callers import from.

Layout under the artifacts root:

    runs/<run-id>/manifest.json      one folder per run, never overwritten
    runs/<run-id>/<step>/...         the step's outputs (hard links into cache/ where possible)
    cache/<step>/<key>/...           one complete entry per step fingerprint, with _entry.json
    prefect/results/, prefect/locks/ Prefect's persisted task results and cache locks

The root may be an fsspec URL (s3://bucket/prefix): the same layout is kept in the bucket, and a
local mirror folder (tasks/store/remote.py) is where steps read and write; the methods marked
"remote" below move files between the two. Local roots never touch remote code.
"""

from __future__ import annotations

import contextlib
import os
import platform
import secrets
import shutil
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel

from tasks.steps import STEPS  # noqa: F401  (the step names, for callers of the store)
from tasks.store.files import (  # noqa: F401  (the store's one interface: callers import from tasks.store)
    ENTRY_FILE, STREAM_ROWS, WRITER_FILE, RunFile, RunFiles, _hash_tree, _link_tree, atomic_path, fingerprint, iter_parquet,
    parquet_rows, read_json, sha256_file, write_json, write_text,
)
from tasks.store.manifest import (  # noqa: F401
    MANIFEST_FILE, ArtifactsRootError, BadRunIdError, ChampionError, DamagedRunError, Manifest, ManifestError, RunError,
    RunNotFoundError, StepRecord, load_manifest, require_run_files, verify_run_files,
)
from tasks.store.champions import CHAMPION_FILE, CHAMPION_LOCK, ChampionRecord, model_of_config  # noqa: F401
from tasks.store.process import ProcessStamp, pid_alive, process_stamp, stamp_gone  # noqa: F401
from tasks.store.remote import MIRROR_ENV, RemoteRoot, is_url, mirror_folder  # noqa: F401

SPLITS = ("train", "val", "test")  # ingest writes <split>.parquet, encode X_<split>.npy / y_<split>.npy
PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent


# --------------------------------------------------------------------------- step outputs


class StepOutput(BaseModel):
    """The small typed pointer one step hands the next: where its files are and what they hold."""

    step: str
    key: str
    dir: str
    files: dict[str, str]  # relative path -> sha256
    summary: dict[str, Any] = {}
    reused: bool = False  # found complete in the bucket and not recomputed (URL roots): recorded as cached
    made_by: str | None = None  # the run whose execution computed it (entries made before this was kept: None)

    @property
    def path(self) -> Path:
        return Path(self.dir)

    def file(self, name: str) -> Path:
        return Path(self.dir) / name

    @property
    def content_fingerprint(self) -> str:
        """What downstream cache keys hang on: the bytes this step produced."""
        return fingerprint(sorted(self.files.items()))



# --------------------------------------------------------------------------- the store


def new_run_id() -> str:
    """Time-ordered and unique: sorting run ids sorts runs by start time."""
    now = datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}Z-{secrets.token_hex(2)}"


def default_root() -> str:
    return os.environ.get("RNNFLOW_ARTIFACTS", "artifacts")


class ArtifactStore:
    """One artifacts root: run folders, the step cache, and where Prefect keeps results and locks.

    root is a local folder, or an fsspec URL whose files are worked on in a local mirror (self.root);
    self.location is what the user named (the URL, or the resolved folder), what crosses to other processes.
    """

    def __init__(self, root: str | Path | None = None):
        text = str(root) if root is not None else default_root()
        self.remote: RemoteRoot | None = None
        if is_url(text):
            self.remote = RemoteRoot(text)
            self.location = self.remote.url
            self.root = mirror_folder(self.location)
        else:
            self.root = Path(text).expanduser().resolve()
            self.location = str(self.root)
        self.champions = ChampionRecord(self)  # <root>/champion.json: each model's promoted run

    def where(self, path: Path | None = None) -> str:
        """A file or folder of this root as the user knows it: its URL for a URL root, else its path."""
        path = self.root if path is None else Path(path)
        if self.remote is None:
            return str(path)
        try:
            rel = path.relative_to(self.root).as_posix()
            return self.remote.url_of("" if rel == "." else rel)
        except ValueError:
            return str(path)

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def prefect_results_dir(self) -> Path:
        return self.root / "prefect" / "results"

    @property
    def locks_dir(self) -> Path:
        return self.root / "prefect" / "locks"

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
        if self.remote is not None:
            self.remote.check_readable()
        path = self._first_existing()
        if not path.is_dir():
            where = "" if path == self.root else f" ({path} above it is a file)"
            raise ArtifactsRootError(f"Artifacts root {self.root} is a file, not a folder{where}: choose another with --artifacts.")

    def check_writable(self) -> None:
        """One sentence when this process cannot write the root: checked before any step runs or the champion lock opens.

        os.access, not a trial write: it sees read-only mounts for root too, and writes nothing.
        """
        self.check_folder()
        if self.remote is not None:
            self.remote.check()
        base = self._first_existing()
        folders = [base, *(d for d in (self.runs_dir, self.cache_dir, self.root / "prefect", self.prefect_results_dir, self.locks_dir) if d.is_dir())]
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

    # ----- cache entries

    def entry_dir(self, step: str, key: str) -> Path:
        return self.cache_dir / step / key

    def read_entry(self, step: str, key: str) -> StepOutput | None:
        """The cached output for this key, only if every file is present and matches its sha256.

        For a URL root, an entry missing from the mirror is fetched from the bucket first (remote).
        """
        output = self._read_local_entry(step, key)
        if output is None and self.remote is not None and self._pull_entry(step, key):
            output = self._read_local_entry(step, key)
        return output

    def _read_local_entry(self, step: str, key: str) -> StepOutput | None:
        folder = self.entry_dir(step, key)
        try:
            output = StepOutput.model_validate(read_json(folder / ENTRY_FILE))
        except (OSError, ValueError):
            return None
        for name, digest in output.files.items():
            path = folder / name
            if not path.is_file() or sha256_file(path) != digest:
                return None
        return output

    def forget_entry(self, step: str, key: str, prefect_key: str | None = None) -> None:
        """Drop a cache entry (and Prefect's record of it) so the step recomputes."""
        if prefect_key:
            (self.prefect_results_dir / prefect_key).unlink(missing_ok=True)
        shutil.rmtree(self.entry_dir(step, key), ignore_errors=True)

    def produce(self, step: str, key: str, work: Callable[[Path], dict[str, Any]], made_by: str | None = None) -> StepOutput:
        """Run work(out_dir) in a scratch folder and move the result into the cache whole.

        A failed or killed step leaves only a scratch folder (cleaned here, or ignored later),
        never a partial entry: the entry appears by one rename once every file is written.
        """
        final = self.entry_dir(step, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        self.clean_stale_partials(step)
        scratch = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".partial", dir=final.parent))
        try:
            write_json(scratch / WRITER_FILE, process_stamp())
            summary = work(scratch) or {}
            output = StepOutput(step=step, key=key, dir=str(final), files=_hash_tree(scratch), summary=summary, made_by=made_by)
            write_json(scratch / ENTRY_FILE, output.model_dump(mode="json"))
            self._install(scratch, final)
            (final / WRITER_FILE).unlink(missing_ok=True)  # the entry is whole now; hashing and linking skip it anyway
            if self.remote is not None:
                self._push_entry(final, output)
            return output
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    @staticmethod
    def _install(scratch: Path, final: Path) -> None:
        """Swap a finished scratch folder in as final by one rename (a stale or refreshed one moved aside first)."""
        if final.exists():
            trash = final.with_name(f".{final.name}.{secrets.token_hex(3)}.old")
            os.replace(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(scratch, final)

    def _push_entry(self, final: Path, output: StepOutput) -> None:
        """(remote) Upload a new entry: its old _entry.json removed first, the files, then _entry.json last,
        so a reader in another process sees no entry or a whole one (read_entry checks every sha256 anyway)."""
        assert self.remote is not None
        rel = final.relative_to(self.root).as_posix()
        self.remote.delete(f"{rel}/{ENTRY_FILE}")
        for name in sorted(output.files):
            self.remote.put_file(final / name, f"{rel}/{name}")
        self.remote.put_file(final / ENTRY_FILE, f"{rel}/{ENTRY_FILE}")

    def _pull_entry(self, step: str, key: str) -> bool:
        """(remote) Fetch a whole entry from the bucket into the mirror; False when the bucket has none."""
        assert self.remote is not None
        final = self.entry_dir(step, key)
        rel = final.relative_to(self.root).as_posix()
        data = self.remote.read_bytes(f"{rel}/{ENTRY_FILE}")
        if data is None:
            return False
        try:
            output = StepOutput.model_validate_json(data)
        except ValueError:
            return False
        final.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".partial", dir=final.parent))
        try:
            write_json(scratch / WRITER_FILE, process_stamp())
            for name in sorted(output.files):
                try:
                    self.remote.get_file(f"{rel}/{name}", scratch / name)
                except FileNotFoundError:
                    return False  # being replaced, or damaged: a miss, and the step recomputes
            (scratch / WRITER_FILE).unlink()
            write_json(scratch / ENTRY_FILE, output.model_copy(update={"dir": str(final), "reused": False}).model_dump(mode="json"))
            self._install(scratch, final)
            return True
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def local_output(self, output: StepOutput) -> StepOutput:
        """A step's output as this process can read it: for a URL root, the entry in this machine's mirror
        (fetched when missing; a pointer made on another worker names a folder of that worker's)."""
        if self.remote is None or (output.path.is_dir() and output.path.is_relative_to(self.root)):
            return output
        found = self.read_entry(output.step, output.key)
        if found is None:
            raise RunError(
                f"The {output.step} output {output.key} is not in the cache at {self.where(self.cache_dir)}: rerun the step with 'rnnflow run'."
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

    # ----- runs

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def list_runs(self) -> list[dict[str, Any]]:
        """Every run folder's manifest, validated, in run id (start time) order.

        A manifest that is not one is listed as {"run_id", "status": "unreadable", "path", "problem"}
        rather than hiding every other run; a run whose process is gone from this host shows failed.
        """
        runs: list[dict[str, Any]] = []
        if self.remote is not None:
            self._pull_manifests()
        if not self.runs_dir.is_dir():
            return runs
        with contextlib.suppress(OSError):  # a read-only root still lists
            self.clean_stale_partials()
        for folder in sorted(self.runs_dir.iterdir()):
            if not (folder / MANIFEST_FILE).is_file():
                continue
            try:
                manifest = self.mark_if_killed(folder, load_manifest(folder))
            except ManifestError as error:
                runs.append({"run_id": folder.name, "status": "unreadable", "path": str(folder / MANIFEST_FILE), "problem": str(error)})
                continue
            runs.append({**manifest.model_dump(mode="json"), "run_id": folder.name, "shown_status": manifest.shown_status})
        return runs

    def mark_if_killed(self, folder: Path, manifest: Manifest) -> Manifest:
        """A `running` run whose process is gone from this host (kill -9, a lost machine) is failed: record that.

        Runs of other hosts are never rewritten: their process cannot be seen from here.
        """
        if manifest.status != "running" or manifest.process is None or not manifest.process.gone():
            return manifest
        reason = f"killed: its process (pid {manifest.process.pid} on {manifest.process.host}) ended before the run finished"
        try:
            record = RunRecord.load(folder, store=self)
            record.manifest.update(status="failed", killed=True, error=reason)
            record.save()
        except (OSError, RunError):
            pass  # a read-only root: still shown as failed, just not recorded
        return manifest.model_copy(update={"status": "failed", "killed": True, "error": reason})

    def check_run_id(self, run_id: str) -> str:
        """run_id if it names a folder directly under runs/: a plain name, no separators, no '..'."""
        text = str(run_id)
        if not text or text in (".", "..") or any(sep in text for sep in ("/", "\\", "\0")) or os.path.isabs(text):
            raise BadRunIdError(
                f"{text!r} is not a run id: give the id of a run under {self.runs_dir} ('rnnflow runs' lists them), 'latest' or 'champion'."
            )
        return text

    def completed_runs(self) -> list[str]:
        """Ids of the completed runs, oldest first; unreadable manifests are skipped, not fatal."""
        return [run["run_id"] for run in self.list_runs() if run.get("status") == "completed"]

    def resolve_run(self, run_id: str, model: str | None = None) -> Path:
        """A run folder by id, 'latest' for the newest completed run, or 'champion' for model's promoted one
        (model may be left out while the root holds one champion).

        Nothing else: a path ('../other/runs/ID', '/abs/ID') or a link out of runs/ is refused, so a
        command never reads or rewrites a run outside this root. Its manifest is validated; one
        clear sentence (a RunError) for anything wrong.
        """
        if run_id == "champion":
            pointer = self.champions.choose(model)
            run_id = pointer["run_id"]
            if self.remote is not None:
                self.pull_manifest(self.run_dir(self.check_run_id(run_id)))
            if not (self.run_dir(run_id) / MANIFEST_FILE).is_file():
                raise RunNotFoundError(
                    f"The champion {run_id} of model {pointer['model']!r} named by {self.where(self.champions.file)} is gone from "
                    f"{self.where(self.runs_dir)}: promote another run with 'rnnflow promote RUN_ID --force'."
                )
        elif run_id == "latest":
            done = self.completed_runs()
            if not done:
                raise RunNotFoundError(f"No completed run under {self.runs_dir}: run 'rnnflow run' first.")
            run_id = done[-1]
        self.check_run_id(run_id)
        folder = self.run_dir(run_id)
        if self.remote is not None:
            self.pull_run(folder)
        if not (folder / MANIFEST_FILE).is_file():
            raise RunNotFoundError(f"No run {run_id!r} under {self.where(self.runs_dir)}: 'rnnflow runs' lists the run ids.")
        if folder.resolve().parent != self.runs_dir.resolve():
            raise BadRunIdError(f"Run {run_id} is a link to {folder.resolve()}, outside {self.runs_dir}: give a run that lives under this root.")
        load_manifest(folder)  # one sentence now, rather than an AttributeError in whoever reads it next
        return folder

    def start_run(
        self, config: dict[str, Any], *, run_id: str | None = None, derived_from: str | None = None, flow_run_id: str | None = None
    ) -> "RunRecord":
        run_id = run_id or new_run_id()
        folder = self.run_dir(run_id)
        if self.remote is not None:
            self.pull_manifest(folder)
        if (folder / MANIFEST_FILE).is_file():
            # A retried flow run (from the UI or `prefect flow-run retry`) comes back with the same
            # run id: it resumes its own folder, and the step cache supplies what already finished.
            record = RunRecord.load(folder, store=self)
            if record.manifest["status"] == "completed":
                raise FileExistsError(f"Run {run_id} already completed: start a new run instead of reusing its id.")
            record.manifest["status"] = "running"
            record.manifest["attempts"] = record.manifest.get("attempts", 1) + 1
            record.manifest["process"] = process_stamp()  # the process that resumed it now owns it
            record.manifest.pop("error", None)
            record.manifest.pop("killed", None)
            record.save()
            return record
        # Which process runs it: a run whose process is gone (kill -9) shows as failed, not running forever.
        return RunRecord.create(folder, {"run_id": run_id, "attempts": 1, "derived_from": derived_from, "process": process_stamp()},
                                config=config, flow_run_id=flow_run_id, store=self)

    def open_run(self, folder: Path) -> "RunRecord":
        """The record of a run (or sweep) folder of this root, its manifest fresh from the bucket for a URL root."""
        if self.remote is not None:
            self.pull_manifest(folder)
        return RunRecord.load(folder, store=self)

    # ----- (remote) run folders between the mirror and the bucket

    def _rel(self, path: Path) -> str:
        return Path(path).relative_to(self.root).as_posix()

    def push(self, path: Path) -> None:
        """(remote) Upload a file, or every file of a folder, of the mirror to the same place in the bucket."""
        if self.remote is None:
            return
        path = Path(path)
        if path.is_file():
            self.remote.put_file(path, self._rel(path))
        elif path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                self.remote.put_file(file, self._rel(file))

    def push_step(self, target: Path, source: Path) -> None:
        """(remote) A step's folder of a run, in the bucket: copied there from where its files already are in the bucket
        (a cache entry, another run's folder: server-side, the bytes went up once), else uploaded (promote's own folder,
        a failed step's scratch)."""
        if self.remote is None:
            return
        source, target = Path(source), Path(target)
        inside = source.is_relative_to(self.root) and not any(part.endswith(".partial") for part in source.relative_to(self.root).parts)
        copied = inside and source.resolve() != target.resolve()
        for file in sorted(p for p in target.rglob("*") if p.is_file()):
            name = file.relative_to(target).as_posix()
            try:
                if copied:
                    self.remote.copy(self._rel(source / name), self._rel(file))
                    continue
            except FileNotFoundError:  # what the mirror kept but the bucket lost: send the bytes
                pass
            self.remote.put_file(file, self._rel(file))

    def pull_manifest(self, folder: Path) -> bool:
        """(remote) Fetch a run folder's manifest.json from the bucket into the mirror; False when it has none."""
        assert self.remote is not None
        data = self.remote.read_bytes(f"{self._rel(folder)}/{MANIFEST_FILE}")
        if data is None:
            return False
        Path(folder).mkdir(parents=True, exist_ok=True)
        write_text(Path(folder) / MANIFEST_FILE, data.decode("utf-8"))
        return True

    def _pull_manifests(self) -> None:
        assert self.remote is not None
        for name in self.remote.children("runs"):
            with contextlib.suppress(BadRunIdError):
                self.pull_manifest(self.run_dir(self.check_run_id(name)))

    def pull_run(self, folder: Path) -> None:
        """(remote) Fetch a run folder: its manifest, then every step file it records that the mirror lacks or holds
        changed (taken from the mirror's cache entry when that has it, else downloaded)."""
        if not self.pull_manifest(folder):
            return
        try:
            manifest = read_json(Path(folder) / MANIFEST_FILE)
        except (OSError, ValueError):
            return  # load_manifest says what is wrong with it
        for step, entry in (manifest.get("steps") or {}).items():
            for name, digest in (entry.get("outputs") or {}).items():
                target = Path(folder) / str(entry.get("dir") or step) / name
                if target.is_file() and sha256_file(target) == digest:
                    continue
                cached = self.entry_dir(step, str(entry.get("key"))) / name
                target.parent.mkdir(parents=True, exist_ok=True)
                if cached.is_file() and sha256_file(cached) == digest:
                    target.unlink(missing_ok=True)
                    os.link(cached, target)
                    continue
                with contextlib.suppress(FileNotFoundError):  # missing in the bucket: verify_run_files names it
                    with atomic_path(target) as scratch:
                        self.remote.get_file(f"{self._rel(target)}", scratch)

    def fetch_run_folder(self, run_id: str) -> Path:
        """A run folder by id, its files in the mirror for a URL root (may not exist: callers check)."""
        folder = self.run_dir(self.check_run_id(run_id))
        if self.remote is not None:
            self.pull_run(folder)
        return folder


class RunRecord:
    """One run folder and its manifest; the flow process is its only writer."""

    def __init__(self, folder: Path, store: ArtifactStore | None = None):
        self.folder = Path(folder)
        self.manifest: dict[str, Any] = {}
        self.store = store  # for a URL root: every save also goes to the bucket

    @classmethod
    def load(cls, folder: Path, store: ArtifactStore | None = None) -> "RunRecord":
        record = cls(folder, store)
        load_manifest(folder)  # validated; the raw dict is kept so saving never drops or reshapes a key
        record.manifest = read_json(Path(folder) / MANIFEST_FILE)
        return record

    @classmethod
    def create(cls, folder: Path, identity: dict[str, Any], *, config: dict[str, Any], flow_run_id: str | None,
               store: ArtifactStore | None = None, **fields: Any) -> "RunRecord":
        """A new folder (never an existing one) and the manifest every record starts with: a run's, or a sweep's."""
        folder = Path(folder)
        if store is not None and store.remote is not None and store.remote.read_bytes(f"{store._rel(folder)}/{MANIFEST_FILE}") is not None:
            raise FileExistsError(f"{store.where(folder)} already exists: start a new run instead of reusing its id.")
        folder.mkdir(parents=True, exist_ok=False)
        record = cls(folder, store)
        record.manifest = {
            **identity,
            "status": "running",
            "started_at": utc_now(),
            "finished_at": None,
            "prefect_flow_run_id": flow_run_id,
            **fields,
            "config": config,
            "inputs": {},
            "steps": {},
            "environment": environment_versions(),
        }
        record.save()
        return record

    @property
    def run_id(self) -> str:
        return self.manifest["run_id"]

    @property
    def record_id(self) -> str:
        """What names this record as the maker of a step's output: a run's id, or a sweep's for the steps it shares."""
        return self.manifest.get("run_id") or self.manifest["sweep_id"]

    @property
    def location(self) -> str:
        """The run folder as the user knows it: its URL in the bucket for a URL root."""
        return self.store.where(self.folder) if self.store is not None else str(self.folder)

    def save(self) -> None:
        """The manifest, whole; for a URL root also to the bucket, after the files it names."""
        write_json(self.folder / MANIFEST_FILE, self.manifest)
        if self.store is not None:
            self.store.push(self.folder / MANIFEST_FILE)

    def link_outputs(self, step: str, source: Path) -> None:
        target = self.folder / step
        if Path(source).resolve() != target.resolve():  # else a step that writes straight into the run folder (promote)
            if target.exists():
                shutil.rmtree(target)
            _link_tree(Path(source), target)
        if self.store is not None:
            self.store.push_step(target, Path(source))

    def push_file(self, name: str) -> None:
        """(remote) One more file of the run folder (run.log) to the bucket."""
        if self.store is not None:
            self.store.push(self.folder / name)

    def record_step(self, output: StepOutput, *, status: str, seconds: float, config: dict[str, Any], made_by: str | None,
                    reused_from: str | None = None) -> None:
        """Link a step's outputs into the run folder and note them, with their sha256, in the manifest, with the
        configuration they were made with and the run that made them (tasks/provenance.py)."""
        self.link_outputs(output.step, output.path)
        self.manifest["steps"][output.step] = {
            "status": status,
            "seconds": round(seconds, 3),
            "key": output.key,
            "dir": output.step,
            "outputs": output.files,
            "summary": output.summary,
            "config": config,
            "made_by": made_by,
            **({"reused_from": reused_from} if reused_from else {}),
        }
        self.save()

    def record_failure(self, step: str, reason: str, seconds: float) -> None:
        self.manifest["steps"][step] = {"status": "failed", "seconds": round(seconds, 3), "error": reason}
        self.save()

    def finish(self, status: str, error: str | None = None) -> None:
        self.manifest["status"] = status
        self.manifest["finished_at"] = utc_now()
        if error:
            self.manifest["error"] = error
        self.save()

    def step_output(self, step: str) -> StepOutput:
        """The pointer to a completed step's files inside this run folder (for reruns from a recorded run)."""
        entry = self.manifest["steps"].get(step)
        if not entry or entry.get("status") not in ("completed", "cached"):
            raise FileNotFoundError(f"Run {self.run_id} has no completed {step} step: rerun it with 'rnnflow run'.")
        return StepOutput(step=step, key=entry["key"], dir=str(self.folder / step), files=entry["outputs"], summary=entry["summary"])


def utc_now() -> str:
    """Now, as manifests, decisions and the champion pointer record it."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def environment_versions() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("rnnflow", "tensorflow", "keras", "prefect", "great-expectations", "pandas", "pyarrow", "numpy"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5, check=False
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5, check=False
        )
        versions["git_commit"] = commit.stdout.strip() or None
        versions["git_dirty"] = bool(dirty.stdout.strip()) if commit.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        versions["git_commit"] = None
    return versions
