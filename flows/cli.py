"""The rnnflow command line: run the pipeline, list runs and presets."""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Sequence

import flows  # noqa: F401  (telemetry defaults before Prefect loads)
from flows.cli_common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, checked_store, prepare_prefect
from flows.cli_parser import UsageError, build_parser
from flows.preflight import check_before_flow
from tasks.config import ConfigError, RunConfig, load_config, preset_description, preset_names
from tasks.spelling import did_you_mean
from tasks.steps import STEPS, step as step_spec
from tasks.store import MANIFEST_FILE, ArtifactsRootError, ArtifactStore, ChampionError, RunFiles, RunError, new_run_id, read_json, verify_run_files

_store, _prepare_prefect = checked_store, prepare_prefect  # the names the commands below call them by


def _resolve(store: ArtifactStore, run: str, model: str | None = None) -> Path:
    """A run argument (an id under this root, 'latest' or 'champion' of model) as its folder; exit 2 with one sentence otherwise."""
    try:
        return store.resolve_run(run, model)
    except (RunError, FileNotFoundError) as error:
        raise UsageError(str(error)) from None


def _load(args: argparse.Namespace) -> RunConfig:
    return load_config(args.preset, args.config, args.overrides)


def cmd_run(args: argparse.Namespace) -> int:
    refresh = sorted(set(args.refresh or []))
    unknown = [s for s in refresh if s not in (*STEPS, "all")]
    if unknown:
        raise UsageError(f"--refresh {unknown[0]!r} is not a step{did_you_mean(unknown[0], STEPS)}: use one of {', '.join(STEPS)}, or --refresh alone for all.")
    if args.derived_from and not args.start_from:
        raise UsageError("--run needs --from STEP: say from which step to recompute, e.g. --from train --run RUN_ID.")
    store = _store(args, writing=True)
    derived_from = None
    if args.derived_from:  # the steps before --from come from that run as made: its configuration is the base
        source = _resolve(store, args.derived_from, args.model)
        derived_from = source.name
        config = _reuse_config(source, args.start_from, args.preset, args.config, args.overrides)
    else:
        config = _load(args)
    check_before_flow(config, args.start_from if derived_from else None)
    _prepare_prefect()
    return _execute(store, config, refresh=refresh, data_dir=args.data_dir, start_from=args.start_from, derived_from=derived_from)


def _reuse_config(source: Path, first: str, preset: str | None, config_file: str | None, overrides: list[str]) -> RunConfig:
    """The configuration of a rerun from step `first` of a recorded run: that run's, with the command's layers on top,
    refused (one sentence) when they change what a reused step was made with."""
    from tasks.provenance import check_reuse, reused_steps

    recorded = read_json(source / MANIFEST_FILE)  # validated by _resolve
    config = load_config(preset, config_file, overrides, base=recorded["config"])
    check_reuse(recorded, config, reused_steps(first), first)
    _check_reusable(recorded, first)
    return config


def _check_reusable(manifest: dict, first: str) -> None:
    """Every step a rerun from `first` takes from the recorded run completed there (one sentence otherwise), checked
    before a new run folder exists: the flow found out only after starting, with a traceback."""
    from tasks.provenance import reused_steps

    run_id, steps, needed = manifest.get("run_id"), manifest.get("steps") or {}, set(step_spec(first).upstream)
    for name in reused_steps(first):
        entry = steps.get(name)
        status = entry.get("status") if isinstance(entry, dict) else None
        if status in ("completed", "cached") or (entry is None and (name not in needed or step_spec(name).optional)):
            continue
        state = f"{status}: {entry.get('error')}" if status and entry.get("error") else (status or "never ran")
        raise UsageError(
            f"Run {run_id} has no completed {name} step for {first} to start from ({name} {state}): rerun from there with "
            f"'rnnflow run --from {name} --run {run_id}', or choose a run whose {name} completed ('rnnflow runs' lists them)."
        )


