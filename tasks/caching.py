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

import json
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from prefect.cache_policies import CachePolicy
from prefect.locking.filesystem import FileSystemLockManager

from tasks.store import ArtifactStore, StepOutput, changed_since_start, code_version, fingerprint

# The tasks/ modules whose source makes up each step's code version.
STEP_MODULES: dict[str, tuple[str, ...]] = {
    "ingest": ("ingest", "synthetic", "text"),
    "validate": ("validate", "text"),
    "encode": ("encode", "text", "subword"),
    # The export restates tasks/text.py's rules and runs the subword model in TensorFlow.
    "train": ("train", "models", "export", "text", "subword"),
    "evaluate": ("evaluate", "models"),  # next_token scoring shifts targets with tasks.models.next_token_arrays
    "report": ("report",),
}


def step_key(step: str, section: dict[str, Any], upstream: dict[str, StepOutput], extra: dict[str, Any] | None = None) -> str:
    return fingerprint(
        {
            "step": step,
            "code": code_version(*STEP_MODULES[step]),
            "config": section,
            "extra": extra or {},
            "upstream": {name: out.content_fingerprint for name, out in sorted(upstream.items())},
        }
    )[:24]


def prefect_key(step: str, key: str) -> str:
    return f"{step}-{key}"


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
    for module in STEP_MODULES[step]:
        # A module the step imports only now (tasks.models: Keras) would load as it is on disk, while
        # the key was made from the source at start: refuse rather than cache one under the other.
        if f"tasks.{module}" not in sys.modules and changed_since_start(module):
            raise RuntimeError(
                f"tasks/{module}.py changed on disk after this run started, so the {step} step would run other code than "
                "its cache key describes: start the run again"
            )
    store = ArtifactStore(root)
    return store.produce(step, step_key(step, section, upstream, extra), work)


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
        if info and info.get("pid") and info.get("host") == socket.gethostname() and not _process_alive(int(info["pid"])):
            Path(info["path"]).unlink(missing_ok=True)
            self._locks.pop(key, None)
            return False
        return super().is_locked(key, use_cache=use_cache)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
