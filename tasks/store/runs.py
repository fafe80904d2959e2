"""Runs and their manifests, runs/<run-id>/ over the root's storage (tasks/store/backend.py): start, list, resolve
(an id, 'latest', 'champion'), open, mark killed; a run's files are pushed by its RunRecord (record.py)."""

from __future__ import annotations

import contextlib
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.store.manifest import (
    MANIFEST_FILE, BadRunIdError, Manifest, ManifestError, RunError, RunNotFoundError, check_run_id, load_manifest,
)
from tasks.store.process import process_stamp
from tasks.store.record import RunRecord

if TYPE_CHECKING:  # pragma: no cover
    from tasks.store import ArtifactStore


def new_run_id() -> str:
    """Time-ordered and unique: sorting run ids sorts runs by start time."""
    now = datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}Z-{secrets.token_hex(2)}"


class Runs:
    """The run folders of one artifacts root. `store` hands over the storage, the cache (to clean when listing)
    and the champion record (for 'champion')."""

    def __init__(self, store: "ArtifactStore"):
        self.store = store
        self.storage = store.storage

    @property
    def runs_dir(self) -> Path:
        return self.storage.root / "runs"

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def check_run_id(self, run_id: str) -> str:
        """run_id if it names a folder directly under runs/: a plain name, no separators, no '..'."""
        return check_run_id(run_id, self.runs_dir)

    def load_manifest(self, folder: Path) -> Manifest:
        """A run folder's manifest, validated; a damaged one named as the user knows it (the bucket's object for a URL root)."""
        return load_manifest(folder, self.storage.where(Path(folder) / MANIFEST_FILE), self.storage.manifest_fix(folder))

    def list_runs(self) -> list[dict[str, Any]]:
        """Every run folder's manifest, validated, in run id (start time) order.

        A manifest that is not one is listed as {"run_id", "status": "unreadable", "path", "problem"}
        rather than hiding every other run; a run whose process is gone from this host shows failed.
        The storage says which runs the root holds (a bucket's, never the mirror's: a run deleted there is gone here too).
        """
        folders, runs = self.storage.run_folders(self.runs_dir, self.check_run_id)
        if not folders and not runs and not self.runs_dir.is_dir():
            return []
        with contextlib.suppress(OSError):  # a read-only root still lists
            self.store.cache.clean_stale_partials()
        for folder in folders:
            try:
                manifest = self.mark_if_killed(folder, self.load_manifest(folder))
            except ManifestError as error:
                runs.append({"run_id": folder.name, "status": "unreadable", "path": self.storage.where(folder / MANIFEST_FILE), "problem": str(error)})
                continue
            runs.append({**manifest.model_dump(mode="json"), "run_id": folder.name, "shown_status": manifest.shown_status})
        return sorted(runs, key=lambda run: run["run_id"])

    def mark_if_killed(self, folder: Path, manifest: Manifest) -> Manifest:
        """A `running` run whose process is gone from this host (kill -9, a lost machine) is failed: record that.

        Runs of other hosts are never rewritten: their process cannot be seen from here.
        """
        if manifest.status != "running" or manifest.process is None or not manifest.process.gone():
            return manifest
        reason = f"killed: its process (pid {manifest.process.pid} on {manifest.process.host}) ended before the run finished"
        try:
            record = RunRecord.load(folder, store=self.store)
            record.manifest.update(status="failed", killed=True, error=reason)
            record.save()
        except (OSError, RunError):
            pass  # a read-only root: still shown as failed, just not recorded
        return manifest.model_copy(update={"status": "failed", "killed": True, "error": reason})

    def completed_runs(self) -> list[str]:
        """Ids of the completed runs, oldest first; unreadable manifests are skipped, not fatal."""
        return [run["run_id"] for run in self.list_runs() if run.get("status") == "completed"]

    def _champion_id(self, model: str | None) -> str:
        pointer = self.store.champions.choose(model)
        run_id = pointer["run_id"]
        if not self.storage.pull_manifest(self.run_dir(self.check_run_id(run_id))):
            raise RunNotFoundError(
                f"The champion {run_id} of model {pointer['model']!r} named by {self.storage.where(self.store.champions.file)} is gone from "
                f"{self.storage.where(self.runs_dir)}: promote another run with 'rnnflow promote RUN_ID --force'."
            )
        return run_id

    def _latest_id(self) -> str:
        runs = self.list_runs()
        done = [run["run_id"] for run in runs if run.get("status") == "completed"]
        if not done:
            damaged = sum(run["status"] == "unreadable" for run in runs)
            unreadable = f" ({damaged} run{'s' if damaged > 1 else ''} with a damaged manifest: 'rnnflow runs' names them)" if damaged else ""
            raise RunNotFoundError(f"No completed run under {self.storage.where(self.runs_dir)}{unreadable}: run 'rnnflow run' first.")
        return done[-1]

    def resolve_run(self, run_id: str, model: str | None = None) -> Path:
        """A run folder by id, 'latest' for the newest completed run, or 'champion' for model's promoted one
        (model may be left out while the root holds one champion).

        Nothing else: a path ('../other/runs/ID', '/abs/ID') or a link out of runs/ is refused, so a
        command never reads or rewrites a run outside this root. Its manifest is validated; one
        clear sentence (a RunError) for anything wrong.
        """
        if run_id == "champion":
            run_id = self._champion_id(model)
        elif run_id == "latest":
            run_id = self._latest_id()
        self.check_run_id(run_id)
        folder = self.run_dir(run_id)
        if not self.storage.pull_run(folder):
            raise RunNotFoundError(f"No run {run_id!r} under {self.storage.where(self.runs_dir)}: 'rnnflow runs' lists the run ids.")
        if folder.resolve().parent != self.runs_dir.resolve():
            raise BadRunIdError(f"Run {run_id} is a link to {folder.resolve()}, outside {self.runs_dir}: give a run that lives under this root.")
        self.load_manifest(folder)  # one sentence now, rather than an AttributeError in whoever reads it next
        return folder

    def start_run(
        self, config: dict[str, Any], *, run_id: str | None = None, derived_from: str | None = None, flow_run_id: str | None = None
    ) -> RunRecord:
        run_id = run_id or new_run_id()
        folder = self.run_dir(run_id)
        if self.storage.pull_manifest(folder):
            # A retried flow run (from the UI or `prefect flow-run retry`) comes back with the same
            # run id: it resumes its own folder, and the step cache supplies what already finished.
            record = RunRecord.load(folder, store=self.store)
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
                                config=config, flow_run_id=flow_run_id, store=self.store)

    def open_run(self, folder: Path) -> RunRecord:
        """The record of a run (or sweep) folder of this root, its manifest fresh from the bucket for a URL root."""
        if not self.storage.pull_manifest(folder):
            raise RunNotFoundError(f"No {MANIFEST_FILE} at {self.storage.where(folder)}: 'rnnflow runs' lists the run ids.")
        return RunRecord.load(folder, store=self.store)

    def fetch_run_folder(self, run_id: str) -> Path:
        """A run folder by id, its files in the local folder (may not exist: callers check); ManifestError, naming
        the file (the bucket's object for a URL root), when its manifest is damaged: damaged is not gone."""
        folder = self.run_dir(self.check_run_id(run_id))
        if self.storage.pull_run(folder):
            self.load_manifest(folder)
        return folder
