"""The artifact store: run folders with manifests, and the content-checked step cache behind them.

tasks/store/files.py writes files whole and names the run-folder files; manifest.py reads and checks
manifests; process.py tells a live writer from a dead one. This module is the store itself, and the
one place callers import from.

Layout under the artifacts root:

    runs/<run-id>/manifest.json      one folder per run, never overwritten
    runs/<run-id>/<step>/...         the step's outputs (hard links into cache/ where possible)
    cache/<step>/<key>/...           one complete entry per step fingerprint, with _entry.json
    prefect/results/, prefect/locks/ Prefect's persisted task results and cache locks
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import secrets
import shutil
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

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
from tasks.store.process import ProcessStamp, pid_alive, process_stamp, stamp_gone  # noqa: F401

SPLITS = ("train", "val", "test")  # ingest writes <split>.parquet, encode X_<split>.npy / y_<split>.npy
CHAMPION_FILE = "champion.json"  # <root>/champion.json: the run whose model is promoted (tasks/promote.py decides)
CHAMPION_LOCK = "champion.lock"  # <root>/champion.lock: held while the pointer is read, compared and replaced
PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent


# --------------------------------------------------------------------------- step outputs


class StepOutput(BaseModel):
    """The small typed pointer one step hands the next: where its files are and what they hold."""

    step: str
    key: str
    dir: str
    files: dict[str, str]  # relative path -> sha256
    summary: dict[str, Any] = {}

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


def default_root() -> Path:
    return Path(os.environ.get("RNNFLOW_ARTIFACTS", "artifacts"))


class ArtifactStore:
    """One artifacts root: run folders, the step cache, and where Prefect keeps results and locks."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_root()
        self.root = self.root.expanduser().resolve()

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
        """One sentence when the root (or a folder it would be made in) is a file: for every command."""
        path = self._first_existing()
        if not path.is_dir():
            where = "" if path == self.root else f" ({path} above it is a file)"
            raise ArtifactsRootError(f"Artifacts root {self.root} is a file, not a folder{where}: choose another with --artifacts.")

    def check_writable(self) -> None:
        """One sentence when this process cannot write the root: checked before any step runs or the champion lock opens.

        os.access, not a trial write: it sees read-only mounts for root too, and writes nothing.
        """
        self.check_folder()
        base = self._first_existing()
        folders = [base, *(d for d in (self.runs_dir, self.cache_dir, self.root / "prefect", self.prefect_results_dir, self.locks_dir) if d.is_dir())]
        files = [f for f in (self.champion_file, self.root / CHAMPION_LOCK) if f.is_file()]
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
        """The cached output for this key, only if every file is present and matches its sha256."""
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

    def produce(self, step: str, key: str, work: Callable[[Path], dict[str, Any]]) -> StepOutput:
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
            output = StepOutput(step=step, key=key, dir=str(final), files=_hash_tree(scratch), summary=summary)
            write_json(scratch / ENTRY_FILE, output.model_dump(mode="json"))
            if final.exists():  # a stale or refreshed entry: move it aside, then swap
                trash = final.with_name(f".{key}.{secrets.token_hex(3)}.old")
                os.replace(final, trash)
                shutil.rmtree(trash, ignore_errors=True)
            os.replace(scratch, final)
            (final / WRITER_FILE).unlink(missing_ok=True)  # the entry is whole now; hashing and linking skip it anyway
            return output
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

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

    # ----- the champion

    @property
    def champion_file(self) -> Path:
        return self.root / CHAMPION_FILE

    def read_champion(self) -> dict[str, Any] | None:
        """The champion pointer ({"run_id", "promoted_at", "metric", "value", ...}), or None when no run was promoted yet."""
        path = self.champion_file
        try:
            pointer = read_json(path)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            raise ChampionError(f"{path} is not valid JSON: delete it and promote a run with 'rnnflow promote RUN_ID'.") from None
        if not isinstance(pointer, dict) or not isinstance(pointer.get("run_id"), str):
            raise ChampionError(f"{path} names no run_id: delete it and promote a run with 'rnnflow promote RUN_ID'.")
        try:  # a path here would send the comparison (and `champion`) to another root's run
            self.check_run_id(pointer["run_id"])
        except BadRunIdError:
            raise ChampionError(
                f"{path} names {pointer['run_id']!r}, not a run id under {self.runs_dir}: delete it and promote a run with 'rnnflow promote RUN_ID'."
            ) from None
        return pointer

    def write_champion(self, pointer: dict[str, Any]) -> None:
        """Replace the pointer whole (temporary file + rename): readers see the old one or the new one. Hold champion_lock."""
        write_json(self.champion_file, pointer)

    @contextlib.contextmanager
    def champion_lock(self) -> Iterator[None]:
        """An exclusive lock on <root>/champion.lock, across threads and processes; released when the holder dies."""
        path = self.root / CHAMPION_LOCK
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(path, "a+")  # one open file description per holder: flock then excludes threads too
        except OSError as error:
            raise ArtifactsRootError(
                f"Artifacts root {self.root} is not writable ({path}: {error.strerror or error}): choose another with --artifacts or fix its permissions."
            ) from None
        with handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    # ----- runs

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def list_runs(self) -> list[dict[str, Any]]:
        """Every run folder's manifest, validated, in run id (start time) order.

        A manifest that is not one is listed as {"run_id", "status": "unreadable", "path", "problem"}
        rather than hiding every other run; a run whose process is gone from this host shows failed.
        """
        runs: list[dict[str, Any]] = []
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
            record = RunRecord.load(folder)
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

    def resolve_run(self, run_id: str) -> Path:
        """A run folder by id, 'latest' for the newest completed run, or 'champion' for the promoted one.

        Nothing else: a path ('../other/runs/ID', '/abs/ID') or a link out of runs/ is refused, so a
        command never reads or rewrites a run outside this root. Its manifest is validated; one
        clear sentence (a RunError) for anything wrong.
        """
        if run_id == "champion":
            pointer = self.read_champion()
            if pointer is None:
                raise RunNotFoundError(f"No champion under {self.root}: the first completed run becomes champion, or use 'rnnflow promote RUN_ID'.")
            run_id = pointer["run_id"]
            if not (self.run_dir(run_id) / MANIFEST_FILE).is_file():
                raise RunNotFoundError(
                    f"The champion {run_id} named by {self.champion_file} is gone from {self.runs_dir}: promote another run with 'rnnflow promote RUN_ID --force'."
                )
        elif run_id == "latest":
            done = self.completed_runs()
            if not done:
                raise RunNotFoundError(f"No completed run under {self.runs_dir}: run 'rnnflow run' first.")
            run_id = done[-1]
        self.check_run_id(run_id)
        folder = self.run_dir(run_id)
        if not (folder / MANIFEST_FILE).is_file():
            raise RunNotFoundError(f"No run {run_id!r} under {self.runs_dir}: 'rnnflow runs' lists the run ids.")
        if folder.resolve().parent != self.runs_dir.resolve():
            raise BadRunIdError(f"Run {run_id} is a link to {folder.resolve()}, outside {self.runs_dir}: give a run that lives under this root.")
        load_manifest(folder)  # one sentence now, rather than an AttributeError in whoever reads it next
        return folder

    def start_run(
        self, config: dict[str, Any], *, run_id: str | None = None, derived_from: str | None = None, flow_run_id: str | None = None
    ) -> "RunRecord":
        run_id = run_id or new_run_id()
        folder = self.run_dir(run_id)
        if (folder / MANIFEST_FILE).is_file():
            # A retried flow run (from the UI or `prefect flow-run retry`) comes back with the same
            # run id: it resumes its own folder, and the step cache supplies what already finished.
            record = RunRecord.load(folder)
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
                                config=config, flow_run_id=flow_run_id)


