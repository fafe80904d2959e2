"""The scoring flow: label a table with a model's champion and check it for drift against the champion's data. Wiring only.

    open the input -> score_label (cached) -> score_drift (cached) -> scores/<id>/ (manifest, summary, artifacts)

The steps are tasks/score.py's, declared in tasks/steps.py's SCORE_STEP_TABLE, called, cached and retried as the
training steps are (flows/run_steps.py: call_step). The folder is assembled under a temporary name
and renamed into place whole.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.run_steps import call_step
from tasks.config import RunConfig, load_config
from tasks.errors import RnnflowError
from tasks.logs import one_line
from tasks.notify import notify_failure
from tasks.provenance import rerunnable_steps
from tasks.reference import read_reference
from tasks.score import ScoringInput, champion_model_sha256, open_scoring_input, score_drift_task, score_label_task
from tasks.score_summary import publish_artifacts, write_summary
from tasks.store import ArtifactStore, RunError, _hash_tree, _link_tree, new_run_id, read_json, verify_run_files, write_json
from tasks.store.record import utc_now

SCORES_DIR = "scores"
# The alert (tasks/notify.py: notify.webhook, notify.block): flows call each with (flow, flow_run, state) when a run fails or crashes.
ON_FAILURE_HOOKS: list[Any] = [notify_failure]


class DriftFailed(RnnflowError, RuntimeError):
    """score.on_drift is fail and a drift figure is out of bounds: the message is the figure's one sentence."""

    def __init__(self, message: str, folder: str | None = None):
        super().__init__(message)
        self.folder = folder

    def __reduce__(self):  # Prefect pickles a flow's exception: keep both arguments
        return (DriftFailed, (str(self), self.folder))


def resolve_champion(store: ArtifactStore, model: str | None) -> dict[str, Any]:
    """The champion to score with: its model, run id, folder and model sha256, its files checked against its manifest."""
    folder = store.resolve_run("champion", model)
    manifest = read_json(folder / "manifest.json")
    verify_run_files(folder, ["train/model.keras", "encode/vocab.json", "encode/labels.json"], rerunnable=rerunnable_steps())
    return {"model": store.champions.choose(model)["model"], "run_id": folder.name, "folder": str(folder),
            "model_sha256": champion_model_sha256(folder), "config": manifest.get("config") or {}}


def _run_step(store: ArtifactStore, config: RunConfig, step_task: Any, **inputs: Any) -> tuple[Any, bool]:
    """(the step's output, whether it was cached); its error raised as it is."""
    state, _ = call_step(store, config, step_task, **inputs)
    if not state.is_completed():
        error = state.result(raise_on_failure=False)
        raise error if isinstance(error, BaseException) else RuntimeError(str(error))
    return state.result(), state.name == "Cached"


@flow(name="rnnflow-score", on_failure=ON_FAILURE_HOOKS, on_crashed=ON_FAILURE_HOOKS)
def rnnflow_score(input: str, artifacts_root: str | None = None, model: str | None = None, config: RunConfig | None = None,
                  text_column: str | None = None, score_id: str | None = None) -> str:
    """Label every row of INPUT with MODEL's champion and compare it with the champion's reference; returns scores/<id>/."""
    logger = get_run_logger()
    config = config or load_config()
    score = config.score.model_copy(update={"text_column": text_column}) if text_column else config.score
    section = score.model_dump(mode="json")  # as the manifest records it
    store = ArtifactStore(artifacts_root)
    champion = resolve_champion(store, model)
    source = open_scoring_input(input, score.text_column)
    reference = read_reference(Path(champion["folder"]))
    warning = None
    if reference is None:
        warning = (f"champion {champion['run_id']} has no evaluate/reference.json (trained before references): drift is measured but "
                   "not compared; retrain and promote a run to check it")
        logger.warning(warning)
    key_champion = {k: champion[k] for k in ("run_id", "folder", "model_sha256")}
    label, label_cached = _run_step(store, config, score_label_task, score=score,
                                    source={**source.as_key(), "location": source.location, "path": str(source.path)},
                                    champion=key_champion)
    labels = label.summary["labels"]
    drift, drift_cached = _run_step(store, config, score_drift_task, score=score, score_label=label, reference=reference, labels=labels)
    manifest = _manifest(score_id or new_run_id(), source, champion, section, label, drift, warning)
    manifest["steps"] = {"score_label": {"key": label.key, "status": "cached" if label_cached else "completed"},
                         "score_drift": {"key": drift.key, "status": "cached" if drift_cached else "completed"}}
    folder = _assemble(store, manifest, [label, drift])
    publish_artifacts(manifest)
    failed = [row["figure"] for row in manifest["drift"]["figures"] if not row["passed"]]
    if failed:
        logger.warning("%d drift figure(s) out of bounds: %s (%s)", len(failed), ", ".join(failed), folder / "summary.md")
    if manifest["drift"]["failed"] and score.on_drift == "fail":
        raise DriftFailed(f"{manifest['drift']['failed'][0][:-1]} (score.on_drift is fail; the scores are in {folder}).", str(folder))
    return str(folder)


