"""The rnnflow pipeline: ingest -> validate -> encode -> train -> evaluate -> report -> promote. Wiring only."""


import ctypes
import gc
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.tasks import exponential_backoff

from tasks.caching import bind_to_store
from tasks.config import RunConfig, load_config
from tasks.encode import encode_task
from tasks.evaluate import evaluate_task
from tasks.ingest import ingest_task, locate_source_task, retry_unless_bad_input
from tasks.promote import manifest_promotion, outcome_line, promote_task
from tasks.report import publish_report_artifacts, report_task
from tasks.store import STEPS, ArtifactStore, RunRecord, StepOutput
from tasks.train import train_task
from tasks.validate import DataValidationError, validate_task

STEP_TASKS = {
    "ingest": ingest_task,
    "validate": validate_task,
    "encode": encode_task,
    "train": train_task,
    "evaluate": evaluate_task,
    "promote": promote_task,
    "report": report_task,
}


class StepFailed(RuntimeError):
    def __init__(self, step: str, reason: str):
        super().__init__(f"step {step} failed: {reason}")
        self.step = step
        self.reason = reason


def _one_line(error: BaseException | Any) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def with_retries(task: Any, config: RunConfig) -> Any:
    """Steps that read from a network or disk retry with exponential backoff, unless the input itself is bad."""
    retries = config.data.retries
    return task.with_options(
        retries=retries,
        retry_delay_seconds=exponential_backoff(config.data.retry_delay_seconds) if retries else 0,
        retry_condition_fn=retry_unless_bad_input,
    )


def release_free_memory() -> None:
    """Give the heap a finished step freed back to the operating system, so the next step's peak does not sit on it.

    Every step runs in this one process; glibc keeps freed small allocations (a step's pandas
    strings, token lists) mapped unless asked, and the run's peak resident memory would carry them.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to hand back this way
        pass


def run_step(run: RunRecord, store: ArtifactStore, config: RunConfig, step: str, refresh: set[str], **params: Any) -> StepOutput:
    """Call one step's task, then link its outputs into the run folder and note them in the manifest."""
    task = STEP_TASKS[step]
    if task.cache_policy != NO_CACHE:  # promote is never cached: it writes into the run folder itself
        task = bind_to_store(task, store, refresh=step in refresh or "all" in refresh)
    if step == "ingest":
        task = with_retries(task, config)
    started = time.perf_counter()
    state = task(root=str(store.root), return_state=True, **params)
    seconds = time.perf_counter() - started
    if not state.is_completed():
        error = state.result(raise_on_failure=False)
        if isinstance(error, DataValidationError) and error.output_dir:
            run.link_outputs(step, Path(error.output_dir))  # the failed checks and Data Docs, for reading
        run.record_failure(step, _one_line(error), seconds)
        raise StepFailed(step, _one_line(error))
    output: StepOutput = state.result()
    release_free_memory()
    run.record_step(output, status="cached" if state.name == "Cached" else "completed", seconds=seconds)
    if step == "report":  # from the run folder, so the link outlives the cache and a cached report shows too
        publish_report_artifacts(run.step_output("report"), {"evaluate": run.step_output("evaluate")})
    if step == "promote":
        run.manifest["promotion"] = manifest_promotion(output, run.run_id)
        run.save()
    return output


def _run_name() -> str:
    config = flow_run.parameters.get("config") or {}
    if isinstance(config, RunConfig):
        config = config.as_dict()
    cell = (config.get("model") or {}).get("cell", "lstm")
    return f"{config.get('preset', 'default')}-{cell}-{time.strftime('%Y%m%d-%H%M%S')}"


def plan_steps(start_from: str | None, only_step: str | None, derived_from: str | None) -> tuple[list[str], list[str]]:
    """(steps to reuse from the derived run, steps to execute)."""
    for name in (start_from, only_step):
        if name is not None and name not in STEPS:
            raise ValueError(f"{name!r} is not a step: use one of {', '.join(STEPS)}")
    first = only_step or start_from
    if first is None or derived_from is None:
        return [], [only_step] if only_step else list(STEPS)
    index = STEPS.index(first)
    return list(STEPS[:index]), [only_step] if only_step else list(STEPS[index:])


