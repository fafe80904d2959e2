"""How a step is cached: one record, the store's entry (cache/<step>/<key>/), under a fingerprint of exactly what
changes its output.

The key covers the step's configuration section(s) (their JSON dump, as RunConfig.section gives it), the content
fingerprints of its upstream outputs, its other inputs, and the source of every tasks/ module the step runs, as
the process found it at start (the code it runs, whatever is edited meanwhile). Not the run id, not the time.

The flow computes the key once per step (flows/run_steps.py: key_for) and hands the task a CacheSlot; the task's
body is produce_step, which takes the entry's lock (two runs of one key on this machine: the second waits, then
reuses), returns the entry when it is whole (every file present and matching its sha256) and otherwise runs the
work into a new one (store.produce: built aside and renamed in; on a bucket, claimed, so another machine's claim
wins and is reused). Prefect keeps no cache record or result of its own for a step: a reused entry comes back as
a Completed state named "Cached", which is what the Prefect UI shows.
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import functools
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from tasks.config_keys import key_config
from tasks.config_section import Section, section_dump
from tasks.steps import WHOLE_CONFIG, is_step, step as step_spec
from tasks.store import ArtifactStore, StepOutput, fingerprint

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
    return set(_imports_in(name, source_at_start(name)))


@functools.lru_cache(maxsize=None)
def _imports_in(name: str, source: bytes) -> frozenset[str]:
    # Parsed once per file and source: the sources at start do not change, so neither do their imports.
    module = name[: -len("/__init__.py")] if name.endswith("/__init__.py") else name[: -len(".py")]
    package = module if name.endswith("/__init__.py") else module.rpartition("/")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
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
    return frozenset(found)


def _sources_now() -> tuple[tuple[str, int], ...]:
    """What the memoised code versions hang on: which sources at start there are, each by its hash (computed once
    per bytes object, so cheap; a test that swaps one in SOURCES_AT_START gets a fresh answer)."""
    return tuple((name, hash(source)) for name, source in SOURCES_AT_START.items())


def code_files(step: str) -> list[str]:
    """The files whose source is the step's code version: every .py file of its own package (found, not listed)
    and every tasks/ file those import, transitively. Found once per step and process."""
    return list(_code_files(step, _sources_now()))


@functools.lru_cache(maxsize=64)
def _code_files(step: str, sources: tuple[tuple[str, int], ...]) -> tuple[str, ...]:
    own = step_spec(step).own_package
    if (TASKS_DIR / own).is_dir():
        todo = [name for name, _ in sources if name.startswith(f"tasks/{own}/")]
    else:
        todo = [f"tasks/{own}.py"]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name in NOT_CODE:
            continue
        seen.add(name)
        todo.extend(_imported_files(name) - seen)
    return tuple(sorted(seen))


def code_version(step: str) -> str:
    """sha256 over the source at start of the step's code files: editing any of them changes the step's key.
    Computed once per step and process."""
    return _code_version(step, _sources_now())


@functools.lru_cache(maxsize=64)
def _code_version(step: str, sources: tuple[tuple[str, int], ...]) -> str:
    digest = hashlib.sha256()
    for name in _code_files(step, sources):
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


def section_data(name: str, section: Section) -> dict[str, Any]:
    """A typed section as its cache key and record see it: its JSON dump (RunConfig.section's; for the whole
    configuration, without the reporting sections)."""
    from tasks.config import RunConfig
    from tasks.config_reporting import without_reporting

    if isinstance(section, RunConfig):
        return without_reporting(section.as_dict())
    return section_dump(name, section)


def key_for(step: str, inputs: dict[str, Any]) -> str:
    """A step's key from the inputs its task is called with: the Section ones are its configuration (one: its dump;
    several, or the whole configuration: keyed by parameter name), those named after a step its upstream outputs (one
    that is None, an optional step a run lacks, is left out), and the rest its extra inputs."""
    sections = {name: section_data(name, value) for name, value in inputs.items() if isinstance(value, Section)}
    upstream = {name: value for name, value in inputs.items() if isinstance(value, StepOutput)}
    extra = {name: value for name, value in inputs.items()
             if name not in sections and name not in upstream and not (value is None and is_step(name))}
    single = len(sections) == 1 and step_spec(step).sections != (WHOLE_CONFIG,)
    return step_key(step, next(iter(sections.values())) if single else sections, upstream, extra)


@dataclass(frozen=True)
class CacheSlot:
    """Where a step's output goes: its artifacts root, step and key (computed once, by the flow), and whether to
    recompute an entry that is there (--refresh, --from, `rnnflow step`)."""

    root: str
    step: str
    key: str
    refresh: bool = False


def produce_step(slot: CacheSlot, work: Callable[[Path], dict[str, Any]]) -> StepOutput:
    """The body every cached step's task shares: the entry for slot's key, or work(out_dir) run into a new one.

    Under the entry's lock: a second run of the same key on this machine waits, then finds the entry and reuses it
    (reused=True: the task's state is named Cached). On a bucket root the entry may come from another machine.
    """
    _refuse_code_changed_since_start(slot.step)
    store = ArtifactStore(slot.root)
    with entry_lock(store, slot.step, slot.key):
        if not slot.refresh:
            found = store.read_entry(slot.step, slot.key)  # checked whole; on a bucket root fetched into the mirror
            if found is not None:
                return found.model_copy(update={"reused": True})
        # On a bucket another machine may be computing the same key right now: produce claims the entry, and
        # when that machine's claim came first its output comes back (reused) and this one's is discarded.
        return store.produce(slot.step, slot.key, work, made_by=running_run_id(), refresh=slot.refresh)


def _refuse_code_changed_since_start(step: str) -> None:
    for name in code_files(step):
        # A module the step imports only now (tasks.models: Keras) would load as it is on disk, while
        # the key was made from the source at start: refuse rather than cache one under the other.
        module = name[: -len(".py")].removesuffix("/__init__").replace("/", ".")
        if module not in sys.modules and changed_since_start(name):
            raise RuntimeError(
                f"{name} changed on disk after this run started, so the {step} step would run other code than "
                "its cache key describes: start the run again"
            )


def lock_file(store: ArtifactStore, step: str, key: str) -> Path:
    """Where the lock of a step's entry is: on this machine, under the root (a bucket root's mirror)."""
    return store.root / "locks" / step / f"{key}.lock"


@contextlib.contextmanager
def entry_lock(store: ArtifactStore, step: str, key: str) -> Iterator[None]:
    """An exclusive lock on one entry of this machine's cache folder, held while it is looked up and made.

    flock: the kernel releases it when its holder exits, however it ends (SIGKILL included), so a killed run
    never blocks the step in later runs. The lock file (locks/<step>/<key>.lock, beside cache/ so that a step's
    cache folder holds its entries alone) stays: removing it could let two writers lock two files of one name.
    """
    path = lock_file(store, step, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def running_run_id() -> str | None:
    """The rnnflow run id of the flow run this task belongs to (its `run_id` parameter), for the entry's made_by."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    run_id = (getattr(context, "parameters", None) or {}).get("run_id") if context is not None else None
    return str(run_id) if run_id else None


def step_task(name: str, **options: Any) -> Callable[[Callable[..., StepOutput]], Any]:
    """@step_task("encode"): a step's Prefect task, with no Prefect cache or result record (the entry is the record).

    A reused entry returns as a Completed state named "Cached", which the Prefect UI shows, with the output as its
    result."""
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    def decorate(body: Callable[..., StepOutput]) -> Any:
        @functools.wraps(body)
        def run(*args: Any, **kwargs: Any) -> Any:
            output = body(*args, **kwargs)
            if isinstance(output, StepOutput) and output.reused:
                from prefect.states import Completed

                return Completed(name="Cached", data=output)
            return output

        return task(name=name, cache_policy=NO_CACHE, persist_result=False, **options)(run)

    return decorate