def _manifest(score_id: str, source: ScoringInput, champion: dict, section: dict, label: Any, drift: Any, warning: str | None) -> dict[str, Any]:
    return {
        # A drift under on_drift=fail: the scores were written (the summary shows why), and the run failed by its gate.
        "score_id": score_id, "created_at": utc_now(),
        "status": "failed" if drift.summary["failed"] and section["on_drift"] == "fail" else "completed",
        "input": {"location": source.location, **source.as_key()},
        "champion": {k: champion[k] for k in ("model", "run_id", "model_sha256")} | {"reference": warning is None},
        "config": {"score": section}, "on_drift": section["on_drift"],
        "rows": label.summary["rows"], "empty": label.summary["empty"], "label_counts": label.summary["label_counts"],
        "drift": {**{k: drift.summary[k] for k in ("reference", "passed", "failed")}, "warning": warning,
                  "figures": drift.summary["figures"]},
    }


def _assemble(store: ArtifactStore, manifest: dict[str, Any], outputs: list[Any]) -> Path:
    """scores/<id>/: the steps' files linked in, manifest.json (with every file's sha256) and the summary, then renamed into place."""
    final = store.root / SCORES_DIR / manifest["score_id"]
    partial = final.with_name(f".{final.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for output in outputs:
        _link_tree(output.path, partial)
    write_summary(partial, manifest)
    manifest["files"] = _hash_tree(partial)
    write_json(partial / "manifest.json", manifest)
    os.replace(partial, final)
    store.push(final)  # a bucket root: the scores folder goes up beside runs/ (a local root: nothing to do)
    return final


# --------------------------------------------------------------------------- the command


def cmd_score(args: argparse.Namespace) -> int:
    """rnnflow score: print the drift figures and the scores folder last; exit 2 for bad input or drift under on_drift fail."""
    from flows.cli_common import EXIT_OK, EXIT_USAGE, checked_store, prepare_prefect
    from flows.cli_parser import UsageError

    config = load_config(args.preset, args.config, args.overrides)
    store = checked_store(args, writing=True)
    try:
        champion = resolve_champion(store, args.model)  # before Prefect starts: no champion is one sentence
        open_scoring_input(args.input, args.text_column or config.score.text_column)
    except (RunError, ValueError, FileNotFoundError) as error:
        raise UsageError(str(error)) from None
    prepare_prefect()
    state = rnnflow_score(input=args.input, artifacts_root=store.location, model=champion["model"], config=config,
                          text_column=args.text_column, return_state=True)
    if not state.is_completed():
        error = state.result(raise_on_failure=False)
        if isinstance(error, DriftFailed) and error.folder:
            _print_figures(read_json(Path(error.folder) / "manifest.json"))
            print(error.folder)
        print(f"rnnflow: error: {one_line(error)}", file=sys.stderr)
        return EXIT_USAGE if isinstance(error, (RnnflowError, RunError)) else 1
    folder = Path(state.result())
    _print_figures(read_json(folder / "manifest.json"))
    print(store.where(folder))
    return EXIT_OK


def _print_figures(manifest: dict[str, Any]) -> None:
    from tasks.score_summary import drift_table

    print(f"scored {manifest['rows']:,} rows with champion {manifest['champion']['run_id']} ({manifest['champion']['model']}): "
          + ", ".join(f"{label} {n:,}" for label, n in manifest["label_counts"].items()))
    if manifest["drift"]["warning"]:
        print(f"warning: {manifest['drift']['warning']}")
    for row in drift_table(manifest):
        print(f"  {row['figure']:<24} {row['value']:>8}  reference {row['reference']:>8}  bound {row['bound']:<16} {row['outcome']}")
    for message in manifest["drift"]["failed"]:
        print(f"drift: {message}")