def cmd_step(args: argparse.Namespace) -> int:
    from tasks.provenance import rerunnable_steps

    store = _store(args, writing=True)
    source = _resolve(store, args.derived_from, args.model)
    recorded = read_json(source / MANIFEST_FILE)  # validated by _resolve
    config = _reuse_config(source, args.step, None, None, args.overrides)
    try:  # a damaged input fails here, before a new run folder exists, not as "mmap length is greater than file size"
        verify_run_files(source, _step_input_files(recorded, args.step), rerunnable=rerunnable_steps())
    except RunError as error:
        raise UsageError(str(error)) from None
    _prepare_prefect()
    return _execute(store, config, only_step=args.step, derived_from=source.name)


def _step_input_files(manifest: dict, step: str) -> list[str]:
    """The recorded files of the steps that STEP reads ("encode/X_train.npy", ...), as tasks/steps.py declares them."""
    steps = manifest.get("steps") or {}
    reads = step_spec(step).upstream
    return [f"{steps[name].get('dir') or name}/{file}" for name in reads if name in steps for file in (steps[name].get("outputs") or {})]


def _execute(store: ArtifactStore, config: RunConfig, **options) -> int:
    """Run the flow under a fresh run id; print the test metrics (if evaluated) and the run folder last."""
    from flows.pipeline import rnnflow_pipeline

    run_id = new_run_id()
    state = rnnflow_pipeline(config=config, artifacts_root=store.location, run_id=run_id, return_state=True, **options)
    folder = store.run_dir(run_id)
    for line in store.storage.transfer_summary():  # a bucket: what this run sent (a folder: nothing travels)
        print(line)
    if state.is_completed():
        metrics_file = RunFiles.METRICS.of_run(folder)
        if metrics_file.exists():
            metrics = read_json(metrics_file)["test"]
            roc_auc = "n/a" if metrics.get("roc_auc") is None else f"{metrics['roc_auc']:.4f}"
            print(f"test accuracy {metrics['accuracy']:.4f}  f1 {metrics['f1']:.4f}  roc_auc {roc_auc}")
        _print_promotion(folder)
        _print_report(store, folder)
        print(store.where(folder))
        return EXIT_OK
    manifest = read_json(folder / MANIFEST_FILE) if (folder / MANIFEST_FILE).exists() else {}
    _print_promotion(folder)  # a run can be promoted and then fail its report
    failed = [(name, step.get("error")) for name, step in manifest.get("steps", {}).items() if step.get("status") == "failed"]
    reason = f"step {failed[0][0]} failed: {failed[0][1]}" if failed else (manifest.get("error") or state.message)
    print(f"rnnflow: {reason}", file=sys.stderr)
    _print_report(store, folder)
    print(store.where(folder))
    return EXIT_FAILED


def _print_report(store: ArtifactStore, folder: Path) -> None:
    """'report /path/to/report.html', when the run wrote one: the page to open first (the run folder follows)."""
    report = RunFiles.REPORT_HTML.of_run(folder)
    if report.is_file():
        print(f"report {store.where(report)}")


def _print_promotion(folder: Path) -> None:
    """'promoted: ...' or 'not promoted: accuracy 0.8100 <= champion 0.8600 + 0.0000', when the run decided one."""
    from tasks.promote import outcome_line

    manifest = folder / MANIFEST_FILE
    promotion = read_json(manifest).get("promotion") if manifest.exists() else None
    if promotion:
        print(outcome_line(promotion))


