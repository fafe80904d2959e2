"""The sweep flow: ingest, validate and encode once, then the later steps once per grid point, in parallel. Wiring only.

The points run through the flow's Prefect task runner: ThreadPoolTaskRunner (threads of this
process) or prefect_dask.DaskTaskRunner (a LocalCluster of worker processes, or an existing
Dask scheduler). What crosses to a worker is small: the artifacts root, the point's run id,
its configuration and the shared steps' StepOutput pointers. With a local root the files are
read where they lie, so every worker must see it at the same path (a shared filesystem for
workers on other machines); with a bucket root (s3://...) each worker fetches what it reads
into its own mirror and writes its run folder back to the bucket.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.futures import wait
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from flows.pipeline import RUN_LOG, locate_input, quiet_expected_tracebacks, run_log, train_and_report
from flows.run_steps import TRACEBACKS, RunFailed, RunSteps, thaw_frozen_objects
from tasks.config import RunConfig, load_config
from tasks.logs import one_line
from tasks.notify import note_run_id, notify_failure
from tasks.provenance import step_config
from tasks.render import format_metric
from tasks.promote import outcome_line
from tasks.steps import STEPS, step as step_spec
from tasks.store import ArtifactStore, RunRecord, StepOutput, new_run_id
from tasks.sweep import (
    CHOSEN_ON, POINT_VALIDATION, SWEEP_HTML, SWEEP_JSON, Grid, point_configs, point_label, point_row, point_validation, start_sweep,
    sweep_report_task, sweeps_dir,
)

SHARED_STEPS = STEPS[: STEPS.index("train")]  # ingest, validate, encode: once per sweep
# train, evaluate, report: once per point. Promote runs once, for the point chosen on validation: letting every point
# compete would make the champion the best of the points on a test figure, a choice made on the test split.
POINT_STEPS = STEPS[STEPS.index("train"): STEPS.index("promote")]


class SweepPointsFailed(RunFailed):
    """Some grid points failed; the others finished and sweep.html compares them all."""


def task_runner(kind: str = "thread", *, workers: int = 2, dask_address: str | None = None) -> Any:
    """The Prefect task runner the points run on: threads here, or Dask (a local cluster, or the scheduler at dask_address)."""
    if kind == "thread":
        return ThreadPoolTaskRunner(max_workers=workers)
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        if dask_address:
            return DaskTaskRunner(address=dask_address)
        # One thread per worker process: Keras training already uses every core it is given.
        # No dashboard: nobody watches it here, and it would take a port (or warn that 8787 is taken).
        return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None})
    raise ValueError(f"unknown task runner {kind!r}: use thread or dask")


def describe_task_runner(runner: Any) -> dict[str, Any]:
    """What ran the points, for the sweep's manifest."""
    name = type(runner).__name__
    if name == "DaskTaskRunner":
        if runner.address:
            return {"kind": "dask", "address": runner.address}
        return {"kind": "dask", "cluster": "temporary LocalCluster", "cluster_kwargs": runner.cluster_kwargs}
    return {"kind": "thread" if name == "ThreadPoolTaskRunner" else name, "max_workers": getattr(runner, "_max_workers", None)}


