"""Promote: make a run's model its model's champion only when it beats the current one (TFX's Evaluator "blessing").

A run competes for its model (promote.model, or derived from the data keys): <root>/champion.json keeps one
champion per model (tasks/store/champions.py), and a run is compared with its own model's champion only.
It is promoted when validation_verdict lets it (no failed error, no failed warning of promote.blocking_warnings),
it reaches each of promote.floors, it predicts more than one class on its test split, with promote.beat_baseline it
beats the run's linear baseline (tasks/baseline.py) on promote.metric (tasks/promotion_checks.py holds these
blockers), and it beats the champion on promote.metric by more than promote.min_delta:
new > champion + min_delta (for loss, where lower is better: new < champion - min_delta).
Both are scored on the same test texts: when the champion was tested on other texts (its
ingest test.parquet differs), its model is scored again on this run's test texts, through
its own cleaning and vocabulary (tasks/predict.py) and the metrics of tasks/evaluate.py.

promote.metric names a key of metrics.json's "test" block, so with more than two classes it
means what tasks.evaluate.score computes there: precision, recall and f1 are macro averages
(each class counts the same, however many reviews it has), roc_auc is one-vs-rest macro (None
when a class is missing from the test split, which blocks the promotion as n/a), and accuracy
and loss are over all reviews as for two classes. A champion tested on other texts and
trained on other classes cannot be scored on this run's (rescore_run refuses): promote by hand.

Two runs finishing together must not both win against a stale champion: the record is
read, compared and replaced inside an exclusive lock on <root>/champion.lock (fcntl.flock),
and written by temporary file + os.replace, so readers see the old record or the new one.

Never cached: the outcome depends on the champion at the time, not only on the inputs. The
step writes promote/decision.json and promote/decision.html (tasks/decision_page.py) into the
run folder itself; the report, cached and made before the decision, links to the page and the
page back to the report. The manifest's `promotion` adds the run id and the time.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.config import PromoteConfig
from tasks.errors import RnnflowError
from tasks.provenance import rerunnable_steps
from tasks.render import as_number
from tasks.store import (
    MANIFEST_FILE, ArtifactStore, ManifestError, RunError, RunFiles, RunRecord, StepOutput, fingerprint, model_of_config,
    read_json, sha256_file, utc_now, verify_run_files, write_json, write_text,
)
from tasks.champion_data import decision_data
from tasks.decision_page import current_flow_run_url, render_decision_page
from tasks.decision_rows import NOT_PROMOTED, PROMOTED, SKIPPED, TITLES, promotion_markdown, promotion_rows  # noqa: F401  (tests, report)
# Re-exported: the report (tasks/report_sections.py) and the tests read the verdict from here.
from tasks.promotion_checks import (  # noqa: F401
    LOWER_IS_BETTER, baseline_comparison, baseline_rows, check_floors, check_label, failed_validation_checks, one_class_blocker,
    predicted_counts, validation_verdict,
)

DECISION_FILE = RunFiles.DECISION.name
DECISION_PAGE = "decision.html"  # the decision for a reader, linked both ways with report/report.html (the report is cached)
ARTIFACT_KEY = "rnnflow-promotion"
STEP_DECIDER = "rnnflow promote step"



class PromotionError(RnnflowError):
    """A promotion that cannot be decided: the message is one sentence that says what to do."""


# --------------------------------------------------------------------------- what is compared


@dataclass(frozen=True)
class Candidate:
    """What a promotion needs to know of the run that asks for it."""

    run_id: str
    test: dict[str, Any]  # metrics.json "test"
    labels: list[str] = field(default_factory=list)  # class names, by index
    failed_checks: list[dict[str, Any]] = field(default_factory=list)  # {"check", "split", "severity"} of each failed check
    n_checks: int = 0
    test_fingerprint: str | None = None  # sha256 of ingest/test.parquet: which texts it was tested on
    test_texts: Path | None = None  # that file, to score a champion tested on other texts
    task: str = "classify"  # metrics.json "task": a next_token model's accuracy is per character, not per text
    model: str = "default"  # the model it competes for (RunConfig.model_name): compared only with that model's champion
    predicted: dict[str, int] | None = None  # test reviews predicted per class (tasks.promotion_checks.predicted_counts)
    baseline: dict[str, Any] | None = None  # metrics.json's `baseline`: the linear baseline's test figures (promote.beat_baseline)


@dataclass(frozen=True)
class ChampionScore:
    """The champion's value of the metric on the candidate's test texts."""

    run_id: str
    value: float | None
    own_value: float | None = None  # on its own test split, as recorded at its evaluate step
    rescored: bool = False  # scored again on the candidate's test texts
    missing: bool = False  # its run folder is gone
    note: str = ""  # why value is None, when it is


def promote_settings(settings: dict[str, Any] | None) -> dict[str, Any]:
    """promote.* as a full dict: what is given over PromoteConfig's defaults (the one place they are written)."""
    return PromoteConfig.model_validate(settings or {}).model_dump(mode="json")