def cmd_sweep(args: argparse.Namespace) -> int:
    from tasks.sweep import SWEEP_JSON, format_sweep_table, parse_grid, point_configs

    config = _load(args)
    _store(args, writing=True)  # before any cluster starts
    grid = parse_grid(args.grid)
    point_configs(config, grid)  # a bad key or value stops here, exit 2, before any cluster starts
    check_before_flow(config)  # the points share the input
    if args.dask_address and args.runner == "thread":
        raise UsageError("--dask-address needs --runner dask (or leave --runner out): threads run in this process.")
    if args.dask_address and args.workers:
        raise UsageError("--workers sizes a local cluster; with --dask-address the scheduler's own workers run the points.")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be at least 1, not {args.workers}.")
    import contextlib

    from flows.prefect_server import spawn_temporary_server

    spawn_temporary_server()  # boots while flows.sweep imports; prefect_api_for_workers or _prepare_prefect adopts it
    from flows.sweep import prefect_api_for_workers, rnnflow_sweep, sweep_folder, task_runner

    kind = "dask" if args.dask_address else (args.runner or "thread")
    runner = task_runner(kind, workers=args.workers or 2, dask_address=args.dask_address)
    store, sweep_id = _store(args), new_run_id()
    with contextlib.ExitStack() as stack:
        if kind == "dask":  # worker processes must report to this run's Prefect API
            try:
                stack.enter_context(prefect_api_for_workers(args.dask_address))
            except ValueError as error:
                raise UsageError(str(error)) from None
        _prepare_prefect()
        state = rnnflow_sweep.with_options(task_runner=runner)(
            grid=grid, config=config, artifacts_root=store.location, sweep_id=sweep_id, data_dir=args.data_dir, return_state=True
        )
    folder = sweep_folder(store.root, sweep_id)
    if (folder / SWEEP_JSON).exists():
        print(format_sweep_table(read_json(folder / SWEEP_JSON)))
    if not state.is_completed():
        manifest = read_json(folder / MANIFEST_FILE) if (folder / MANIFEST_FILE).exists() else {}
        print(f"rnnflow: {manifest.get('error') or state.message}", file=sys.stderr)
        print(store.where(folder))
        return EXIT_FAILED
    print(store.where(folder))
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from prefect.settings import PREFECT_API_URL

    from flows.prefect_server import api_problem, schedule_problem

    problem = schedule_problem(args.cron, args.interval)  # before anything reaches Prefect, whose errors are tracebacks
    if problem:
        raise UsageError(problem)
    config = _load(args)
    store = _store(args, writing=True)
    api_url = os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value()
    if not api_url:
        raise UsageError(
            "rnnflow serve needs a running Prefect server to hold the schedule: start one with 'make ui' "
            "and export PREFECT_API_URL=http://127.0.0.1:4200/api."
        )
    problem = api_problem(api_url)
    if problem:
        raise UsageError(problem)
    from flows.pipeline import rnnflow_pipeline

    schedule = {"cron": args.cron} if args.cron else {"interval": args.interval}
    rnnflow_pipeline.serve(
        name=args.name,
        parameters={"config": config.as_dict(), "artifacts_root": store.location},
        tags=[f"preset:{config.preset}", f"cell:{config.model.cell}"],
        description="rnnflow: train and report a recurrent text classifier on a schedule.",
        **schedule,
    )
    return EXIT_OK


def cmd_runs(args: argparse.Namespace) -> int:
    from tasks.store import model_of_config

    store = _store(args)
    runs = store.list_runs()
    if not runs:
        print(f"no runs under {store.where(store.runs_dir)}")
        return EXIT_OK
    width = max(10, *(len(run.get("shown_status") or run["status"]) for run in runs))
    models = {run["run_id"]: model_of_config(run.get("config")) for run in runs if run["status"] != "unreadable"}
    model_width = max(12, *map(len, models.values())) if models else 12
    print(f"{'run id':<28} {'status':<{width}} {'model':<{model_width}} {'preset':<18} {'cell':<11} {'test acc':>8}")
    for manifest in runs:
        if manifest["status"] == "unreadable":  # listed, with its path and problem, rather than hiding the others
            print(f"{manifest['run_id']:<28} {'unreadable':<{width}} {manifest['problem']}")
            continue
        accuracy = ((manifest["steps"].get("evaluate") or {}).get("summary") or {}).get("accuracy")
        config = manifest["config"]
        shown = "-" if isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)) else format(accuracy, ".4f")
        print(
            f"{manifest['run_id']:<28} {manifest['shown_status']:<{width}} {models[manifest['run_id']]:<{model_width}} "
            f"{str(config.get('preset') or '?'):<18} {str(config['model'].get('cell') or '?'):<11} {shown:>8}"
        )
    return EXIT_OK


def cmd_presets(args: argparse.Namespace) -> int:
    for name in preset_names():
        print(f"{name:<18} {preset_description(name)}")
    return EXIT_OK


