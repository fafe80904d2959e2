"""How a step's Prefect task is cached: by a fingerprint of exactly what changes its output.

Prefect's default policy (INPUTS + TASK_SOURCE + RUN_ID) misses on every new run and hashes
only the task's own lines, so each step gets this policy instead. The key covers:
the step's own configuration section, the content fingerprints of its upstream outputs,
and the source of every tasks/ module the step runs, as the process found it at start (the code
it runs, whatever is edited meanwhile). Not the run id, not the time.
Before answering, the policy checks that the cached files still exist and match their
sha256; if not, it drops the stale record so the step recomputes.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from prefect.cache_policies import CachePolicy
from prefect.locking.filesystem import FileSystemLockManager

from tasks.config import key_config
from tasks.steps import step as step_spec
from tasks.store import ArtifactStore, StepOutput, fingerprint, pid_alive, prefect_key  # noqa: F401  (prefect_key: callers import it from here)

TASKS_DIR = Path(__file__).resolve().parent
# Modules that decide where and how a result is kept, not what it holds: never part of a code version.
NOT_CODE = frozenset({"tasks/caching.py", "tasks/steps.py", "tasks/logs.py", "tasks/__init__.py"})

# The source of every tasks/ file as this process found it at start (the flow imports this module
# first thing): the code it runs. Keys are made from these rather than from the files when a step
# starts, so a file edited while a run is going cannot file the old code's output under the new
# code's key (a run edited under would otherwise poison the cache of every later run).
SOURCES_AT_START: dict[str, bytes] = {
    f"tasks/{path.relative_to(TASKS_DIR).as_posix()}": path.read_bytes() for path in sorted(TASKS_DIR.rglob("*.py"))
}


def source_at_start(name: str) -> bytes:
    """A tasks/ file's source ("tasks/models.py") as it was when this process started (read now for a file added since)."""
    source = SOURCES_AT_START.get(name)
    return source if source is not None else (TASKS_DIR.parent / name).read_bytes()


def changed_since_start(name: str) -> bool:
    """Whether a tasks/ file on disk differs from the source this process started with."""
    path = TASKS_DIR.parent / name
    return not path.is_file() or path.read_bytes() != source_at_start(name)


def _module_file(module: str) -> str | None:
    """"tasks.ingest.imdb" -> "tasks/ingest/imdb.py" (or a package's __init__.py); None outside tasks/."""
    if module != "tasks" and not module.startswith("tasks."):
        return None
    relative = module.replace(".", "/")
    for candidate in (f"{relative}.py", f"{relative}/__init__.py"):
        if candidate in SOURCES_AT_START or (TASKS_DIR.parent / candidate).is_file():
            return candidate
    return None


def _imported_files(name: str) -> set[str]:
    """The tasks/ files a file imports (anywhere in it: lazy imports inside functions count too)."""
    module = name[: -len("/__init__.py")] if name.endswith("/__init__.py") else name[: -len(".py")]
    package = module if name.endswith("/__init__.py") else module.rpartition("/")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source_at_start(name))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .imdb import ..., from . import splits
                parts = package.split("/")[: len(package.split("/")) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]  # `from tasks import store` names a module
        else:
            continue
        for target in targets:
            path = _module_file(target)
            if path is not None:
                found.add(path)
    return found


def code_files(step: str) -> list[str]:
    """The files whose source is the step's code version: every .py file of its own package (found, not listed)
    and every tasks/ file those import, transitively."""
    own = step_spec(step).own_package
    if (TASKS_DIR / own).is_dir():
        todo = [name for name in SOURCES_AT_START if name.startswith(f"tasks/{own}/")]
    else:
        todo = [f"tasks/{own}.py"]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name in NOT_CODE:
            continue
        seen.add(name)
        todo.extend(_imported_files(name) - seen)
    return sorted(seen)


def code_version(step: str) -> str:
    """sha256 over the source at start of the step's code files: editing any of them changes the step's key."""
    digest = hashlib.sha256()
    for name in code_files(step):
        digest.update(name.encode() + b"\0" + source_at_start(name) + b"\0")
    return digest.hexdigest()[:16]


def step_key(step: str, section: dict[str, Any], upstream: dict[str, StepOutput], extra: dict[str, Any] | None = None) -> str:
    return fingerprint(
        {
            "step": step,
            "code": code_version(step),
            "config": key_config(section),
            "extra": extra or {},
            "upstream": {name: out.content_fingerprint for name, out in sorted(upstream.items())},
        }
    )[:24]