def candidate_from_files(run_id: str, model: str, ingest_dir: Path, validate_dir: Path, encode_dir: Path, evaluate_dir: Path) -> Candidate:
    """A candidate for model's champion from its steps' folders (cache entries in the flow, run-folder steps by hand)."""
    validation = read_json(RunFiles.VALIDATION.of_step(validate_dir))
    test_texts = RunFiles.TEST_TEXTS.of_step(ingest_dir)
    metrics = read_json(RunFiles.METRICS.of_step(evaluate_dir))
    return Candidate(
        run_id=run_id,
        model=model,
        task=metrics.get("task", "classify"),
        test=metrics.get("test") or {},
        predicted=predicted_counts(metrics),
        baseline=metrics.get("baseline"),
        labels=[str(label) for label in read_json(RunFiles.LABELS.of_step(encode_dir))],
        failed_checks=failed_validation_checks(validation),
        n_checks=len(validation.get("checks") or []),
        test_fingerprint=sha256_file(test_texts) if test_texts.is_file() else None,
        test_texts=test_texts if test_texts.is_file() else None,
    )


def candidate_from_run(folder: Path) -> Candidate:
    """A finished run as a candidate for a promotion by hand; one sentence when it lacks a needed file."""
    folder = Path(folder)
    needed = [RunFiles.VALIDATION, RunFiles.LABELS, RunFiles.METRICS, RunFiles.MODEL]
    missing = [file.path for file in needed if not file.of_run(folder).is_file()]
    if missing:
        raise PromotionError(f"Run {folder.name} has no {missing[0]}: only a run that trained and evaluated a model can be promoted.")
    # A damaged model must not become the champion every `predict --run champion` then fails on.
    verify_run_files(folder, [file.path for file in (*needed, RunFiles.TEST_TEXTS)], rerunnable=rerunnable_steps())
    step_dirs = [folder / file.step for file in (RunFiles.TEST_TEXTS, RunFiles.VALIDATION, RunFiles.LABELS, RunFiles.METRICS)]
    return candidate_from_files(folder.name, model_of_config(read_json(folder / MANIFEST_FILE).get("config")), *step_dirs)


# --------------------------------------------------------------------------- the decision (pure)


def _comparison(metric: str, new: float, champion: float, min_delta: float) -> tuple[bool, str]:
    if metric in LOWER_IS_BETTER:
        wins = new < champion - min_delta
        return wins, f"{metric} {new:.4f} {'<' if wins else '>='} champion {champion:.4f} - {min_delta:.4f}"
    wins = new > champion + min_delta
    return wins, f"{metric} {new:.4f} {'>' if wins else '<='} champion {champion:.4f} + {min_delta:.4f}"


