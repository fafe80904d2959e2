"""The artifact store: run folders with manifests, and the content-checked step cache behind them.

Layout under the artifacts root:

    runs/<run-id>/manifest.json      one folder per run, never overwritten
    runs/<run-id>/<step>/...         the step's outputs (hard links into cache/ where possible)
    cache/<step>/<key>/...           one complete entry per step fingerprint, with _entry.json
    prefect/results/, prefect/locks/ Prefect's persisted task results and cache locks
"""

from __future__ import annotations

import contextlib
import hashlib
import json
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

STEPS = ("ingest", "validate", "encode", "train", "evaluate", "report", "promote")
CHAMPION_FILE = "champion.json"  # <root>/champion.json: the run whose model is promoted (tasks/promote.py)
ENTRY_FILE = "_entry.json"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


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


# The source of every tasks/ module as this process found it at start (the flow imports this module
# first thing): the code it runs. Keys are made from these rather than from the files when a step
# starts, so a file edited while a run is going cannot file the old code's output under the new
# code's key (a run edited under would otherwise poison the cache of every later run).
SOURCES_AT_START: dict[str, bytes] = {path.stem: path.read_bytes() for path in Path(__file__).parent.glob("*.py")}


def module_source(name: str) -> bytes:
    """A tasks/ module's source as it was when this process started (read now for a file added since)."""
    source = SOURCES_AT_START.get(name)
    return source if source is not None else (Path(__file__).parent / f"{name}.py").read_bytes()


def changed_since_start(name: str) -> bool:
    """Whether tasks/<name>.py on disk differs from the source this process started with."""
    return (Path(__file__).parent / f"{name}.py").read_bytes() != module_source(name)


def code_version(*modules: str) -> str:
    """sha256 over the source of the named tasks/ modules: editing any of them changes the step's key."""
    digest = hashlib.sha256()
    for name in modules:
        digest.update(module_source(name))
    return digest.hexdigest()[:16]


def _hash_tree(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != ENTRY_FILE
    }


def _link_tree(source: Path, target: Path) -> None:
    """Hard-link every file of source under target (copy across file systems): cheap and independent of the cache."""
    for path in sorted(source.rglob("*")):
        if path.name == ENTRY_FILE:
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
        scratch = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".partial", dir=final.parent))
        try:
            summary = work(scratch) or {}
            output = StepOutput(step=step, key=key, dir=str(final), files=_hash_tree(scratch), summary=summary)
            write_json(scratch / ENTRY_FILE, output.model_dump(mode="json"))
            if final.exists():  # a stale or refreshed entry: move it aside, then swap
                trash = final.with_name(f".{key}.{secrets.token_hex(3)}.old")
                os.replace(final, trash)
                shutil.rmtree(trash, ignore_errors=True)
            os.replace(scratch, final)
            return output
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    # ----- runs

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def list_runs(self) -> list[dict[str, Any]]:
        runs = []
        if not self.runs_dir.exists():
            return runs
        for folder in sorted(self.runs_dir.iterdir()):
            manifest = folder / "manifest.json"
            if manifest.is_file():
                try:
                    runs.append(read_json(manifest))
                except ValueError:
                    runs.append({"run_id": folder.name, "status": "unreadable"})
        return runs

    def resolve_run(self, run_id: str) -> Path:
        """A run folder by id, 'latest' for the newest completed run, or 'champion' for the promoted one;
        one clear sentence when missing."""
        if run_id == "champion":
            pointer = self.root / CHAMPION_FILE
            try:
                run_id = read_json(pointer)["run_id"]
            except FileNotFoundError:
                raise FileNotFoundError(f"No champion under {self.root}: the first completed run becomes champion, or use 'rnnflow promote RUN_ID'.") from None
            except (ValueError, KeyError, TypeError):
                raise FileNotFoundError(f"{pointer} is not a valid champion pointer: promote a run again with 'rnnflow promote RUN_ID'.") from None
        if run_id == "latest":
            done = [r for r in self.list_runs() if r.get("status") == "completed"]
            if not done:
                raise FileNotFoundError(f"No completed run under {self.runs_dir}: run 'rnnflow run' first.")
            run_id = done[-1]["run_id"]
        folder = self.run_dir(run_id)
        if not (folder / "manifest.json").is_file():
            raise FileNotFoundError(f"No run {run_id!r} under {self.runs_dir}: 'rnnflow runs' lists the run ids.")
        return folder

    def start_run(
        self, config: dict[str, Any], *, run_id: str | None = None, derived_from: str | None = None, flow_run_id: str | None = None
    ) -> "RunRecord":
        run_id = run_id or new_run_id()
        folder = self.run_dir(run_id)
        if (folder / "manifest.json").is_file():
            # A retried flow run (from the UI or `prefect flow-run retry`) comes back with the same
            # run id: it resumes its own folder, and the step cache supplies what already finished.
            record = RunRecord.load(folder)
            if record.manifest["status"] == "completed":
                raise FileExistsError(f"Run {run_id} already completed: start a new run instead of reusing its id.")
            record.manifest["status"] = "running"
            record.manifest["attempts"] = record.manifest.get("attempts", 1) + 1
            record.manifest.pop("error", None)
            record.save()
            return record
        folder.mkdir(parents=True, exist_ok=False)
        record = RunRecord(folder)
        record.manifest = {
            "run_id": run_id,
            "status": "running",
            "started_at": _now(),
            "attempts": 1,
            "finished_at": None,
            "derived_from": derived_from,
            "prefect_flow_run_id": flow_run_id,
            "config": config,
            "inputs": {},
            "steps": {},
            "environment": environment_versions(),
        }
        record.save()
        return record


class RunRecord:
    """One run folder and its manifest; the flow process is its only writer."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.manifest: dict[str, Any] = {}

    @classmethod
    def load(cls, folder: Path) -> "RunRecord":
        record = cls(folder)
        record.manifest = read_json(Path(folder) / "manifest.json")
        return record

    @property
    def run_id(self) -> str:
        return self.manifest["run_id"]

    def save(self) -> None:
        write_json(self.folder / "manifest.json", self.manifest)

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
        self.manifest["finished_at"] = _now()
        if error:
            self.manifest["error"] = error
        self.save()

    def step_output(self, step: str) -> StepOutput:
        """The pointer to a completed step's files inside this run folder (for reruns from a recorded run)."""
        entry = self.manifest["steps"].get(step)
        if not entry or entry.get("status") not in ("completed", "cached"):
            raise FileNotFoundError(f"Run {self.run_id} has no completed {step} step: rerun it with 'rnnflow run'.")
        return StepOutput(step=step, key=entry["key"], dir=str(self.folder / step), files=entry["outputs"], summary=entry["summary"])


def _now() -> str:
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
