"""Promote: make a run's model the champion only when it beats the current one (TFX's Evaluator "blessing").

The artifacts root holds one pointer, <root>/champion.json:

    {"run_id", "promoted_at", "metric", "value", "decided_by", "reason", "forced", "previous_run_id"}

A run is promoted when every validation check passed (warnings included), it reaches each of
promote.floors, and it beats the champion on promote.metric by more than promote.min_delta:
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

Two runs finishing together must not both win against a stale champion: the pointer is
read, compared and replaced inside an exclusive lock on <root>/champion.lock (fcntl.flock),
and written by temporary file + os.replace, so readers see the old pointer or the new one.

Never cached: the outcome depends on the champion at the time, not only on the inputs. The
step writes promote/decision.json into the run folder itself. decision.json holds no time
and not this run's id, so the report (cached, and fed the decision) is reused whenever the
decision repeats; the manifest's `promotion` adds both.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.store import (
    CHAMPION_FILE, ArtifactStore, BadRunIdError, RunError, RunRecord, StepOutput, fingerprint, read_json, sha256_file, verify_run_files,
    write_json,
)

CHAMPION_LOCK = "champion.lock"
DECISION_FILE = "decision.json"
ARTIFACT_KEY = "rnnflow-promotion"
STEP_DECIDER = "rnnflow promote step"
LOWER_IS_BETTER = frozenset({"loss"})
DEFAULT_SETTINGS = {"enabled": True, "metric": "accuracy", "min_delta": 0.0, "floors": {}}

PROMOTED, NOT_PROMOTED, SKIPPED = "promoted", "not_promoted", "skipped"
TITLES = {PROMOTED: "Promoted", NOT_PROMOTED: "Not promoted", SKIPPED: "Not promoted (promotion disabled)"}


class PromotionError(Exception):
    """A promotion that cannot be decided: the message is one sentence that says what to do."""


# --------------------------------------------------------------------------- what is compared


@dataclass(frozen=True)
class Candidate:
    """What a promotion needs to know of the run that asks for it."""

    run_id: str
    test: dict[str, Any]  # metrics.json "test"
    labels: list[str] = field(default_factory=list)  # class names, by index
    failed_checks: list[str] = field(default_factory=list)  # "duplicates on test (warning)"
    n_checks: int = 0
    test_fingerprint: str | None = None  # sha256 of ingest/test.parquet: which texts it was tested on
    test_texts: Path | None = None  # that file, to score a champion tested on other texts
    task: str = "classify"  # metrics.json "task": a next_token model's accuracy is per character, not per text


@dataclass(frozen=True)
class ChampionScore:
    """The champion's value of the metric on the candidate's test texts."""

    run_id: str
    value: float | None
    own_value: float | None = None  # on its own test split, as recorded at its evaluate step
    rescored: bool = False  # scored again on the candidate's test texts
    missing: bool = False  # its run folder is gone
    note: str = ""  # why value is None, when it is


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def failed_validation_checks(validation: dict[str, Any]) -> list[str]:
    """Every failed check of validation.json, any severity, as 'check on split (severity)'."""
    return [
        f"{check.get('check', '?')} on {check.get('split') or 'all splits'} ({check.get('severity', '?')})"
        for check in validation.get("checks") or []
        if not check.get("passed", False)
    ]


def candidate_from_files(run_id: str, ingest_dir: Path, validate_dir: Path, encode_dir: Path, evaluate_dir: Path) -> Candidate:
    """A candidate from its steps' folders (cache entries in the flow, run-folder steps by hand)."""
    validation = read_json(Path(validate_dir) / "validation.json")
    test_texts = Path(ingest_dir) / "test.parquet"
    metrics = read_json(Path(evaluate_dir) / "metrics.json")
    return Candidate(
        run_id=run_id,
        task=metrics.get("task", "classify"),
        test=metrics.get("test") or {},
        labels=[str(label) for label in read_json(Path(encode_dir) / "labels.json")],
        failed_checks=failed_validation_checks(validation),
        n_checks=len(validation.get("checks") or []),
        test_fingerprint=sha256_file(test_texts) if test_texts.is_file() else None,
        test_texts=test_texts if test_texts.is_file() else None,
    )