def _blockers_before_the_champion(decision: dict[str, Any], candidate: Candidate) -> list[str]:
    """What keeps the run from promotion whatever the champion scores: failed validation checks, a model that
    predicts one class only, unmet floors (each one sentence, in the order the reason gives them)."""
    blockers: list[str] = []
    stopping = decision["validation"]["errors"] + decision["validation"]["blocking"]
    if stopping:
        shown = ", ".join(stopping[:3]) + (f" and {len(stopping) - 3} more" if len(stopping) > 3 else "")
        blockers.append(f"validation check{'s' if len(stopping) > 1 else ''} failed: {shown}")
    one_class = one_class_blocker(candidate.predicted)
    if one_class:
        blockers.append(one_class)
    blockers += [decision["baseline"]["blocker"]] if (decision.get("baseline") or {}).get("blocker") else []
    for floor in decision["floors"]:
        if not floor["passed"]:
            shown = "n/a" if floor["value"] is None else f"{floor['value']:.4f}"
            blockers.append(f"{floor['metric']} {shown} is not {floor['kind']} the floor {floor['bound']:.4f}")
    return blockers


def decide(candidate: Candidate, champion: ChampionScore | None, settings: dict[str, Any], *, force: bool = False) -> dict[str, Any]:
    """The promotion decision as data: outcome, the numbers behind it, and one sentence of reason.

    Pure: no files, no lock. Promoted when validation passed, the model predicts more than one class,
    every floor holds and the metric beats the champion's by more than min_delta (or there is no champion); force
    promotes whatever the comparison says, and the decision says it was forced.
    """
    settings = promote_settings(settings)
    metric, min_delta = settings["metric"], float(settings["min_delta"])
    new = as_number(candidate.test.get(metric))
    floors = check_floors(candidate.test, settings.get("floors") or {})
    decision: dict[str, Any] = {
        "outcome": None,
        "promoted": False,
        "metric": metric,
        "higher_is_better": metric not in LOWER_IS_BETTER,
        "new": new,
        "champion": None,
        "delta": None,
        "min_delta": min_delta,
        "floors": floors,
        "validation": validation_verdict(candidate.failed_checks, candidate.n_checks, settings["blocking_warnings"]),
        "baseline": baseline_comparison(candidate.baseline, metric, new, settings["beat_baseline"]),
        "reason": "",
        "decided_by": STEP_DECIDER,
        "forced": False,
    }
    if not settings.get("enabled", True) and not force:
        decision.update(outcome=SKIPPED, reason="promote.enabled is false: the champion was not consulted")
        return decision

    blockers = _blockers_before_the_champion(decision, candidate)
    if new is None:
        blockers.append(f"{metric} is n/a for this run")
        comparison = ""
    elif champion is None or champion.missing:
        comparison = "first run: there is no champion yet"
        if champion is not None:
            decision["champion"] = {"run_id": champion.run_id, "value": None, "missing": True}
            comparison = f"the champion {champion.run_id}'s run folder is gone"
    else:
        decision["champion"] = {
            "run_id": champion.run_id, "value": champion.value, "own_value": champion.own_value, "rescored": champion.rescored,
        }
        if champion.value is None:
            comparison = ""
            blockers.append(champion.note or f"the champion {champion.run_id}'s {metric} is n/a")
        else:
            decision["delta"] = new - champion.value
            wins, comparison = _comparison(metric, new, champion.value, min_delta)
            if champion.rescored:
                comparison += " (champion re-scored on this run's test split)"
            if not wins:
                blockers.append(comparison)
                comparison = ""

    if champion is not None and not champion.missing and champion.run_id == candidate.run_id:
        # A retried flow run, or a hand promotion of the champion itself: it stays.
        decision.update(outcome=PROMOTED, promoted=True, reason="already the champion", champion=None, delta=None)
        return decision
    if blockers and force:
        decision.update(outcome=PROMOTED, promoted=True, forced=True, reason="forced over: " + "; ".join(blockers))
    elif blockers:
        decision.update(outcome=NOT_PROMOTED, reason="; ".join(blockers))
    else:
        decision.update(outcome=PROMOTED, promoted=True, reason=comparison or "every check passed")
    return decision


