"""The rnnflow pipeline: ingest -> validate -> encode -> baseline -> train -> evaluate -> report -> promote.

train_and_report is the pipeline as code: each step's task called in turn with its typed configuration section(s)
and the upstream outputs it reads (flows/run_steps.py: RunSteps runs it, or hands back a rerun's recorded output).
What the CLI, the cache and the manifest know about a step is declared once in tasks/steps.py.
"""

import contextlib
import logging
import threading
from pathlib import Path
from typing import Any, Iterator

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows.run_steps import TRACEBACKS, RunFailed, RunSteps, StepFailed, run_step, thaw_frozen_objects, with_retries  # noqa: F401  (run_step, with_retries: for callers)
from tasks.baseline import baseline_task
from tasks.config import RunConfig, load_config
from tasks.encode import encode_task
from tasks.errors import RnnflowError
from tasks.evaluate import evaluate_task
from tasks.flow_run_labels import add_flow_run_tags, flow_run_name, publish_tracked_report_link, run_tags
from tasks.ingest import ingest_task, input_path, locate_source_task
from tasks.logs import one_line
from tasks.notify import note_run_id, notify_failure
from tasks.promote import outcome_line, promote_task, record_promotion
from tasks.provenance import check_reuse, recorded_maker, recorded_step_config
from tasks.report import publish_run_report, report_task
from tasks.steps import STEPS, baseline_inputs, model_name, step as step_spec, text_rule
from tasks.store import ArtifactStore, RunError, RunRecord, StepOutput
from tasks.train import train_task
from tasks.validate import validate_task


# rnnflow's own errors carry one sentence that already names the problem and the fix: the CLI
# prints it, so Prefect's engine tracebacks for them are noise on the console (they go to run.log).
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (RnnflowError,)  # tasks/errors.py: every error rnnflow raises on purpose
RUN_LOG = "run.log"  # in the run folder: every Prefect log line of the run, tracebacks included
IN_RUN_LOG = "rnnflow_in_run_log"  # set on a log record that a run.log wrote, traceback included


class QuietExpectedErrors(logging.Filter):
    """For console handlers: drop the traceback of a record whose exception is one of rnnflow's expected
    errors, or that a run's run.log has already written whole (the one-line message stays); drop whole the
    engine's records of a step or flow that failed with one of them, whose sentence the CLI prints last (it
    was printed four times). At DEBUG everything shows as before."""

    def filter(self, record: logging.LogRecord) -> bool:
        if logging.getLogger("prefect").getEffectiveLevel() <= logging.DEBUG:
            return True
        error = record.exc_info[1] if record.exc_info else None
        if _failure_the_cli_tells(record, error):
            return False  # the API and run.log keep it: their handlers saw the record first
        told = isinstance(error, (*EXPECTED_ERRORS, RunFailed)) or getattr(record, IN_RUN_LOG, False)
        if error is not None and told:
            # Handlers on the run loggers (the API, run.log) saw the record first, whole; the console comes last.
            record.exc_info, record.exc_text = None, None
        return True


def _failure_the_cli_tells(record: logging.LogRecord, error: BaseException | None) -> bool:
    """A flow or task run record of a failure by one of rnnflow's own errors: "Encountered exception during
    execution: StepFailed(...)", "Finished in state Failed('... IngestError: ...')"."""
    if not record.name.startswith(("prefect.flow_runs", "prefect.task_runs")):
        return False
    if error is not None:
        return isinstance(error, (*EXPECTED_ERRORS, RunFailed))
    message = record.getMessage()
    return message.startswith("Finished in state Failed(") and any(f"{name}: " in message for name in _own_error_names())


def _own_error_names() -> set[str]:
    """The class names of rnnflow's own errors, subclasses included, as a failed state's message spells them."""
    found, todo = set(), [*EXPECTED_ERRORS, RunFailed]
    while todo:
        kind = todo.pop()
        found.add(kind.__name__)
        todo.extend(kind.__subclasses__())
    return found