def cmd_config(args: argparse.Namespace) -> int:
    if args.recorded:
        print(json.dumps(_recorded_config(_store(args), args.recorded, args.model), indent=2))
        return EXIT_OK
    config = _load(args)
    shown = config.as_dict()
    shown["promote"]["model"] = config.model_name  # the derived default, so a user sees which champion the run competes for
    print(json.dumps(shown, indent=2))
    return EXIT_OK


def _recorded_config(store: ArtifactStore, run: str, model: str | None) -> dict:
    """What a recorded run's outputs were made with, step by step: each step's configuration and the run that made it."""
    from tasks.provenance import made_with
    from tasks.store import model_of_config

    def recorded(run_id: str) -> dict | None:
        try:
            return read_json(store.resolve_run(run_id) / MANIFEST_FILE)
        except (RunError, OSError, ValueError):
            return None

    manifest = read_json(_resolve(store, run, model) / MANIFEST_FILE)
    steps = {name: {"status": entry.get("status"), **made_with(manifest, name, recorded)} for name, entry in (manifest.get("steps") or {}).items()}
    return {"run_id": manifest["run_id"], "model": model_of_config(manifest.get("config")), "status": manifest.get("status"), "steps": steps}


def cmd_predict(args: argparse.Namespace) -> int:
    from tasks.predict import (
        PredictionInputError, check_output_path, format_predictions, load_predictor, predict_texts, read_rows, write_predictions,
    )

    if bool(args.texts) == bool(args.input):
        raise UsageError("Give the texts to label or --input FILE (one of the two): e.g. rnnflow predict \"a moving film\".")
    try:
        output = check_output_path(Path(args.output)) if args.output else None
        folder = _resolve(_store(args), args.run, args.model)
        rows, texts = read_rows(Path(args.input), args.text_column) if args.input else (None, list(args.texts))
        predictor = load_predictor(folder)
    except (PredictionInputError, RunError, FileNotFoundError) as error:
        raise UsageError(str(error)) from None
    predictions = predict_texts(predictor, texts, rows=rows)
    if output is None:
        print(f"run {folder.name}")
        print(format_predictions(predictions))
        return EXIT_OK
    try:
        write_predictions(predictions, output)
    except OSError as error:  # checked before predicting, but the folder can change meanwhile
        raise UsageError(f"Could not write {output} ({error.strerror or error}): choose another path for --output.") from None
    tally = predictions["label"].value_counts()  # in the run's class order, not the names' alphabetical one
    counts = ", ".join(f"{label} {int(tally[label])}" for label in predictor.labels if label in tally)
    empty = predictions.loc[predictions["empty"], "row"].tolist()
    flagged = f"; {len(empty)} with no words (row {', '.join(map(str, empty[:5]))}{', ...' if len(empty) > 5 else ''}), marked in column empty" if empty else ""
    print(f"{len(predictions)} predictions from run {folder.name} ({counts}){flagged}")
    print(output)
    return EXIT_OK


def cmd_generate(args: argparse.Namespace) -> int:
    from tasks.generate import GenerationError, generate, load_generator

    if args.length < 0:
        raise UsageError(f"--length must be 0 or more characters, not {args.length}.")
    if not math.isfinite(args.temperature) or args.temperature < 0:  # argparse's float() takes "nan" and "inf"
        raise UsageError(f"--temperature must be 0 (always the likeliest character) or more, not {args.temperature:g}.")
    try:
        generator = load_generator(_resolve(_store(args), args.run, args.model))
        text = generate(generator, args.prompt, length=args.length, temperature=args.temperature)
    except (GenerationError, RunError, FileNotFoundError) as error:
        raise UsageError(str(error)) from None
    print(text)
    return EXIT_OK


