"""How a flow calls one step: the one helper the training flow, the sweep and the scoring flow share.

    call_step(store, config, encode_task, encode=config.encode, ingest=ingest)

checks the inputs against the step's declaration (tasks/steps.py), computes its cache key once (tasks/caching.py:
key_for) and hands the task a CacheSlot, retries it when the step reads a network or disk, and returns its Prefect
state. run_step does that for a run: a failure is recorded in the run's manifest and raised as StepFailed, an output
is linked into the run folder and recorded as computed or cached. RunSteps is a run's plan, called step by step.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection

from prefect.runtime import flow_run
from prefect.tasks import exponential_backoff

from tasks.caching import CacheSlot, key_for
from tasks.config import RunConfig
from tasks.config_section import Section
from tasks.ingest import retry_unless_bad_input
from tasks.logs import one_line
from tasks.provenance import step_config
from tasks.steps import WHOLE_CONFIG, Step, is_step, step as step_spec
from tasks.store import ArtifactStore, RunRecord, StepOutput

# Tracebacks for run.log alone: Prefect logs a failed step's with no traceback, and the flow's after run.log closes.
TRACEBACKS = logging.getLogger("rnnflow.tracebacks")
TRACEBACKS.propagate = False
TRACEBACKS.setLevel(logging.DEBUG)


class RunFailed(RuntimeError):
    """A failure already told in one sentence, whose cause's traceback is in the run's run.log: none on the console."""


class StepFailed(RunFailed):
    def __init__(self, step: str, reason: str):
        super().__init__(f"step {step} failed: {reason}")
        self.step = step
        self.reason = reason


def with_retries(task: Any, config: RunConfig) -> Any:
    """Steps that read from a network or disk retry with exponential backoff, unless the input itself is bad."""
    retries = config.data.retries
    return task.with_options(
        retries=retries,
        retry_delay_seconds=exponential_backoff(config.data.retry_delay_seconds) if retries else 0,
        retry_condition_fn=retry_unless_bad_input,
    )


def release_free_memory() -> None:
    """Give the heap a computed step freed back to the operating system, so the next step's peak does not sit on it.

    Every step runs in this one process; glibc keeps freed small allocations (a step's pandas
    strings, token lists) mapped unless asked, and the run's peak resident memory would carry them.
    The collection first frees what the step left in reference cycles. What outlives a step is the
    process's own (modules; TensorFlow's, Keras' and Prefect's objects: 640,000 once TensorFlow is
    imported) and is then frozen, so the next step's collection walks only what that step made: a
    full one took 0.5 s a step. thaw_frozen_objects hands them back to the collector when the run ends.
    """
    gc.collect()
    gc.freeze()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to hand back this way
        pass


def thaw_frozen_objects() -> None:
    """At a run's end: what release_free_memory froze is collected again, so a process that runs many flows (a sweep,
    a Dask worker, the tests) does not keep what earlier runs left in reference cycles."""
    gc.unfreeze()


def check_inputs(spec: Step, config: RunConfig, inputs: dict[str, Any]) -> None:
    """The call matches tasks/steps.py's declaration (what the manifest and a rerun go by): a wiring mistake stops here."""
    sections = {name for name, value in inputs.items() if isinstance(value, Section)}
    declared = {"config" if name == WHOLE_CONFIG else name for name in spec.sections}
    upstream = {name for name, value in inputs.items() if name not in sections and (value is None or isinstance(value, StepOutput))
                and is_step(name)}
    derived = spec.derived(config) if spec.derived is not None else {}
    wrong = {name for name, value in derived.items() if inputs.get(name) != value}
    if sections != declared or upstream != set(spec.upstream) or wrong:
        raise TypeError(
            f"the {spec.name} step is called with sections {sorted(sections)}, upstream {sorted(upstream)} and other {sorted(wrong)}, "
            f"but tasks/steps.py declares sections {sorted(declared)}, upstream {sorted(spec.upstream)} and derived {sorted(derived)}"
        )


def call_step(store: ArtifactStore, config: RunConfig, step_task: Any, /, refresh: bool = False, **inputs: Any) -> tuple[Any, float]:
    """Call a step's Prefect task (its name is the step's): (its final state, seconds). A cached step's task gets
    its CacheSlot, the key computed here once; a step that reads a network or disk is retried."""
    spec = step_spec(step_task.name)
    check_inputs(spec, config, inputs)
    if spec.cached:
        inputs["slot"] = CacheSlot(store.location, spec.name, key_for(spec.name, inputs), refresh)
    if spec.retries:
        step_task = with_retries(step_task, config)
    started = time.perf_counter()
    state = step_task(return_state=True, **inputs)
    return state, time.perf_counter() - started


def run_step(run: RunRecord, store: ArtifactStore, config: RunConfig, step_task: Any, /, refresh: bool = False, **inputs: Any) -> StepOutput:
    """Call one step of a run, then link its outputs into the run folder and note them (a failure: noted, StepFailed)."""
    step = step_task.name
    state, seconds = call_step(store, config, step_task, refresh=refresh, **inputs)
    if not state.is_completed():
        error = state.result(raise_on_failure=False)
        if isinstance(error, BaseException):
            TRACEBACKS.error("step %s failed", step, exc_info=error, extra={"flow_run_id": str(flow_run.id or "")})
        if getattr(error, "output_dir", None):
            run.link_outputs(step, Path(error.output_dir))  # what the step wrote about its failure (validate's checks, Data Docs)
        run.record_failure(step, one_line(error), seconds)
        raise StepFailed(step, one_line(error))
    output: StepOutput = state.result()
    computed = not (state.name == "Cached" or output.reused)
    if computed:  # a step found in the cache read a record and linked files: nothing to give back
        release_free_memory()
    run.record_step(output, status="completed" if computed else "cached", seconds=seconds, config=step_config(step, config),
                    made_by=run.record_id if computed else output.made_by)
    return output


@dataclass
class RunSteps:
    """A run's plan, called step by step: `steps(encode_task, encode=config.encode, ingest=ingest)` runs the step when
    the plan executes it, hands back its given output (a rerun's recorded one, a sweep's shared one) when it has one,
    and returns None for a step the run leaves out (after `rnnflow step NAME`, an optional step a recorded run lacks)."""

    run: RunRecord
    store: ArtifactStore
    config: RunConfig
    execute: Collection[str]
    given: dict[str, StepOutput] = field(default_factory=dict)
    refresh: Collection[str] = ()  # step names, or "all": recompute even when the entry is there
    after: Callable[[str, StepOutput], None] | None = None  # called with each executed step's output (a sweep point's)
    outputs: dict[str, StepOutput] = field(default_factory=dict)

    def __call__(self, step_task: Any, /, **inputs: Any) -> StepOutput | None:
        name = step_task.name
        if name in self.given:
            output = self.given[name]
        elif name in self.execute:
            refresh = name in self.refresh or "all" in self.refresh
            output = run_step(self.run, self.store, self.config, step_task, refresh=refresh, **inputs)
            if self.after is not None:
                self.after(name, output)
        else:
            return None
        self.outputs[name] = output
        return output
