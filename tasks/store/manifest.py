"""Run manifests as every reader sees them (validated), the errors a user fixes, and the check that a run's files
are the bytes its manifest recorded."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Collection, Iterable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tasks.errors import RnnflowError
from tasks.store.files import RunFile, safe_relative_name, sha256_file
from tasks.store.process import ProcessStamp

MANIFEST_FILE = "manifest.json"
LOCAL_MANIFEST_FIX = "restore it from a backup or delete the run folder"


# --------------------------------------------------------------------------- errors a user fixes


class RunError(RnnflowError):
    """A run argument or run folder a command cannot use: the message is one sentence naming it and the way out."""


class RunNotFoundError(RunError, FileNotFoundError):
    """No such run (or no completed one, or no champion); a FileNotFoundError too, for callers that catch that."""


class BadRunIdError(RunError):
    """A run argument that is not a run id under this root: a path, '..', or a link that leads out of it."""


class ManifestError(RunError):
    """A manifest.json that is not a run manifest (not JSON, not an object, or fields of the wrong type)."""


class DamagedRunError(RunError):
    """A run file whose bytes no longer match the sha256 its manifest recorded."""


class ChampionError(RunError):
    """A champion.json that is not a pointer to a run of this root."""


class ArtifactsRootError(RnnflowError):
    """An artifacts root that cannot be used: a file, or a folder this process may not write."""


# --------------------------------------------------------------------------- manifests


class StepRecord(BaseModel):
    """One step in a run's manifest, as readers use it; record_step writes more."""

    model_config = ConfigDict(extra="allow")

    status: str | None = None
    key: str | None = None
    dir: str | None = None
    outputs: dict[str, str] = {}  # file relative to the step folder -> sha256
    summary: dict[str, Any] = {}
    error: str | None = None

    # Readers join these to the run folder and fetch or check the files there: a name that leads out of it is damage.
    @field_validator("dir")
    @classmethod
    def _dir_inside(cls, value: str | None) -> str | None:
        if value is not None and not safe_relative_name(value):
            raise ValueError(f"{value!r} is not a folder inside the run folder")
        return value

    @field_validator("outputs")
    @classmethod
    def _outputs_inside(cls, outputs: dict[str, str]) -> dict[str, str]:
        for name in outputs:
            if not safe_relative_name(name):
                raise ValueError(f"{name!r} is not a file inside the step folder")
        return outputs


class ConfigView(BaseModel):
    """The parts of a run's config that listing reads; tasks.config validates the whole when a run reuses it."""

    model_config = ConfigDict(extra="allow")

    preset: str | None = None
    model: dict[str, Any] = {}


class Manifest(BaseModel):
    """runs/<id>/manifest.json as every reader sees it: one validated model, so one bad file is one clear error."""

    model_config = ConfigDict(extra="allow")

    run_id: str
    status: str
    started_at: str | None = None
    finished_at: str | None = None
    attempts: int = 1
    derived_from: str | None = None
    config: ConfigView = Field(default_factory=ConfigView)
    inputs: dict[str, Any] = {}
    steps: dict[str, StepRecord] = {}
    process: ProcessStamp | None = None
    error: str | None = None
    killed: bool = False
    promotion: dict[str, Any] | None = None

    @field_validator("steps")
    @classmethod
    def _step_names(cls, steps: dict[str, StepRecord]) -> dict[str, StepRecord]:
        for name in steps:  # a step without "dir" is read from the folder of its name
            if not safe_relative_name(name) or "/" in name:
                raise ValueError(f"{name!r} is not a step name")
        return steps

    @property
    def shown_status(self) -> str:
        return "failed (killed)" if self.killed and self.status == "failed" else self.status