def outcome_line(decision: dict[str, Any]) -> str:
    """The line the CLI prints before the run folder: 'not promoted: accuracy 0.8100 <= champion 0.8600 + 0.0000'."""
    words = {PROMOTED: "promoted", NOT_PROMOTED: "not promoted", SKIPPED: "promotion skipped"}.get(decision.get("outcome"), "promotion")
    return f"{words}: {decision.get('reason', '')}"


# --------------------------------------------------------------------------- the champion


def _recorded_test(folder: Path) -> dict[str, Any]:
    metrics = RunFiles.METRICS.of_run(folder)
    return (read_json(metrics).get("test") or {}) if metrics.is_file() else {}


def _test_fingerprint(manifest: dict[str, Any]) -> str | None:
    steps = manifest.get("steps") or {}
    return ((steps.get(RunFiles.TEST_TEXTS.step) or {}).get("outputs") or {}).get(RunFiles.TEST_TEXTS.name)


def score_champion(store: ArtifactStore, run_id: str, candidate: Candidate, metric: str) -> ChampionScore:
    """The champion's metric on the candidate's test texts: its recorded value when it was tested on the
    same texts (ingest's test.parquet has the same sha256), else its model scored again on them."""
    try:
        folder = store.fetch_run_folder(run_id)  # in the mirror, for a URL root
        if not (folder / MANIFEST_FILE).is_file():
            return ChampionScore(run_id=run_id, value=None, missing=True)
        store.load_manifest(folder)  # damaged is not gone: the champion stays, and the sentence says how to repair it
        manifest = read_json(folder / MANIFEST_FILE)
    except ManifestError as error:
        return ChampionScore(run_id=run_id, value=None, note=f"the champion cannot be compared: {error}")
    own = as_number(_recorded_test(folder).get(metric))
    metrics_file = RunFiles.METRICS.of_run(folder)
    task = read_json(metrics_file).get("task", "classify") if metrics_file.is_file() else "classify"
    if task != candidate.task:
        return ChampionScore(run_id=run_id, value=None, own_value=own,
                             note=f"the champion {run_id} is a {task} model and this run a {candidate.task} model, whose {metric} "
                                  f"does not compare: promote one by hand with 'rnnflow promote RUN_ID --force'")
    # Same texts, same labels: each model was judged on them through its own cleaning and
    # vocabulary, so the recorded numbers compare. (encode's X_test would differ for the same
    # texts under another vocabulary, and force a needless re-score.)
    if candidate.test_fingerprint is not None and _test_fingerprint(manifest) == candidate.test_fingerprint:
        return ChampionScore(run_id=run_id, value=own, own_value=own)
    if candidate.test_texts is None:
        return ChampionScore(run_id=run_id, value=None, own_value=own,
                             note=f"this run has no ingest/test.parquet to score the champion {run_id} on")
    if task == "next_token":  # re-scoring goes through tasks.predict, which labels texts
        return ChampionScore(run_id=run_id, value=None, own_value=own,
                             note=f"the next_token champion {run_id} was tested on other texts and is not re-scored on this run's: "
                                  f"compare them by hand and use 'rnnflow promote RUN_ID --force'")
    try:
        test = rescore_run(folder, candidate.test_texts, candidate.labels)
    except PromotionError as error:
        return ChampionScore(run_id=run_id, value=None, own_value=own, rescored=True, note=str(error))
    return ChampionScore(run_id=run_id, value=as_number(test.get(metric)), own_value=own, rescored=True,
                         note="" if test.get(metric) is not None else f"the champion {run_id}'s {metric} is n/a on this run's test split")