class RunRecord:
    """One run folder and its manifest; the flow process is its only writer."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.manifest: dict[str, Any] = {}

    @classmethod
    def load(cls, folder: Path) -> "RunRecord":
        record = cls(folder)
        load_manifest(folder)  # validated; the raw dict is kept so saving never drops or reshapes a key
        record.manifest = read_json(Path(folder) / MANIFEST_FILE)
        return record

    @classmethod
    def create(cls, folder: Path, identity: dict[str, Any], *, config: dict[str, Any], flow_run_id: str | None,
               **fields: Any) -> "RunRecord":
        """A new folder (never an existing one) and the manifest every record starts with: a run's, or a sweep's."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=False)
        record = cls(folder)
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

    def save(self) -> None:
        write_json(self.folder / MANIFEST_FILE, self.manifest)

    def link_outputs(self, step: str, source: Path) -> None:
        target = self.folder / step
        if Path(source).resolve() == target.resolve():
            return  # a step that writes straight into the run folder (promote, never cached)
        if target.exists():
            shutil.rmtree(target)
        _link_tree(Path(source), target)

    def record_step(self, output: StepOutput, *, status: str, seconds: float, reused_from: str | None = None) -> None:
        """Link a step's outputs into the run folder and note them, with their sha256, in the manifest."""
        self.link_outputs(output.step, output.path)
        self.manifest["steps"][output.step] = {
            "status": status,
            "seconds": round(seconds, 3),
            "key": output.key,
            "dir": output.step,
            "outputs": output.files,
            "summary": output.summary,
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