def candidate_from_run(folder: Path) -> Candidate:
    """A finished run as a candidate for a promotion by hand; one sentence when it lacks a needed file."""
    folder = Path(folder)
    needed = ["validate/validation.json", "encode/labels.json", "evaluate/metrics.json", "train/model.keras"]
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise PromotionError(f"Run {folder.name} has no {missing[0]}: only a run that trained and evaluated a model can be promoted.")
    # A damaged model must not become the champion every `predict --run champion` then fails on.
    verify_run_files(folder, [*needed, "ingest/test.parquet"])
    return candidate_from_files(folder.name, folder / "ingest", folder / "validate", folder / "encode", folder / "evaluate")


# --------------------------------------------------------------------------- the decision (pure)


def _comparison(metric: str, new: float, champion: float, min_delta: float) -> tuple[bool, str]:
    if metric in LOWER_IS_BETTER:
        wins = new < champion - min_delta
        return wins, f"{metric} {new:.4f} {'<' if wins else '>='} champion {champion:.4f} - {min_delta:.4f}"
    wins = new > champion + min_delta
    return wins, f"{metric} {new:.4f} {'>' if wins else '<='} champion {champion:.4f} + {min_delta:.4f}"


def check_floors(test: dict[str, Any], floors: dict[str, float]) -> list[dict[str, Any]]:
    """Each floor with the run's value and whether it holds (a ceiling for loss)."""
    rows = []
    for metric, bound in sorted(floors.items()):
        value = _number(test.get(metric))
        lower = metric in LOWER_IS_BETTER
        passed = value is not None and (value <= bound if lower else value >= bound)
        rows.append({"metric": metric, "bound": float(bound), "kind": "at most" if lower else "at least", "value": value, "passed": passed})
    return rows


def decide(candidate: Candidate, champion: ChampionScore | None, settings: dict[str, Any], *, force: bool = False) -> dict[str, Any]:
    """The promotion decision as data: outcome, the numbers behind it, and one sentence of reason.

    Pure: no files, no lock. Promoted when validation passed, every floor holds and the
    metric beats the champion's by more than min_delta (or there is no champion); force
    promotes whatever the comparison says, and the decision says it was forced.
    """
    settings = {**DEFAULT_SETTINGS, **(settings or {})}
    metric, min_delta = settings["metric"], float(settings["min_delta"])
    new = _number(candidate.test.get(metric))
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
        "validation": {"passed": not candidate.failed_checks, "n_checks": candidate.n_checks, "failed_checks": list(candidate.failed_checks)},
        "reason": "",
        "decided_by": STEP_DECIDER,
        "forced": False,
    }
    if not settings.get("enabled", True) and not force:
        decision.update(outcome=SKIPPED, reason="promote.enabled is false: the champion was not consulted")
        return decision

    blockers: list[str] = []
    if candidate.failed_checks:
        shown = ", ".join(candidate.failed_checks[:3]) + (f" and {len(candidate.failed_checks) - 3} more" if len(candidate.failed_checks) > 3 else "")
        blockers.append(f"validation check{'s' if len(candidate.failed_checks) > 1 else ''} failed: {shown}")
    for floor in floors:
        if not floor["passed"]:
            shown = "n/a" if floor["value"] is None else f"{floor['value']:.4f}"
            blockers.append(f"{floor['metric']} {shown} is not {floor['kind']} the floor {floor['bound']:.4f}")

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


def champion_path(store: ArtifactStore) -> Path:
    return store.root / CHAMPION_FILE