@contextlib.contextmanager
def prefect_api_for_workers(dask_address: str | None = None) -> Iterator[str]:
    """Make sure Dask worker processes report to this flow's Prefect API, not each to a server of its own.

    With PREFECT_API_URL unset, Prefect starts a temporary server for the process that asks; a
    Dask worker is another process, so it would start (or time out starting) its own, and its
    task runs would land in another database. Here the temporary server is started up front and
    its address set as PREFECT_API_URL, which the task runner hands to every worker with the
    rest of the settings. It listens on 127.0.0.1 only: workers on other machines need
    PREFECT_API_URL set to a server they can reach.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield PREFECT_API_URL.value()
        return
    host = urlsplit(dask_address if "://" in (dask_address or "") else f"tcp://{dask_address}").hostname if dask_address else None
    if host and host not in ("localhost", "127.0.0.1", "::1"):
        raise ValueError(
            f"Dask workers behind {dask_address} report their task runs to the Prefect API: set PREFECT_API_URL to a "
            "Prefect server they can reach (e.g. prefect server start --host 0.0.0.0 on this machine)."
        )
    from flows.prefect_server import start_temporary_server

    # The same server Prefect's own client would find in this process; rnnflow's, on a per-run database copy.
    api_url = start_temporary_server()
    with temporary_settings({PREFECT_API_URL: api_url}):
        yield api_url


@task(name="sweep-point", cache_policy=NO_CACHE)
def sweep_point_task(root: str, run_id: str, config: RunConfig, shared: dict[str, StepOutput]) -> str:
    """Train, evaluate and report one grid point into its run folder, on whichever worker runs it.

    For a URL root the worker needs no folder of the flow's: its own mirror fetches the shared
    steps' entries from the bucket, and the run folder goes back there as it is written. The
    validation figures the sweep chooses on are noted in the run's manifest here, where train.json
    lies, so the flow compares the points from their manifests alone.
    """
    store = ArtifactStore(root)
    run = store.open_run(store.run_dir(run_id))
    if _in_dask_worker():  # a worker process's console: tracebacks go to the point's run.log, as in this process
        quiet_expected_tracebacks()
    outputs = {name: store.local_output(output) for name, output in shared.items()}
    flow_run_id = str(flow_run.id or "")

    def note_validation(step: str, output: StepOutput) -> None:
        if step == "train":  # saved with the next step's record, or by finish
            run.manifest[POINT_VALIDATION] = point_validation(run.folder)

    try:
        with run_log(run.folder, flow_run_id, this_thread_only=True):  # the point's own run.log: other points run beside it
            try:
                train_and_report(RunSteps(run, store, config, execute=POINT_STEPS, given=outputs, after=note_validation), config)
            except BaseException as error:
                TRACEBACKS.error("grid point failed", exc_info=True, extra={"flow_run_id": flow_run_id})
                run.finish("failed", error=one_line(error))
                raise
    finally:
        run.push_file(RUN_LOG)  # for a URL root: the log joins the point's run folder in the bucket
        thaw_frozen_objects()  # a Dask worker runs point after point
    run.finish("completed")
    return run.location


def _in_dask_worker() -> bool:
    if "distributed" not in sys.modules:
        return False
    from distributed import get_worker

    try:
        get_worker()
    except ValueError:
        return False
    return True


def _failure_reason(future: Any) -> str:
    """Why a point's task ended without finishing its run, in one line."""
    try:
        outcome = future.result(raise_on_failure=False)
    except Exception as error:  # raised on the worker before Prefect recorded a state
        return one_line(error)
    if isinstance(outcome, BaseException):
        return one_line(outcome)
    return one_line(future.state.message or f"its task ended {future.state.name}")


def start_point(store: ArtifactStore, sweep: RunRecord, point: dict[str, Any], config: RunConfig, shared: dict[str, StepOutput]) -> RunRecord:
    """A run folder for one grid point, with the shared steps linked in as cached."""
    run = store.start_run(config.as_dict(), flow_run_id=sweep.manifest["prefect_flow_run_id"])
    run.manifest["sweep_id"] = sweep.manifest["sweep_id"]
    run.manifest["grid_point"] = point
    run.manifest["inputs"] = sweep.manifest["inputs"]
    for output in shared.values():
        run.record_step(output, status="cached", seconds=0.0, config=step_config(output.step, config), made_by=output.made_by)  # saves the manifest
    return run


def _sweep_name() -> str:
    config = flow_run.parameters.get("config") or {}
    if isinstance(config, RunConfig):
        config = config.as_dict()
    return f"sweep-{config.get('preset', 'default')}-{time.strftime('%Y%m%d-%H%M%S')}"


@flow(name="rnnflow-sweep", flow_run_name=_sweep_name, log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=2),
      on_failure=[notify_failure], on_crashed=[notify_failure])
def rnnflow_sweep(
    grid: Grid,
    config: RunConfig | None = None,
    artifacts_root: str | None = None,
    sweep_id: str | None = None,
    data_dir: str = "data",
) -> str:
    """One run per grid point over shared ingest/validate/encode, then sweep.html comparing them; returns the sweep folder.

    The grid maps model.* and train.* keys to their values (tasks.sweep.parse_grid); every
    combination is a point. Choose where the points run with
    rnnflow_sweep.with_options(task_runner=task_runner("dask")).
    """
    logger = get_run_logger()
    config = config or load_config()
    points = point_configs(config, grid)  # every point validated before anything is written
    store = ArtifactStore(artifacts_root)
    context = FlowRunContext.get()
    sweep = start_sweep(
        store, config, grid, sweep_id=sweep_id or new_run_id(),
        task_runner=describe_task_runner(context.task_runner), flow_run_id=str(flow_run.id or ""),
    )
    logger.info("sweep folder: %s (%d points)", sweep.location, len(points))
    note_run_id(sweep.manifest["sweep_id"])  # an alert (tasks/notify.py) names the sweep
    flow_run_id = str(flow_run.id or "")
    try:
        with run_log(sweep.folder, flow_run_id):  # the sweep's run.log: every line of the sweep, its points' too
            try:
                return _run_sweep(logger, store, sweep, config, points, data_dir)
            except BaseException:
                TRACEBACKS.error("sweep failed", exc_info=True, extra={"flow_run_id": flow_run_id})
                raise
    finally:
        sweep.push_file(RUN_LOG)  # for a URL root: the log joins the sweep folder in the bucket
        thaw_frozen_objects()