def rescore_run(folder: Path, test_texts: Path, labels: list[str]) -> dict[str, Any]:
    """A run's model scored on other test texts (text, label = index into labels): metrics.json's "test" block.

    The texts go through that run's own cleaning and vocabulary (tasks.predict), the numbers
    through tasks.evaluate.score, so they mean what the run's own metrics.json means.
    """
    import numpy as np
    import pandas as pd

    from tasks.evaluate import predict_probabilities, score
    from tasks.predict import encode_texts, load_predictor

    try:
        predictor = load_predictor(Path(folder))
    except (FileNotFoundError, RunError) as error:  # missing or damaged (sha256 mismatch) files
        raise PromotionError(f"the champion cannot be scored again ({error})") from None
    theirs = [str(label) for label in predictor.labels]
    if sorted(theirs) != sorted(labels):
        raise PromotionError(
            f"the champion {Path(folder).name}'s classes ({', '.join(theirs)}) are not this run's ({', '.join(labels)}): "
            f"compare them by hand and use 'rnnflow promote RUN_ID --force'"
        )
    frame = pd.read_parquet(test_texts, columns=["text", "label"])
    padded, sequences = encode_texts(predictor, frame["text"].astype(str).tolist())
    theirs_probabilities = predict_probabilities(predictor.model, padded)
    probabilities = np.zeros_like(theirs_probabilities)
    for index, label in enumerate(theirs):  # their class order into ours
        probabilities[:, labels.index(label)] = theirs_probabilities[:, index]
    lengths = np.array([len(ids) for ids in sequences], dtype=np.int64)
    return score(probabilities, frame["label"].to_numpy(dtype=np.int64), lengths, list(labels))["test"]


def promote(
    store: ArtifactStore,
    candidate: Candidate,
    settings: dict[str, Any],
    *,
    decided_by: str = STEP_DECIDER,
    force: bool = False,
    note: str | None = None,
    record: Callable[[dict[str, Any]], None] | None = None,
    scorer: Callable[[ArtifactStore, str, Candidate, str], ChampionScore] = score_champion,
) -> dict[str, Any]:
    """Decide against the champion and, when the candidate wins (or force), make it champion.

    Compare-and-swap: the champion is read, scored, compared and replaced inside the lock, so
    a run that finished at the same time is compared with the winner, never a stale pointer.
    record(decision) runs inside the lock too (a hand promotion notes itself in the manifest).
    """
    settings = promote_settings(settings)
    if not settings["enabled"] and not force:
        return {**decide(candidate, None, settings), "model": candidate.model}
    with store.champions.lock():
        current = store.champions.read(candidate.model)  # this model's champion: another model's is never compared
        champion = None if current is None else scorer(store, current["run_id"], candidate, settings["metric"])
        decision = decide(candidate, champion, settings, force=force)
        decision["decided_by"] = decided_by
        decision["model"] = candidate.model
        if note:
            decision["reason"] = f"{note} ({decision['reason']})"
        if decision["promoted"] and (current is None or current.get("run_id") != candidate.run_id):
            store.champions.write(candidate.model, {
                "run_id": candidate.run_id,
                "promoted_at": utc_now(),
                "metric": decision["metric"],
                "value": decision["new"],
                "labels": list(candidate.labels),
                "decided_by": decided_by,
                "reason": decision["reason"],
                "forced": decision["forced"],
                "previous_run_id": None if current is None else current.get("run_id"),
            })
        if record is not None:
            record(decision)
    return decision


# --------------------------------------------------------------------------- by hand


def hand_decider(force: bool) -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name (some containers)
        user = "unknown user"
    return f"{user} by hand" + (" (forced)" if force else "")


def promote_by_hand(store: ArtifactStore, run: str, *, force: bool = False, reason: str | None = None) -> dict[str, Any]:
    """`rnnflow promote RUN_ID`: the same comparison as the flow's (the run's own promote settings),
    or none with force; who decided goes into the run's manifest and champion.json."""
    folder = store.resolve_run(run)
    record = RunRecord.load(folder, store=store)
    if record.manifest.get("status") != "completed" and not force:
        raise PromotionError(f"Run {folder.name} is {record.manifest.get('status')}, not completed: promote it with --force if you mean it.")
    candidate = candidate_from_run(folder)
    settings = {**((record.manifest.get("config") or {}).get("promote") or {}), "enabled": True}

    def note_in_manifest(decision: dict[str, Any]) -> None:
        manifest = store.open_run(folder)  # fresh: the file (the bucket's), not what was read before the lock
        if manifest.manifest.get("promotion"):
            manifest.manifest.setdefault("promotion_history", []).append(manifest.manifest["promotion"])
        manifest.manifest["promotion"] = {**decision, "run_id": folder.name, "decided_at": utc_now()}
        manifest.save()

    return promote(store, candidate, settings, decided_by=hand_decider(force), force=force, note=reason, record=note_in_manifest)