def read_champion(store: ArtifactStore) -> dict[str, Any] | None:
    """The champion pointer, or None when no run was promoted yet."""
    path = champion_path(store)
    try:
        pointer = read_json(path)
    except FileNotFoundError:
        return None
    except ValueError:
        raise PromotionError(f"{path} is not valid JSON: delete it and promote a run with 'rnnflow promote RUN_ID'.") from None
    if not isinstance(pointer, dict) or not isinstance(pointer.get("run_id"), str):
        raise PromotionError(f"{path} names no run_id: delete it and promote a run with 'rnnflow promote RUN_ID'.")
    try:  # a path here would send the comparison (and `champion`) to another root's run
        store.check_run_id(pointer["run_id"])
    except BadRunIdError:
        raise PromotionError(f"{path} names {pointer['run_id']!r}, not a run id under {store.runs_dir}: delete it and promote a run with 'rnnflow promote RUN_ID'.") from None
    return pointer


@contextlib.contextmanager
def champion_lock(store: ArtifactStore) -> Iterator[None]:
    """An exclusive lock on <root>/champion.lock, across threads and processes; released when the holder dies."""
    path = store.root / CHAMPION_LOCK
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")  # one open file description per holder: flock then excludes threads too
    except OSError as error:
        raise PromotionError(
            f"Artifacts root {store.root} is not writable ({path}: {error.strerror or error}): choose another with --artifacts or fix its permissions."
        ) from None
    with handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _recorded_test(folder: Path) -> dict[str, Any]:
    return (read_json(folder / "evaluate" / "metrics.json").get("test") or {}) if (folder / "evaluate" / "metrics.json").is_file() else {}


def _test_fingerprint(manifest: dict[str, Any]) -> str | None:
    steps = manifest.get("steps") or {}
    return ((steps.get("ingest") or {}).get("outputs") or {}).get("test.parquet")


