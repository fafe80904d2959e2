"""The artifact store: run folders with manifests, and the content-checked step cache behind them.

Layout under the artifacts root:

    runs/<run-id>/manifest.json      one folder per run, never overwritten
    runs/<run-id>/<step>/...         the step's outputs (hard links into cache/ where possible)
    cache/<step>/<key>/...           one complete entry per step fingerprint, with _entry.json
    prefect/results/, prefect/locks/ Prefect's persisted task results and cache locks
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tasks.steps import STEP_BY_NAME, STEPS  # noqa: F401  (STEPS: the step names, for callers of the store)

SPLITS = ("train", "val", "test")  # ingest writes <split>.parquet, encode X_<split>.npy / y_<split>.npy
CHAMPION_FILE = "champion.json"  # <root>/champion.json: the run whose model is promoted (tasks/promote.py decides)
CHAMPION_LOCK = "champion.lock"  # <root>/champion.lock: held while the pointer is read, compared and replaced
ENTRY_FILE = "_entry.json"
WRITER_FILE = "_writer.json"  # in a .partial scratch folder: the process writing it, so a dead writer's scratch can go
MANIFEST_FILE = "manifest.json"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- run-folder files


@dataclass(frozen=True)
class RunFile:
    """A file one step writes and other code reads: <run folder>/<step>/<name>, spelled once, here."""

    step: str
    name: str

    @property
    def path(self) -> str:
        """Relative to the run folder, as manifests and messages name it: "train/model.keras"."""
        return f"{self.step}/{self.name}"

    def of_run(self, folder: str | Path) -> Path:
        return Path(folder) / self.step / self.name

    def of_step(self, step_dir: str | Path) -> Path:
        """In the step's own folder (a cache entry, or the folder a step writes into)."""
        return Path(step_dir) / self.name


class RunFiles:
    """The run-folder files read beyond the step that writes them."""

    TEST_TEXTS = RunFile("ingest", "test.parquet")
    VALIDATION = RunFile("validate", "validation.json")
    ENCODING = RunFile("encode", "encode.json")
    LABELS = RunFile("encode", "labels.json")
    VOCABULARY = RunFile("encode", "vocab.json")
    SUBWORD_MODEL = RunFile("encode", "subword.model")
    MODEL = RunFile("train", "model.keras")
    TEXT_MODEL = RunFile("train", "model_text.keras")
    TRAINING = RunFile("train", "train.json")
    HISTORY = RunFile("train", "history.json")
    METRICS = RunFile("evaluate", "metrics.json")
    DECISION = RunFile("promote", "decision.json")
    REPORT_HTML = RunFile("report", "report.html")
    REPORT_MARKDOWN = RunFile("report", "report.md")


# --------------------------------------------------------------------------- atomic files


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(value: Any) -> str:
    """A stable sha256 of JSON-able data (sorted keys), for cache keys and input identities."""
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling of target; rename it into place only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o644)  # mkstemp makes 0600; outputs are meant to be read by others
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


# Rows per record batch where a step streams a split (ingest, validate, encode): memory per step
# stays near one batch of text however large the corpus grows.
STREAM_ROWS = 10_000


def parquet_rows(path: Path) -> int:
    """A Parquet file's row count, from its footer alone."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def iter_parquet(path: Path, columns: list[str] | None = None, batch_rows: int = STREAM_ROWS) -> Iterator[Any]:
    """A Parquet file as pandas frames of at most batch_rows rows, in file order, one record batch at a time."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as handle:
        for batch in handle.iter_batches(batch_size=batch_rows, columns=columns):
            yield batch.to_pandas()