# --------------------------------------------------------------------------- the step


def promote_run(root: str, run_folder: str, section: dict[str, Any], upstream: dict[str, StepOutput], model_name: str) -> StepOutput:
    """Decide for the run in run_folder, as a candidate for model_name's champion, and write promote/decision.json there (not into the cache)."""
    store = ArtifactStore(root)
    folder = Path(run_folder)
    candidate = candidate_from_files(
        folder.name, model_name, upstream["ingest"].path, upstream["validate"].path, upstream["encode"].path, upstream["evaluate"].path
    )
    decision = promote(store, candidate, section)
    decision["data_vs_champion"] = decision_data(store, folder, decision)  # shown, never deciding
    out_dir = folder / RunFiles.DECISION.step
    write_json(RunFiles.DECISION.of_step(out_dir), decision)
    write_text(out_dir / DECISION_PAGE, render_decision_page(
        decision, run_id=folder.name, model=model_name, prefect_run_url=current_flow_run_url(),
    ))
    summary = {"outcome": decision["outcome"], "promoted": decision["promoted"], "model": model_name, "metric": decision["metric"],
               "new": decision["new"], "champion": (decision["champion"] or {}).get("value"), "reason": decision["reason"],
               "decided_at": utc_now()}
    return StepOutput(step="promote", key=fingerprint(decision)[:24], dir=str(out_dir),
                      files={name: sha256_file(out_dir / name) for name in (DECISION_FILE, DECISION_PAGE)}, summary=summary)


def manifest_promotion(output: StepOutput, run_id: str) -> dict[str, Any]:
    """What the run's manifest keeps under `promotion`: the whole decision, this run's id and when."""
    return {**read_json(output.file(DECISION_FILE)), "run_id": run_id, "decided_at": output.summary.get("decided_at")}


def record_promotion(run: RunRecord, output: StepOutput) -> None:
    """After the promote step (flows/pipeline.py): the decision into the run's manifest."""
    run.manifest["promotion"] = manifest_promotion(output, run.run_id)
    run.save()


def publish_promotion_artifact(decision: dict[str, Any]) -> bool:
    """The decision on the Prefect UI's Artifacts page (key rnnflow-promotion), titled with the outcome."""
    from prefect import get_run_logger
    from prefect.artifacts import create_markdown_artifact
    from prefect.context import TaskRunContext

    if TaskRunContext.get() is None:
        return False
    try:
        create_markdown_artifact(markdown=promotion_markdown(decision), key=ARTIFACT_KEY, description=TITLES.get(decision.get("outcome"), "Promotion"))
    except Exception as error:  # noqa: BLE001 - decision.json and the manifest are the record; the artifact is a view
        get_run_logger().warning("Could not publish the promotion artifact to Prefect (%s).", error)
        return False
    return True


@task(name="promote", cache_policy=NO_CACHE)
def promote_task(promote: PromoteConfig, *, ingest: StepOutput, validate: StepOutput, encode: StepOutput, evaluate: StepOutput,
                 root: str, run_folder: str, model_name: str) -> StepOutput:
    """Never cached: it decides against the champion as it is now, into run_folder. model_name: tasks/steps.py's model_name."""
    upstream = {"ingest": ingest, "validate": validate, "encode": encode, "evaluate": evaluate}
    output = promote_run(root, run_folder, promote.model_dump(mode="json"), upstream, model_name)
    publish_promotion_artifact(read_json(output.file(DECISION_FILE)))
    return output