def score_champion(store: ArtifactStore, run_id: str, candidate: Candidate, metric: str) -> ChampionScore:
    """The champion's metric on the candidate's test texts: its recorded value when it was tested on the
    same texts (ingest's test.parquet has the same sha256), else its model scored again on them."""
    folder = store.run_dir(run_id)
    try:
        manifest = read_json(folder / "manifest.json")
    except (OSError, ValueError):
        return ChampionScore(run_id=run_id, value=None, missing=True)
    own = _number(_recorded_test(folder).get(metric))
    metrics_file = folder / "evaluate" / "metrics.json"
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
    return ChampionScore(run_id=run_id, value=_number(test.get(metric)), own_value=own, rescored=True,
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
    settings = {**DEFAULT_SETTINGS, **(settings or {})}
    if not settings.get("enabled", True) and not force:
        return decide(candidate, None, settings)
    with champion_lock(store):
        current = read_champion(store)
        champion = None if current is None else scorer(store, current["run_id"], candidate, settings["metric"])
        decision = decide(candidate, champion, settings, force=force)
        decision["decided_by"] = decided_by
        if note:
            decision["reason"] = f"{note} ({decision['reason']})"
        if decision["promoted"] and (current is None or current.get("run_id") != candidate.run_id):
            write_json(champion_path(store), {
                "run_id": candidate.run_id,
                "promoted_at": _now(),
                "metric": decision["metric"],
                "value": decision["new"],
                "decided_by": decided_by,
                "reason": decision["reason"],
                "forced": decision["forced"],
                "previous_run_id": None if current is None else current.get("run_id"),
            })
        if record is not None:
            record(decision)
    return decision


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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
    record = RunRecord.load(folder)
    if record.manifest.get("status") != "completed" and not force:
        raise PromotionError(f"Run {folder.name} is {record.manifest.get('status')}, not completed: promote it with --force if you mean it.")
    candidate = candidate_from_run(folder)
    settings = {**DEFAULT_SETTINGS, **((record.manifest.get("config") or {}).get("promote") or {}), "enabled": True}

    def note_in_manifest(decision: dict[str, Any]) -> None:
        manifest = RunRecord.load(folder)  # fresh: the file, not what was read before the lock
        if manifest.manifest.get("promotion"):
            manifest.manifest.setdefault("promotion_history", []).append(manifest.manifest["promotion"])
        manifest.manifest["promotion"] = {**decision, "run_id": folder.name, "decided_at": _now()}
        manifest.save()

    return promote(store, candidate, settings, decided_by=hand_decider(force), force=force, note=reason, record=note_in_manifest)


# --------------------------------------------------------------------------- the step


def promote_run(root: str, run_folder: str, section: dict[str, Any], upstream: dict[str, StepOutput]) -> StepOutput:
    """Decide for the run in run_folder and write promote/decision.json there (not into the cache)."""
    store = ArtifactStore(root)
    folder = Path(run_folder)
    candidate = candidate_from_files(
        folder.name, upstream["ingest"].path, upstream["validate"].path, upstream["encode"].path, upstream["evaluate"].path
    )
    decision = promote(store, candidate, section)
    out_dir = folder / "promote"
    write_json(out_dir / DECISION_FILE, decision)
    summary = {
        "outcome": decision["outcome"],
        "promoted": decision["promoted"],
        "metric": decision["metric"],
        "new": decision["new"],
        "champion": (decision["champion"] or {}).get("value"),
        "reason": decision["reason"],
        "decided_at": _now(),
    }
    return StepOutput(step="promote", key=fingerprint(decision)[:24], dir=str(out_dir),
                      files={DECISION_FILE: sha256_file(out_dir / DECISION_FILE)}, summary=summary)


def manifest_promotion(output: StepOutput, run_id: str) -> dict[str, Any]:
    """What the run's manifest keeps under `promotion`: the whole decision, this run's id and when."""
    return {**read_json(output.file(DECISION_FILE)), "run_id": run_id, "decided_at": output.summary.get("decided_at")}


def _value(value: Any) -> str:
    number = _number(value)
    return "n/a" if number is None else f"{number:.4f}"


def promotion_rows(decision: dict[str, Any]) -> list[list[str]]:
    """The decision as measure/value rows, for the report and the Prefect artifact."""
    champion = decision.get("champion") or {}
    rows = [
        ["Outcome", TITLES.get(decision.get("outcome"), str(decision.get("outcome")))],
        ["Reason", str(decision.get("reason", ""))],
        ["Metric", f"{decision.get('metric')} ({'higher' if decision.get('higher_is_better', True) else 'lower'} is better)"],
        ["This run", _value(decision.get("new"))],
    ]
    if champion.get("missing"):
        rows.append([f"Champion {champion.get('run_id')}", "its run folder is gone"])
    elif champion:
        where = "re-scored on this run's test split" if champion.get("rescored") else "same test split"
        rows.append([f"Champion {champion.get('run_id')}", f"{_value(champion.get('value'))} ({where})"])
        if champion.get("rescored"):
            rows.append(["Champion on its own test split", _value(champion.get("own_value"))])
        delta = _number(decision.get("delta"))
        rows.append(["Delta", "n/a" if delta is None else f"{delta:+.4f}"])
    rows.append(["min_delta", _value(decision.get("min_delta"))])
    for floor in decision.get("floors") or []:
        rows.append([f"Floor {floor['metric']} ({floor['kind']} {floor['bound']:.4f})", f"{_value(floor['value'])} {'passed' if floor['passed'] else 'FAILED'}"])
    validation = decision.get("validation") or {}
    failed = validation.get("failed_checks") or []
    rows.append(["Validation", f"all {validation.get('n_checks', 0)} checks passed" if not failed else "failed: " + ", ".join(failed)])
    rows.append(["Decided by", str(decision.get("decided_by", "")) + (" (forced)" if decision.get("forced") and "forced" not in str(decision.get("decided_by")) else "")])
    return rows


def promotion_markdown(decision: dict[str, Any]) -> str:
    title = TITLES.get(decision.get("outcome"), "Promotion")
    lines = [f"# {title}", "", "| Measure | Value |", "|---|---|"]
    lines += [f"| {label} | {value.replace('|', '/')} |" for label, value in promotion_rows(decision)]
    return "\n".join(lines) + "\n"


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
def promote_task(root: str, section: dict, upstream: dict, run_folder: str) -> StepOutput:
    output = promote_run(root, run_folder, section, upstream)
    publish_promotion_artifact(read_json(output.file(DECISION_FILE)))
    return output