@dataclass
class StepCachePolicy(CachePolicy):
    step: str = ""

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any) -> str:
        store = ArtifactStore(inputs["root"])
        extra = {name: value for name, value in inputs.items() if name not in ("root", "section", "upstream")}
        key = step_key(self.step, inputs["section"], inputs.get("upstream") or {}, extra)
        if store.read_entry(self.step, key) is None:
            store.forget_entry(self.step, key, prefect_key(self.step, key))
        return prefect_key(self.step, key)


def produce_step(
    root: str,
    step: str,
    section: dict[str, Any],
    upstream: dict[str, StepOutput],
    work: Callable[[Path], dict[str, Any]],
    **extra: Any,
) -> StepOutput:
    """The body every step task shares: run work(out_dir) into the cache entry for this key.

    extra holds the task's other parameters (ingest's located source), which join the key as
    the cache policy sees them.
    """
    for name in code_files(step):
        # A module the step imports only now (tasks.models: Keras) would load as it is on disk, while
        # the key was made from the source at start: refuse rather than cache one under the other.
        module = name[: -len(".py")].removesuffix("/__init__").replace("/", ".")
        if module not in sys.modules and changed_since_start(name):
            raise RuntimeError(
                f"{name} changed on disk after this run started, so the {step} step would run other code than "
                "its cache key describes: start the run again"
            )
    store = ArtifactStore(root)
    key = step_key(step, section, upstream, extra)
    refresh = refreshing()
    if store.remote is not None and not refresh:
        # Another machine's worker may have made this entry: its Prefect record is in that machine's
        # mirror, not here, but the entry itself is in the bucket, whole and checked.
        found = store.read_entry(step, key)
        if found is not None:
            return found.model_copy(update={"reused": True})
    # On a bucket another machine may be computing the same key right now: produce claims the entry, and
    # when that machine's claim came first its output comes back (reused) and this one's is discarded.
    return store.produce(step, key, work, made_by=running_run_id(), refresh=refresh)


def running_run_id() -> str | None:
    """The rnnflow run id of the flow run this task belongs to (its `run_id` parameter), for the entry's made_by."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    run_id = (getattr(context, "parameters", None) or {}).get("run_id") if context is not None else None
    return str(run_id) if run_id else None


def refreshing() -> bool:
    """Whether the running task was asked to recompute (--refresh, or `rnnflow step`): its refresh_cache option."""
    from prefect.context import TaskRunContext

    context = TaskRunContext.get()
    return bool(context is not None and context.task.refresh_cache)


class ProcessBoundLockManager(FileSystemLockManager):
    """Prefect's file locks, released when the holding process dies.

    Prefect's transactions take locks with no expiry, so a run killed with SIGKILL mid-step
    would leave a lock that blocks that step in every later run. Each lock here also records
    its process id and host; a lock whose process is gone on this host counts as free.
    """

    def acquire_lock(self, key: str, holder: str, acquire_timeout: float | None = None, hold_timeout: float | None = None) -> bool:
        acquired = super().acquire_lock(key, holder, acquire_timeout, hold_timeout)
        if acquired:
            self._stamp(key, holder)
        return acquired

    async def aacquire_lock(self, key: str, holder: str, acquire_timeout: float | None = None, hold_timeout: float | None = None) -> bool:
        acquired = await super().aacquire_lock(key, holder, acquire_timeout, hold_timeout)
        if acquired:
            self._stamp(key, holder)
        return acquired

    def _stamp(self, key: str, holder: str) -> None:
        stamp = {"holder": holder, "expiration": None, "pid": os.getpid(), "host": socket.gethostname()}
        self._lock_path_for_key(key).write_text(json.dumps(stamp))

    def is_locked(self, key: str, use_cache: bool = False) -> bool:
        info = self._get_lock_info(key, use_cache=use_cache)
        if info and info.get("pid") and info.get("host") == socket.gethostname() and not pid_alive(int(info["pid"])):
            Path(info["path"]).unlink(missing_ok=True)
            self._locks.pop(key, None)
            return False
        return super().is_locked(key, use_cache=use_cache)


def bind_to_store(step_task: Any, store: ArtifactStore, *, refresh: bool = False) -> Any:
    """The step's task with its results, cache records and locks kept under this artifacts root.

    SERIALIZABLE isolation with file locks makes two runs of the same step and key wait for
    each other, so the second reads the first's result instead of writing the entry twice.
    """
    policy = step_task.cache_policy.configure(
        lock_manager=ProcessBoundLockManager(lock_files_directory=store.locks_dir),
        isolation_level="SERIALIZABLE",
    )
    return step_task.with_options(
        cache_policy=policy,
        result_storage=store.prefect_results_dir,  # a Path: Prefect makes the local block itself
        persist_result=True,
        refresh_cache=refresh,
    )
