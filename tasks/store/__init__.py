"""The artifact store: run folders with manifests, and the content-checked step cache behind them.

tasks/store/files.py writes files whole and names the run-folder files; manifest.py reads and checks
manifests; entries.py is a step's output and its cache entry as read back; process.py tells a live
writer from a dead one; bucket.py moves files between a URL root's mirror and its bucket. This module
is the store itself, and the one place callers import from.

Layout under the artifacts root:

    runs/<run-id>/manifest.json      one folder per run, never overwritten
    runs/<run-id>/<step>/...         the step's outputs (hard links into cache/ where possible)
    cache/<step>/<key>/...           one complete entry per step fingerprint, with _entry.json (the only cache record)
    locks/<step>/<key>.lock          an entry's lock while a process looks it up or makes it (tasks/caching.py)

The root may be an fsspec URL (s3://bucket/prefix): the same layout is kept in the bucket, and a
local mirror folder (tasks/store/remote.py) is where steps read and write; the methods marked
"remote" (tasks/store/bucket.py) move files between the two. Local roots never touch remote code.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, cast

from tasks.steps import STEPS  # noqa: F401  (the step names, for callers of the store)
from tasks.store.files import (  # noqa: F401  (the store's one interface: callers import from tasks.store)
    ENTRY_FILE, STREAM_ROWS, WRITER_FILE, RunFile, RunFiles, _hash_tree, _link_tree, atomic_path, fingerprint, iter_parquet,
    parquet_rows, read_json, sha256_file, write_json, write_text,
)
from tasks.store.manifest import (  # noqa: F401
    LOCAL_MANIFEST_FIX, MANIFEST_FILE, ArtifactsRootError, BadRunIdError, ChampionError, DamagedRunError, Manifest, ManifestError,
    RunError, RunNotFoundError, StepRecord, load_manifest, require_run_files, verify_run_files,
)
from tasks.store.entries import StepOutput, parse_entry  # noqa: F401
from tasks.store.bucket import BucketSync
from tasks.store.champions import CHAMPION_FILE, CHAMPION_LOCK, ChampionRecord, model_of_config  # noqa: F401
from tasks.store.process import ProcessStamp, pid_alive, process_stamp, stamp_gone  # noqa: F401
from tasks.store.remote import MIRROR_ENV, RemoteRoot, UnusableRemote, is_url, mirror_folder  # noqa: F401
from tasks.store.record import PROJECT_ROOT, RunRecord, environment_versions, utc_now  # noqa: F401

SPLITS = ("train", "val", "test")  # ingest writes <split>.parquet, encode X_<split>.npy / y_<split>.npy


# --------------------------------------------------------------------------- the store


def new_run_id() -> str:
    """Time-ordered and unique: sorting run ids sorts runs by start time."""
    now = datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}Z-{secrets.token_hex(2)}"


def default_root() -> str:
    return os.environ.get("RNNFLOW_ARTIFACTS", "artifacts")


class ArtifactStore(BucketSync):
    """One artifacts root: run folders, the step cache, and where Prefect keeps results and locks.

    root is a local folder, or an fsspec URL whose files are worked on in a local mirror (self.root);
    self.location is what the user named (the URL, or the resolved folder), what crosses to other processes.
    """

    def __init__(self, root: str | Path | None = None):
        text = str(root) if root is not None else default_root()
        self.remote: RemoteRoot | None = None
        if is_url(text):
            try:
                self.remote = RemoteRoot(text)
            except ArtifactsRootError as error:  # callers make the store before their error handling: its first use says it
                self.remote = cast(RemoteRoot, UnusableRemote(text, error))
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

    # ----- cache entries

    def entry_dir(self, step: str, key: str) -> Path:
        return self.cache_dir / step / key

    def read_entry(self, step: str, key: str) -> StepOutput | None:
        """The cached output for this key, only if every file is present and matches its sha256.

        For a URL root, an entry missing from the mirror is fetched from the bucket first (remote).
        """
        output = self._read_local_entry(step, key)
        if output is None and self.remote is not None:
            output = self._pull_entry(step, key)
        return output

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

    def forget_entry(self, step: str, key: str) -> None:
        """Drop a cache entry so the step recomputes."""
        shutil.rmtree(self.entry_dir(step, key), ignore_errors=True)

    def produce(self, step: str, key: str, work: Callable[[Path], dict[str, Any]], made_by: str | None = None,
                refresh: bool = False) -> StepOutput:
        """Run work(out_dir) in a scratch folder and move the result into the cache whole.

        A failed or killed step leaves only a scratch folder (cleaned here, or ignored later),
        never a partial entry: the entry appears by one rename once every file is written.
        For a URL root the entry is claimed in the bucket first (tasks/store/bucket.py): when another
        writer's claim is there, this one's output is discarded and that entry returned (reused);
        refresh replaces the bucket's claim as a local root's entry is replaced.
        """
        final = self.entry_dir(step, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        self.clean_stale_partials(step)
        scratch = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".partial", dir=final.parent))
        try:
            write_json(scratch / WRITER_FILE, process_stamp())
            summary = work(scratch) or {}
            output = StepOutput(step=step, key=key, dir=str(final), files=_hash_tree(scratch), summary=summary, made_by=made_by)
            install = True
            if self.remote is not None:
                output, install = self._push_entry(scratch, output, refresh=refresh)
            if install:
                write_json(scratch / ENTRY_FILE, output.model_copy(update={"reused": False}).model_dump(mode="json"))
                self._install(scratch, final)
                (final / WRITER_FILE).unlink(missing_ok=True)  # the entry is whole now; hashing and linking skip it anyway
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
        if self.remote is not None:  # the bucket's runs, never the mirror's: a run deleted there is gone here too
            folders, runs = self.bucket_runs()
        elif self.runs_dir.is_dir():
            folders = sorted(folder for folder in self.runs_dir.iterdir() if (folder / MANIFEST_FILE).is_file())
        else:
            return runs
        with contextlib.suppress(OSError):  # a read-only root still lists
            self.clean_stale_partials()
        for folder in folders:
            try:
                manifest = self.mark_if_killed(folder, self.load_manifest(folder))
            except ManifestError as error:
                runs.append({"run_id": folder.name, "status": "unreadable", "path": self.where(folder / MANIFEST_FILE), "problem": str(error)})
                continue
            runs.append({**manifest.model_dump(mode="json"), "run_id": folder.name, "shown_status": manifest.shown_status})
        return sorted(runs, key=lambda run: run["run_id"])

    def load_manifest(self, folder: Path) -> Manifest:
        """A run folder's manifest, validated; a damaged one named as the user knows it (the bucket's object for a URL root)."""
        return load_manifest(folder, self.where(Path(folder) / MANIFEST_FILE), self.manifest_fix(folder))

    def manifest_fix(self, folder: Path) -> str:
        """What to do about a run folder's damaged manifest, where it lives."""
        if self.remote is None:
            return LOCAL_MANIFEST_FIX
        url = self.where(folder)
        delete = f"aws s3 rm --recursive {url}/" if self.remote.is_s3 else f"delete every object under {url}/"
        return f"restore it from a backup or an earlier version of the object, or delete the run with `{delete}`"

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
            folder = self.run_dir(self.check_run_id(run_id))
            present = self.pull_manifest(folder) if self.remote is not None else (folder / MANIFEST_FILE).is_file()
            if not present:
                raise RunNotFoundError(
                    f"The champion {run_id} of model {pointer['model']!r} named by {self.where(self.champions.file)} is gone from "
                    f"{self.where(self.runs_dir)}: promote another run with 'rnnflow promote RUN_ID --force'."
                )
        elif run_id == "latest":
            runs = self.list_runs()
            done = [run["run_id"] for run in runs if run.get("status") == "completed"]
            if not done:
                damaged = sum(run["status"] == "unreadable" for run in runs)
                unreadable = f" ({damaged} run{'s' if damaged > 1 else ''} with a damaged manifest: 'rnnflow runs' names them)" if damaged else ""
                raise RunNotFoundError(f"No completed run under {self.where(self.runs_dir)}{unreadable}: run 'rnnflow run' first.")
            run_id = done[-1]
        self.check_run_id(run_id)
        folder = self.run_dir(run_id)
        present = self.pull_run(folder) if self.remote is not None else (folder / MANIFEST_FILE).is_file()
        if not present:
            raise RunNotFoundError(f"No run {run_id!r} under {self.where(self.runs_dir)}: 'rnnflow runs' lists the run ids.")
        if folder.resolve().parent != self.runs_dir.resolve():
            raise BadRunIdError(f"Run {run_id} is a link to {folder.resolve()}, outside {self.runs_dir}: give a run that lives under this root.")
        self.load_manifest(folder)  # one sentence now, rather than an AttributeError in whoever reads it next
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
        if self.remote is not None and not self.pull_manifest(folder):
            raise RunNotFoundError(f"No {MANIFEST_FILE} at {self.where(folder)}: 'rnnflow runs' lists the run ids.")
        return RunRecord.load(folder, store=self)

    def fetch_run_folder(self, run_id: str) -> Path:
        """A run folder by id, its files in the mirror for a URL root (may not exist: callers check); ManifestError, naming
        the file (the bucket's object for a URL root), when its manifest is damaged: damaged is not gone."""
        folder = self.run_dir(self.check_run_id(run_id))
        if self.remote is not None:
            self.pull_run(folder)
        elif (folder / MANIFEST_FILE).is_file():
            self.load_manifest(folder)
        return folder
