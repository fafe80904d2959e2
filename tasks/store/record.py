"""A run (or sweep) folder's record: its manifest, written whole by the flow process that owns it, and the step
outputs linked into the folder as the manifest notes them; every save also goes to the root's storage (a no-op for a
folder root, an upload for a bucket: tasks/store/backend.py)."""

from __future__ import annotations

import platform
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.store.entries import StepOutput
from tasks.store.files import _link_tree, read_json, write_json
from tasks.store.manifest import MANIFEST_FILE, load_manifest

if TYPE_CHECKING:  # pragma: no cover
    from tasks.store import ArtifactStore

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent


class RunRecord:
    """One run folder and its manifest; the flow process is its only writer."""

    def __init__(self, folder: Path, store: "ArtifactStore | None" = None):
        self.folder = Path(folder)
        self.manifest: dict[str, Any] = {}
        self.store = store  # every save also goes to its storage

    @classmethod
    def load(cls, folder: Path, store: "ArtifactStore | None" = None) -> "RunRecord":
        record = cls(folder, store)
        # validated; the raw dict is kept so saving never drops or reshapes a key
        store.load_manifest(folder) if store is not None else load_manifest(folder)
        record.manifest = read_json(Path(folder) / MANIFEST_FILE)
        return record

    @classmethod
    def create(cls, folder: Path, identity: dict[str, Any], *, config: dict[str, Any], flow_run_id: str | None,
               store: "ArtifactStore | None" = None, **fields: Any) -> "RunRecord":
        """A new folder (never an existing one) and the manifest every record starts with: a run's, or a sweep's."""
        folder = Path(folder)
        if store is not None:
            if store.storage.exists(f"{store.storage.key(folder)}/{MANIFEST_FILE}"):
                raise FileExistsError(f"{store.where(folder)} already exists: start a new run instead of reusing its id.")
            store.storage.drop_mirror_copy(folder)  # what a bucket's mirror kept of a run the bucket no longer has
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
        """The manifest, whole; then to the root's storage (a bucket: after the files it names)."""
        write_json(self.folder / MANIFEST_FILE, self.manifest)
        if self.store is not None:
            self.store.storage.push(self.folder / MANIFEST_FILE)

    def link_outputs(self, step: str, source: Path, objects: str | None = None) -> None:
        """Link a step's files into the run folder, then to the root's storage (a bucket: copied from the entry
        version `objects` that the recorded output names, tasks/store/bucket.py)."""
        target = self.folder / step
        if Path(source).resolve() != target.resolve():  # else a step that writes straight into the run folder (promote)
            if target.exists():
                shutil.rmtree(target)
            _link_tree(Path(source), target)
        if self.store is not None:
            self.store.storage.push_step(target, Path(source), objects)

    def push_file(self, name: str) -> None:
        """One more file of the run folder (run.log) to the root's storage."""
        if self.store is not None:
            self.store.storage.push(self.folder / name)

    def record_step(self, output: StepOutput, *, status: str, seconds: float, config: dict[str, Any], made_by: str | None,
                    reused_from: str | None = None) -> None:
        """Link a step's outputs into the run folder and note them, with their sha256, in the manifest, with the
        configuration they were made with and the run that made them (tasks/provenance.py)."""
        self.link_outputs(output.step, output.path, output.objects)
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