@flow(name="rnnflow", flow_run_name=_run_name, log_prints=True)
def rnnflow_pipeline(
    config: RunConfig | None = None,
    artifacts_root: str | None = None,
    run_id: str | None = None,
    refresh: list[str] | None = None,
    data_dir: str = "data",
    start_from: str | None = None,
    only_step: str | None = None,
    derived_from: str | None = None,
) -> str:
    """Train and report one recurrent classifier; returns the run folder.

    start_from recomputes that step and every later one; only_step recomputes just that
    step. With derived_from (a run id) the steps before come from that run's recorded
    outputs; without it they come from the cache like any run.
    """
    logger = get_run_logger()
    config = config or load_config()
    store = ArtifactStore(artifacts_root)
    reuse, execute = plan_steps(start_from, only_step, derived_from)
    wanted = set(refresh or []) | ({only_step} if only_step else set()) | (set(STEPS[STEPS.index(start_from):]) if start_from else set())
    run = store.start_run(config.as_dict(), run_id=run_id, derived_from=derived_from, flow_run_id=str(flow_run.id or ""))
    logger.info("run folder: %s", run.folder)
    outputs: dict[str, StepOutput] = {}
    try:
        if reuse:
            source_run = RunRecord.load(store.resolve_run(derived_from))
            run.manifest["inputs"] = source_run.manifest.get("inputs", {})
            for step in reuse:
                if step in source_run.manifest["steps"]:
                    outputs[step] = source_run.step_output(step)
                    run.record_step(outputs[step], status="cached", seconds=0.0, reused_from=source_run.run_id)
        if "ingest" in execute:
            run.manifest["inputs"] = locate_input(run, config, data_dir)
        for step in execute:
            outputs[step] = run_step(run, store, config, step, wanted, **inputs_for(step, config, outputs, run.manifest["inputs"], run))
    except BaseException as error:
        run.finish("failed", error=_one_line(error))
        raise
    run.finish("completed")
    if "evaluate" in outputs:
        metrics = outputs["evaluate"].summary
        logger.info("test accuracy %.4f  f1 %.4f  roc_auc %s", metrics["accuracy"], metrics["f1"], metrics.get("roc_auc"))
    if "promotion" in run.manifest:
        logger.info(outcome_line(run.manifest["promotion"]))
    return str(run.folder)


def locate_input(run: RunRecord, config: RunConfig, data_dir: str) -> dict[str, Any]:
    """Find (or download once) the input, with retries; its fingerprint goes into the manifest."""
    state = with_retries(locate_source_task, config)(config.data.model_dump(mode="json"), data_dir, return_state=True)
    if not state.is_completed():
        reason = _one_line(state.result(raise_on_failure=False))
        run.record_failure("ingest", reason, 0.0)
        raise StepFailed("ingest", reason)
    return state.result()


def inputs_for(step: str, config: RunConfig, outputs: dict[str, StepOutput], source: dict[str, Any], run: RunRecord | None = None) -> dict[str, Any]:
    """What each step's task is called with: its configuration section and its upstream outputs."""
    pick = lambda *names: {n: outputs[n] for n in names}  # noqa: E731
    if step == "ingest":
        return {"section": config.section("data"), "upstream": {}, "source": source}
    if step == "validate":  # the kept_text check measures what encode's tokenizer keeps
        text_rule = {"tokenizer": config.encode.tokenizer, "lowercase": config.encode.lowercase}
        return {"section": config.section("validate"), "upstream": pick("ingest"), "text_rule": text_rule}
    if step == "encode":
        return {"section": config.section("encode"), "upstream": pick("ingest")}
    if step == "train":
        return {"section": {"model": config.section("model"), "train": config.section("train")}, "upstream": pick("encode")}
    if step == "evaluate":
        return {"section": {}, "upstream": pick("encode", "train")}
    if step == "promote":
        return {"section": config.section("promote"), "upstream": pick("ingest", "validate", "encode", "evaluate"), "run_folder": str(run.folder)}
    # The report leaves the promotion out: it changes from run to run, and the report is cached.
    return {"section": {"config": config.as_dict()}, "upstream": pick("validate", "encode", "train", "evaluate")}