def write_text(target: Path, text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def write_json(target: Path, data: Any) -> Path:
    return write_text(target, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


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


def _hash_tree(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name not in (ENTRY_FILE, WRITER_FILE)
    }


def _link_tree(source: Path, target: Path) -> None:
    """Hard-link every file of source under target (copy across file systems): cheap and independent of the cache."""
    for path in sorted(source.rglob("*")):
        if path.name in (ENTRY_FILE, WRITER_FILE):
            continue
        destination = target / path.relative_to(source)
        if path.is_dir():
            destination.mkdir(parents=True, exist_ok=True)
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, destination)
        except OSError:
            shutil.copy2(path, destination)


# --------------------------------------------------------------------------- errors a user fixes


class RunError(Exception):
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


class ArtifactsRootError(Exception):
    """An artifacts root that cannot be used: a file, or a folder this process may not write."""


# --------------------------------------------------------------------------- which process


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks after boot (/proc/PID/stat field 22): tells our pid from a reused one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # the command name (field 2) may hold spaces and ')'
    return fields[19] if len(fields) > 19 else None


def _pid_alive(pid: int) -> bool:
    if pid <= 0:  # 0 and negative numbers address process groups, not a process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process, but alive
        return True
    return True


def process_stamp(pid: int | None = None) -> dict[str, Any]:
    """This process (or pid) as a manifest or scratch folder records it: pid, host, start time, boot id."""
    pid = os.getpid() if pid is None else pid
    return {"pid": pid, "host": socket.gethostname(), "started": _process_start(pid), "boot_id": _boot_id()}


class ProcessStamp(BaseModel):
    model_config = ConfigDict(extra="allow")

    pid: int
    host: str
    started: str | None = None
    boot_id: str | None = None

    def gone(self) -> bool:
        """True only when the process is known to be gone: it ran on this host and no live process is it.

        Another host's process cannot be seen from here, so it is never called gone.
        """
        if self.host != socket.gethostname():
            return False
        boot = _boot_id()
        if self.boot_id and boot and self.boot_id != boot:
            return True  # the machine rebooted since
        if not _pid_alive(self.pid):
            return True
        started = _process_start(self.pid)
        return bool(self.started and started and started != self.started)  # the pid now belongs to another process


def _stamp_gone(data: Any) -> bool:
    try:
        return ProcessStamp.model_validate(data).gone()
    except ValidationError:
        return False  # no readable record of the writer: leave it alone


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

    @property
    def shown_status(self) -> str:
        return "failed (killed)" if self.killed and self.status == "failed" else self.status


def _validation_problem(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "the top level"
    message = str(first.get("msg", "invalid")).split(" or instance of ")[0]  # pydantic's class names mean nothing to a user
    return f"{where}: {message}"


def load_manifest(folder: Path) -> Manifest:
    """A run folder's manifest, validated; ManifestError (one sentence with its path) when it is not one."""
    path = Path(folder) / MANIFEST_FILE
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise RunNotFoundError(f"Run folder {Path(folder)} has no {MANIFEST_FILE}: 'rnnflow runs' lists the run ids.") from None
    except (OSError, ValueError) as error:
        raise ManifestError(f"{path} is unreadable ({str(error).splitlines()[0] if str(error) else type(error).__name__}): "
                            f"restore it from a backup or delete the run folder.") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path} is unreadable (a JSON {type(data).__name__}, not an object): restore it from a backup or delete the run folder.")
    try:
        return Manifest.model_validate(data)
    except ValidationError as error:
        raise ManifestError(f"{path} is unreadable ({_validation_problem(error)}): restore it from a backup or delete the run folder.") from None


# A file's sha256 by (path, inode, size, mtime): a command that checks the same file twice hashes it once.
_VERIFIED: dict[tuple[str, int, int, int], str] = {}


def _sha256_once(path: Path) -> str:
    info = path.stat()
    token = (str(path), info.st_ino, info.st_size, info.st_mtime_ns)
    if token not in _VERIFIED:
        _VERIFIED[token] = sha256_file(path)
    return _VERIFIED[token]


def verify_run_files(folder: Path, names: Iterable[str]) -> None:
    """Check the named run files ("train/model.keras") against the sha256 the run's manifest records.

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
            fix = (f"rerun that step with `rnnflow step {step} --run {folder.name}`." if step in STEP_BY_NAME and STEP_BY_NAME[step].rerun_alone
                   else f"{step} cannot be rerun alone: start a new run with `rnnflow run` and the run's settings.")
            raise DamagedRunError(f"Run {folder.name}'s {name} does not match the sha256 its manifest records (the file is damaged): {fix}")


def require_run_files(folder: Path, *files: RunFile, optional: Iterable[RunFile] = ()) -> list[Path]:
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
    verify_run_files(folder, [file.path for file in (*files, *(f for f in optional if f.of_run(folder).is_file()))])
    return paths


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
                if _stamp_gone(writer):
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