def _run_sweep(logger: Any, store: ArtifactStore, sweep: RunRecord, config: RunConfig, points: list[tuple[dict[str, Any], RunConfig]],
               data_dir: str) -> str:
    steps = RunSteps(sweep, store, config, execute=SHARED_STEPS)
    try:
        sweep.manifest["inputs"] = locate_input(sweep, config, data_dir)
        train_and_report(steps, config)  # the shared steps alone
        shared = steps.outputs
    except BaseException as error:  # raised, as the pipeline does, so the flow run ends Failed with the reason
        sweep.finish("failed", error=one_line(error))
        raise

    runs = [(point, point_config, start_point(store, sweep, point, point_config, shared)) for point, point_config in points]
    sweep.manifest["points"] = [{"run_id": run.run_id, "grid_point": point} for point, _, run in runs]
    sweep.save()
    futures = [
        sweep_point_task.with_options(task_run_name=f"point-{point_label(point)}").submit(store.location, run.run_id, point_config, shared)
        for point, point_config, run in runs
    ]
    wait(futures)
    for (point, _, run), future in zip(runs, futures):
        record = store.open_run(run.folder)  # fresh: the worker wrote it (to the bucket, for a URL root)
        if record.manifest["status"] == "running":  # the task never started, or its worker died
            record.finish("failed", error=_failure_reason(future))
        logger.info("%s: %s", point_label(point), record.manifest["status"])

    rows = [point_row(run.folder, point) for point, _, run in runs]
    summary = sweep_report_task(str(sweep.folder), sweep.manifest, rows)
    for name in (SWEEP_JSON, SWEEP_HTML):  # for a URL root: the comparison joins the sweep folder in the bucket
        sweep.push_file(name)
    failed = [row for row in rows if row["status"] != "completed"]
    sweep.manifest["best_run_id"] = summary["best_run_id"]
    if failed:
        reason = f"{len(failed)} of {len(rows)} grid points failed; first: {point_label(failed[0]['grid_point'])}: {failed[0]['error']}"
        sweep.finish("failed", error=reason)
        raise SweepPointsFailed(reason)
    if summary["best_run_id"]:
        chosen = dict(zip((run.run_id for _, _, run in runs), (point_config for _, point_config, _ in runs)))[summary["best_run_id"]]
        sweep.manifest["promotion"] = promote_choice(store, summary["best_run_id"], chosen)
    if config.track.uri():
        track_points(logger, store, sweep, config, [(run, point_config) for _, point_config, run in runs])
    sweep.finish("completed")
    if sweep.manifest.get("promotion"):
        logger.info("%s: %s", summary["best_run_id"], outcome_line(sweep.manifest["promotion"]))
    if summary["best"]:
        best = summary["best"]
        logger.info("best on %s: %s, %s %s, test accuracy %s for reference (run %s)", CHOSEN_ON, point_label(best["grid_point"]),
                    CHOSEN_ON, format_metric(best["val_accuracy"]), format_metric(best["test_accuracy"]), summary["best_run_id"])
    return str(sweep.folder)


def track_points(logger: Any, store: ArtifactStore, sweep: RunRecord, config: RunConfig, points: list[tuple[RunRecord, RunConfig]]) -> None:
    """The sweep as a parent MLflow run, its points nested (tasks/tracking.py); each point's manifest notes its own."""
    from tasks.tracking import track_sweep  # only when tracking is on: mlflow stays unloaded otherwise

    records = track_sweep(sweep.folder, config, [(run.folder, point_config) for run, point_config in points], logger)
    for run, _ in points:
        if run.run_id in records:
            record = store.open_run(run.folder)
            record.manifest["tracking"] = records[run.run_id]
            record.save()
    sweep.manifest["tracking"] = {"runs": sorted(records)}


def promote_choice(store: ArtifactStore, run_id: str, config: RunConfig) -> dict[str, Any] | None:
    """The promote step for the point the sweep chose, in its run folder: the only point that competes for the champion."""
    run = store.open_run(store.run_dir(run_id))
    outputs = {name: store.local_output(run.step_output(name)) for name in step_spec("promote").upstream}
    train_and_report(RunSteps(run, store, config, execute=["promote"], given=outputs), config)  # promote alone
    return run.manifest.get("promotion")


def sweep_folder(artifacts_root: str | Path | None, sweep_id: str) -> Path:
    return sweeps_dir(ArtifactStore(artifacts_root)) / sweep_id