def quiet_expected_tracebacks() -> None:
    """Install QuietExpectedErrors on the console handlers Prefect's logging config made (on the root logger)."""
    for logger in (logging.getLogger(), logging.getLogger("prefect")):
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                if not any(isinstance(f, QuietExpectedErrors) for f in handler.filters):
                    handler.addFilter(QuietExpectedErrors())


@contextlib.contextmanager
def run_log(folder: Path, flow_run_id: str, this_thread_only: bool = False) -> Iterator[None]:
    """Write this flow run's log records, tracebacks included, to <run folder>/run.log while the flow runs.

    this_thread_only: only the records of the calling thread (a sweep's points share one flow run, each in a
    thread of its own). Each record written is marked, so the console need not repeat its traceback.
    """
    handler = logging.FileHandler(folder / RUN_LOG, encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s | %(levelname)-7s | %(name)s - %(message)s"))
    thread = threading.get_ident() if this_thread_only else None

    def this_run(record: logging.LogRecord) -> bool:
        # Sweeps run several flows in threads of one process: keep only this run's records.
        if getattr(record, "flow_run_id", flow_run_id) != flow_run_id or (thread is not None and record.thread != thread):
            return False
        setattr(record, IN_RUN_LOG, True)
        return True

    handler.addFilter(this_run)
    loggers = [logging.getLogger(name) for name in ("prefect.flow_runs", "prefect.task_runs")] + [TRACEBACKS]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        handler.close()


def _run_name() -> str:
    config = flow_run.parameters.get("config") or {}
    if isinstance(config, RunConfig):
        config = config.as_dict()
    return flow_run_name(config)  # the model registry's words for it (tasks/architectures.py)


def plan_steps(start_from: str | None, only_step: str | None, derived_from: str | None) -> tuple[list[str], list[str]]:
    """(steps to reuse from the derived run, steps to execute)."""
    for name in (start_from, only_step):
        if name is not None:
            step_spec(name)  # ValueError naming the steps
    first = only_step or start_from
    if first is None or derived_from is None:
        return [], [only_step] if only_step else list(STEPS)
    index = STEPS.index(first)
    return list(STEPS[:index]), [only_step] if only_step else list(STEPS[index:])


@flow(name="rnnflow", flow_run_name=_run_name, log_prints=True, on_failure=[notify_failure], on_crashed=[notify_failure])
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
    note_run_id(run.run_id)  # an alert (tasks/notify.py) names the run
    add_flow_run_tags(run_tags(config), logger)  # the Prefect UI's runs list tells runs apart by model and data
    try:
        with run_log(run.folder, str(flow_run.id or "")):
            return _run_pipeline(logger, run, store, config, reuse, execute, wanted, derived_from, data_dir)
    finally:
        run.push_file(RUN_LOG)  # for a URL root: the log joins the run folder in the bucket
        thaw_frozen_objects()


def train_and_report(step: RunSteps, config: RunConfig) -> None:
    """The pipeline, step by step: step(task, ...) runs each step the run executes (see RunSteps)."""
    ingest = step(ingest_task, data=config.data, source=step.run.manifest.get("inputs") or {})
    validate = step(validate_task, validate=config.validate_, ingest=ingest, **text_rule(config))
    encode = step(encode_task, encode=config.encode, ingest=ingest)
    baseline = step(baseline_task, baseline=config.baseline, ingest=ingest, **baseline_inputs(config))
    train = step(train_task, model=config.model, train=config.train, encode=encode)
    evaluate = step(evaluate_task, ingest=ingest, encode=encode, train=train, baseline=baseline)
    report = step(report_task, config=config, validate=validate, encode=encode, train=train, evaluate=evaluate)
    if report is not None:
        publish_run_report(step.run, report)  # from the run folder, so a cached report shows too
    promoted = step(promote_task, promote=config.promote, ingest=ingest, validate=validate, encode=encode, evaluate=evaluate,
                    root=step.store.location, run_folder=str(step.run.folder), **model_name(config))
    if promoted is not None:
        record_promotion(step.run, promoted)


def _run_pipeline(logger: Any, run: RunRecord, store: ArtifactStore, config: RunConfig, reuse: list[str], execute: list[str],
                  wanted: set[str], derived_from: str | None, data_dir: str) -> str:
    logger.info("run folder: %s", run.location)
    steps = RunSteps(run, store, config, execute=execute, refresh=wanted)
    try:
        if reuse:
            steps.given = reused_outputs(run, store, config, reuse, execute[0], derived_from)
        if "ingest" in execute:
            run.manifest["inputs"] = locate_input(run, config, data_dir)
        train_and_report(steps, config)
    except BaseException as error:
        TRACEBACKS.error("run failed", exc_info=True, extra={"flow_run_id": str(flow_run.id or "")})
        run.finish("failed", error=one_line(error))
        raise
    track_completed_run(logger, run, config)
    run.finish("completed")
    if "evaluate" in steps.outputs:
        metrics = steps.outputs["evaluate"].summary
        logger.info("test accuracy %.4f  f1 %.4f  roc_auc %s", metrics["accuracy"], metrics["f1"], metrics.get("roc_auc"))
        add_flow_run_tags([f"test_accuracy:{metrics['accuracy']:.4f}"], logger)
    if "promotion" in run.manifest:
        logger.info(outcome_line(run.manifest["promotion"]))
    return str(run.folder)


def reused_outputs(run: RunRecord, store: ArtifactStore, config: RunConfig, reuse: list[str], first: str,
                   derived_from: str | None) -> dict[str, StepOutput]:
    """The outputs a rerun takes from the run it derives from, recorded in this run's manifest as reused from there."""
    source_run = RunRecord.load(store.resolve_run(derived_from), store=store)
    check_reuse(source_run.manifest, config, reuse, first)  # the CLI checked before starting; a deployment's call too
    run.manifest["inputs"] = source_run.manifest.get("inputs", {})
    outputs: dict[str, StepOutput] = {}
    for step in reuse:
        if step in source_run.manifest["steps"]:
            try:
                outputs[step] = source_run.step_output(step)
            except FileNotFoundError as error:  # that step failed there: one sentence, as the CLI's own check gives
                raise RunError(str(error)) from None
            run.record_step(outputs[step], status="cached", seconds=0.0, reused_from=source_run.run_id,
                            config=recorded_step_config(source_run.manifest, step) or {},
                            made_by=recorded_maker(source_run.manifest, step))
    return outputs


def track_completed_run(logger: Any, run: RunRecord, config: RunConfig) -> None:
    """Log the run to MLflow when track.mlflow_uri (or MLFLOW_TRACKING_URI) is set; where it went joins the manifest."""
    if config.track.uri():
        from tasks.tracking import track_run  # only now: a run without tracking never loads it, or mlflow

        record = track_run(run.folder, config, logger)
        if record:
            run.manifest["tracking"] = record
            logger.info("tracked in MLflow: run %s, model %s version %s", record["run_id"], record["model"], record["model_version"])
            publish_tracked_report_link(record, logger)


def locate_input(run: RunRecord, config: RunConfig, data_dir: str) -> dict[str, Any]:
    """Find (or download once) the input, with retries; its fingerprint goes into the manifest."""
    # A download makes its folder first; one that fails (no network) would leave it empty in the working folder.
    folders = {Path(data_dir), Path(input_path(config.data)).expanduser().parent}
    missing = [folder for folder in folders if not folder.exists()]
    state = with_retries(locate_source_task, config)(config.data.model_dump(mode="json"), data_dir, return_state=True)
    for folder in missing:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if still empty: nothing was downloaded into it
    if not state.is_completed():
        error = state.result(raise_on_failure=False)
        if isinstance(error, BaseException):
            TRACEBACKS.error("locating the input failed", exc_info=error, extra={"flow_run_id": str(flow_run.id or "")})
        reason = one_line(error)
        run.record_failure("ingest", reason, 0.0)
        raise StepFailed("ingest", reason)
    return state.result()