def cmd_champion(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        champions = store.champions.read_all()
    except ChampionError as error:
        print(f"rnnflow: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    if args.model is not None:
        champions = {name: pointer for name, pointer in champions.items() if name == args.model}
    if not champions:
        which = f" of model {args.model!r}" if args.model else ""
        print(f"no champion{which} under {store.location}: the first completed run becomes champion, or use 'rnnflow promote RUN_ID'")
        return EXIT_FAILED
    code = EXIT_OK
    for number, (name, pointer) in enumerate(champions.items()):
        if number:
            print()
        code = max(code, _print_champion(store, name, pointer))
    return code


def _print_champion(store: ArtifactStore, model: str, pointer: dict) -> int:
    try:  # never name a folder that is not there (or not under this root)
        folder = store.resolve_run("champion", model)
    except (RunError, FileNotFoundError) as error:
        print(f"rnnflow: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(f"model        {model}")
    print(f"champion     {pointer['run_id']}")
    print(f"promoted at  {pointer.get('promoted_at')} by {pointer.get('decided_by')}")
    print(f"reason       {pointer.get('reason')}")
    metrics_file = RunFiles.METRICS.of_run(folder)
    if metrics_file.is_file():
        test = read_json(metrics_file).get("test") or {}
        shown = "  ".join(f"{name} {value:.4f}" if isinstance(value, float) else f"{name} {value}" for name, value in test.items())
        print(f"test         {shown}")
    else:
        print(f"test         no metrics: {metrics_file} is missing")
    print(store.where(folder))
    return EXIT_OK


def cmd_promote(args: argparse.Namespace) -> int:
    from tasks.promote import PromotionError, outcome_line, promote_by_hand

    store = _store(args, writing=True)  # champion.json and champion.lock are written
    run = _resolve(store, args.run, args.model).name
    try:
        decision = promote_by_hand(store, run, force=args.force, reason=args.reason)
    except ChampionError as error:  # champion.json is not a pointer: the champion's trouble, not the argument's
        print(f"rnnflow: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except RunError as error:  # the run to promote is damaged: the same exit as for predict
        raise UsageError(str(error)) from None
    except PromotionError as error:
        print(f"rnnflow: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(outcome_line(decision))
    if not decision["promoted"]:
        print("rnnflow: the champion is unchanged; add --force to promote this run anyway", file=sys.stderr)
        return EXIT_FAILED
    tracked = store.open_run(store.run_dir(run)).manifest.get("tracking")
    if tracked:  # the run was logged to MLflow: its registered version becomes the champion there too
        from tasks.tracking import set_champion_alias

        set_champion_alias(tracked)
    print(store.resolve_run("champion", decision["model"]))
    return EXIT_OK


def cmd_serve_model(args: argparse.Namespace) -> int:
    from flows.serve_model import cmd_serve_model as serve_model  # FastAPI and uvicorn only for this command

    return serve_model(args)


COMMANDS = {
    "run": cmd_run, "step": cmd_step, "serve": cmd_serve, "runs": cmd_runs, "presets": cmd_presets, "config": cmd_config,
    "predict": cmd_predict, "generate": cmd_generate, "sweep": cmd_sweep, "champion": cmd_champion, "promote": cmd_promote,
    "serve-model": cmd_serve_model,
    "score": lambda args: cmd_score(args),
}


def cmd_score(args: argparse.Namespace) -> int:
    from flows.score import cmd_score as score  # the scoring flow's module, loaded only for this command

    return score(args)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """`kill PID` (a scheduler's timeout, a stopped container) ends rnnflow through Python's own exit, as Ctrl-C does.

    Prefect turns SIGTERM into a failed flow run and then sends it again to the handler it found; with
    Python's default one the process died on the spot, skipping the atexit hook that stops the temporary
    Prefect server it had started, which was left running with no parent.
    """
    print("rnnflow: terminated", file=sys.stderr)
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    previous = None
    if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
        previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        args = build_parser().parse_args(argv)
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # here, so a closed pipe is caught below rather than at interpreter exit
        return code
    except (UsageError, ConfigError, ArtifactsRootError) as error:  # a root that fails later (a listing, a download) too
        print(f"rnnflow: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except FileNotFoundError as error:
        print(f"rnnflow: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("rnnflow: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `rnnflow runs | head`: the reader left; stop quietly, as Python's docs advise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # what a shell reports for SIGPIPE
    except Exception as error:  # last, so the clauses above keep their exceptions
        server = sys.modules.get("flows.prefect_server")  # loaded by the commands that start Prefect's server
        if server is None or not isinstance(error, server.PrefectServerError):
            raise
        print(f"rnnflow: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