def _validation_problem(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "the top level"
    message = str(first.get("msg", "invalid")).split(" or instance of ")[0]  # pydantic's class names mean nothing to a user
    return f"{where}: {message}"


def manifest_from_text(text: str | bytes, name: str, fix: str = LOCAL_MANIFEST_FIX) -> Manifest:
    """A manifest's text, validated; ManifestError naming it as `name` (a path, or the bucket object's URL) and `fix`."""
    try:
        data = json.loads(text)
    except ValueError as error:  # UnicodeDecodeError is one too
        raise ManifestError(f"{name} is unreadable ({str(error).splitlines()[0] if str(error) else type(error).__name__}): {fix}.") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{name} is unreadable (a JSON {type(data).__name__}, not an object): {fix}.")
    try:
        return Manifest.model_validate(data)
    except ValidationError as error:
        raise ManifestError(f"{name} is unreadable ({_validation_problem(error)}): {fix}.") from None


def load_manifest(folder: Path, name: str | None = None, fix: str = LOCAL_MANIFEST_FIX) -> Manifest:
    """A run folder's manifest, validated; ManifestError (one sentence with its path, or `name`) when it is not one."""
    path = Path(folder) / MANIFEST_FILE
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise RunNotFoundError(f"Run folder {Path(folder)} has no {MANIFEST_FILE}: 'rnnflow runs' lists the run ids.") from None
    except OSError as error:
        raise ManifestError(f"{name or path} is unreadable ({str(error).splitlines()[0] if str(error) else type(error).__name__}): {fix}.") from None
    return manifest_from_text(text, name or str(path), fix)


# A file's sha256 by (path, inode, size, mtime): a command that checks the same file twice hashes it once.
_VERIFIED: dict[tuple[str, int, int, int], str] = {}


def _sha256_once(path: Path) -> str:
    info = path.stat()
    token = (str(path), info.st_ino, info.st_size, info.st_mtime_ns)
    if token not in _VERIFIED:
        _VERIFIED[token] = sha256_file(path)
    return _VERIFIED[token]


def check_run_id(run_id: str, runs_dir: Path) -> str:
    """run_id if it names a folder directly under runs/: a plain name, no separators, no '..'."""
    text = str(run_id)
    if not text or text in (".", "..") or any(sep in text for sep in ("/", "\\", "\0")) or os.path.isabs(text):
        raise BadRunIdError(
            f"{text!r} is not a run id: give the id of a run under {runs_dir} ('rnnflow runs' lists them), 'latest' or 'champion'."
        )
    return text


def verify_run_files(folder: Path, names: Iterable[str], *, rerunnable: Collection[str] = ()) -> None:
    """Check the named run files ("train/model.keras") against the sha256 the run's manifest records.

    rerunnable: the steps `rnnflow step NAME --run ID` can recompute (the caller's, from tasks/steps.py: the store
    knows no step table), so the message names that fix; for any other step it says to start a new run.

    Only the files a command is about to load: hashing a whole run would cost more than loading it.
    A file the manifest records no sha256 for, or a folder with no manifest at all (a run assembled
    by hand, outside any artifacts root), is taken as it is.
    """
    folder = Path(folder)
    if not (folder / MANIFEST_FILE).is_file():
        return
    manifest = load_manifest(folder)
    by_dir = {(record.dir or step): (step, record) for step, record in manifest.steps.items()}
    for name in names:
        step_dir, _, relative = str(name).partition("/")
        step, record = by_dir.get(step_dir, (step_dir, None))
        recorded = record.outputs.get(relative) if record is not None else None
        path = folder / name
        if recorded is None or not path.is_file():
            continue  # a missing file is the caller's sentence to give
        if _sha256_once(path) != recorded:
            fix = (f"rerun that step with `rnnflow step {step} --run {folder.name}`." if step in rerunnable
                   else f"{step} cannot be rerun alone: start a new run with `rnnflow run` and the run's settings.")
            raise DamagedRunError(f"Run {folder.name}'s {name} does not match the sha256 its manifest records (the file is damaged): {fix}")


def require_run_files(folder: Path, *files: RunFile, optional: Iterable[RunFile] = (), rerunnable: Collection[str] = ()) -> list[Path]:
    """The files of a run folder, checked against their recorded sha256, or one sentence saying which is missing or
    damaged (predict, generate, promote's re-scoring). optional: checked too, when the run has them."""
    folder = Path(folder)
    paths = [file.of_run(folder) for file in files]
    missing = [file for file, path in zip(files, paths) if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"Run {folder.name} has no {missing[0].path}: its steps did not all complete; "
            f"choose a completed run ('rnnflow runs' lists them)."
        )
    # Keras reports a truncated model.keras as "File not found": name the damaged file and the fix instead.
    verify_run_files(folder, [file.path for file in (*files, *(f for f in optional if f.of_run(folder).is_file()))], rerunnable=rerunnable)
    return paths

