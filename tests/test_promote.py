"""Promotion: a run's model becomes the champion only when it beats the current one."""

from __future__ import annotations

import dataclasses
import getpass
import json
import threading
import time
from pathlib import Path

import pytest

from tasks.promote import (
    Candidate,
    ChampionScore,
    candidate_from_run,
    decide,
    outcome_line,
    promote,
    score_champion,
)
from tasks.store import ArtifactStore, read_json

SETTINGS = {"enabled": True, "metric": "accuracy", "min_delta": 0.0, "floors": {}}


def _candidate(accuracy: float | None = 0.8, run_id: str = "new", **extra) -> Candidate:
    test = {"accuracy": accuracy, "loss": 0.4, "f1": 0.75, "roc_auc": 0.9, "n": 100}
    return Candidate(run_id=run_id, test=test, labels=["neg", "pos"], n_checks=3, test_fingerprint="same", **extra)


def _champion(value: float | None, **extra) -> ChampionScore:
    return ChampionScore(run_id="old", value=value, own_value=value, **extra)


# --------------------------------------------------------------------------- the decision, without Prefect


def test_the_first_run_becomes_champion():
    decision = decide(_candidate(0.6), None, SETTINGS)
    assert decision["promoted"] and decision["outcome"] == "promoted"
    assert decision["champion"] is None
    assert outcome_line(decision) == "promoted: first run: there is no champion yet"


def test_new_must_beat_champion_plus_min_delta_strictly():
    assert decide(_candidate(0.86), _champion(0.85), SETTINGS)["promoted"]
    equal = decide(_candidate(0.85), _champion(0.85), SETTINGS)
    assert not equal["promoted"] and equal["outcome"] == "not_promoted"
    assert outcome_line(equal) == "not promoted: accuracy 0.8500 <= champion 0.8500 + 0.0000"
    margin = {**SETTINGS, "min_delta": 0.02}
    assert not decide(_candidate(0.86), _champion(0.85), margin)["promoted"], "0.86 is not more than 0.85 + 0.02"
    won = decide(_candidate(0.88), _champion(0.85), margin)
    assert won["promoted"] and won["delta"] == pytest.approx(0.03)
    assert won["champion"] == {"run_id": "old", "value": 0.85, "own_value": 0.85, "rescored": False}


def test_loss_counts_lower_as_better():
    loss = {**SETTINGS, "metric": "loss", "min_delta": 0.05}
    assert decide(_candidate(), _champion(0.5), loss)["promoted"], "0.4 < 0.5 - 0.05"
    decision = decide(_candidate(), _champion(0.44), loss)
    assert not decision["promoted"]
    assert decision["reason"] == "loss 0.4000 >= champion 0.4400 - 0.0500"


def test_floors_and_blocking_warnings_block_a_better_run_and_other_warnings_do_not():
    floors = {**SETTINGS, "floors": {"f1": 0.8, "loss": 0.5}}
    decision = decide(_candidate(0.9), _champion(0.5), floors)
    assert not decision["promoted"]
    assert decision["reason"] == "f1 0.7500 is not at least the floor 0.8000"
    assert [f["passed"] for f in decision["floors"]] == [False, True]  # f1 below, loss under its ceiling
    overlap = {"check": "train_test_overlap", "split": "test", "severity": "warning"}
    warned = decide(_candidate(0.9, failed_checks=[overlap]), _champion(0.5), SETTINGS)
    assert not warned["promoted"]
    assert warned["validation"]["status"] == "blocked" and not warned["validation"]["passed"]
    assert warned["validation"]["text"].startswith("passed with 1 warning: not promotable unless train_test_overlap on test (warning)")
    assert "train_test_overlap on test (warning)" in warned["reason"]
    assert not decide(_candidate(0.9, failed_checks=[overlap]), None, SETTINGS)["promoted"], "first runs too"
    # token_length is not in promote.blocking_warnings by default: shown, not blocking.
    short = {"check": "token_length", "split": "train", "severity": "warning"}
    shown = decide(_candidate(0.9, failed_checks=[short]), _champion(0.5), SETTINGS)
    assert shown["promoted"], shown["reason"]
    assert shown["validation"]["status"] == "warnings"
    assert shown["validation"]["text"] == "passed with 1 warning (none blocks promotion: promote.blocking_warnings)"
    blocked = decide(_candidate(0.9, failed_checks=[short]), _champion(0.5), {**SETTINGS, "blocking_warnings": ["token_length"]})
    assert not blocked["promoted"] and "token_length on train (warning)" in blocked["reason"]


def test_force_promotes_and_says_so_and_disabled_skips():
    forced = decide(_candidate(0.5), _champion(0.9), SETTINGS, force=True)
    assert forced["promoted"] and forced["forced"]
    assert forced["reason"] == "forced over: accuracy 0.5000 <= champion 0.9000 + 0.0000"
    skipped = decide(_candidate(0.99), _champion(0.5), {**SETTINGS, "enabled": False})
    assert skipped["outcome"] == "skipped" and not skipped["promoted"]


def test_a_metric_that_is_not_available_does_not_promote():
    assert not decide(_candidate(0.9), _champion(None, note="labels differ"), SETTINGS)["promoted"]
    roc = decide(Candidate(run_id="new", test={"roc_auc": None}), None, {**SETTINGS, "metric": "roc_auc"})
    assert not roc["promoted"] and roc["reason"] == "roc_auc is n/a for this run"


def test_the_champion_itself_stays_champion():
    decision = decide(_candidate(0.5, run_id="old"), _champion(0.5), SETTINGS)
    assert decision["promoted"] and decision["reason"] == "already the champion"


def test_a_model_that_predicts_one_class_for_every_test_review_is_not_promoted():
    """Issue 29: Japanese reviews without spaces gave a model that said 'neg' to all 80 test reviews (F1 0.0), promoted first."""
    one_class = _candidate(0.5, predicted={"neg": 80, "pos": 0})
    reason = ("the model predicts 'neg' for all 80 test reviews, so it tells no class apart: "
              "check the encoding (encode.tokenizer) and the training (train.epochs, train.learning_rate)")
    first = decide(one_class, None, SETTINGS)
    assert not first["promoted"] and first["outcome"] == "not_promoted"
    assert first["reason"] == reason
    assert outcome_line(first) == f"not promoted: {reason}"
    assert not decide(one_class, _champion(0.4), SETTINGS)["promoted"], "beating a worse champion does not help"
    forced = decide(one_class, None, SETTINGS, force=True)
    assert forced["promoted"] and forced["reason"] == f"forced over: {reason}"
    assert decide(_candidate(0.5, predicted={"neg": 79, "pos": 1}), None, SETTINGS)["promoted"]
    assert decide(_candidate(0.5, predicted=None), None, SETTINGS)["promoted"], "metrics without a confusion matrix: no blocker"


def test_predicted_counts_come_from_evaluates_confusion_matrix():
    import numpy as np

    from tasks.evaluate import score
    from tasks.promote import one_class_blocker, predicted_counts

    labels = ["neg", "pos", "meh"]
    truth = np.array([0, 1, 2, 0, 1, 2])
    always_pos = np.tile([0.2, 0.7, 0.1], (6, 1))
    metrics = score(always_pos, truth, np.full(6, 5), labels)
    assert predicted_counts(metrics) == {"neg": 0, "pos": 6, "meh": 0}
    assert one_class_blocker(predicted_counts(metrics)).startswith("the model predicts 'pos' for all 6 test reviews")
    mixed = score(np.eye(3)[truth], truth, np.full(6, 5), labels)
    assert predicted_counts(mixed) == {"neg": 2, "pos": 2, "meh": 2} and one_class_blocker(predicted_counts(mixed)) is None
    assert predicted_counts({"task": "next_token", "confusion_matrix": [], "labels": []}) is None


def test_the_candidate_carries_its_predicted_classes_from_metrics_json(tmp_path: Path):
    from tasks.promote import candidate_from_files
    from tasks.store import write_json

    for step in ("ingest", "validate", "encode", "evaluate"):
        (tmp_path / step).mkdir()
    write_json(tmp_path / "validate" / "validation.json", {"checks": [{"check": "kept_text", "passed": True}]})
    write_json(tmp_path / "encode" / "labels.json", ["neg", "pos"])
    write_json(tmp_path / "evaluate" / "metrics.json", {"test": {"accuracy": 0.5}, "labels": ["neg", "pos"], "confusion_matrix": [[40, 0], [40, 0]]})
    candidate = candidate_from_files("new", "table-ja", *(tmp_path / step for step in ("ingest", "validate", "encode", "evaluate")))
    assert candidate.predicted == {"neg": 80, "pos": 0}
    assert not decide(candidate, None, SETTINGS)["promoted"]


# --------------------------------------------------------------------------- the pointer, with fake runs


def _fake_run(store: ArtifactStore, run_id: str, accuracy: float, test_fingerprint: str = "same") -> None:
    folder = store.run_dir(run_id)
    (folder / "evaluate").mkdir(parents=True)
    (folder / "evaluate" / "metrics.json").write_text(json.dumps({"test": {"accuracy": accuracy}}))
    manifest = {"run_id": run_id, "status": "completed", "steps": {"ingest": {"outputs": {"test.parquet": test_fingerprint}}}}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_concurrent_promotions_leave_the_best_as_champion(tmp_path: Path):
    store = ArtifactStore(tmp_path / "artifacts")
    values = [0.61, 0.83, 0.72, 0.55, 0.9, 0.78, 0.66, 0.88]
    for index, value in enumerate(values):
        _fake_run(store, f"run-{index}", value)

    def slow_scorer(*args):
        time.sleep(0.02)  # widen the window between reading the champion and replacing it
        return score_champion(*args)

    start = threading.Barrier(len(values))
    order: list[dict] = []  # decisions in the order the lock let them happen

    def contend(index: int) -> None:
        start.wait()
        promote(store, _candidate(values[index], run_id=f"run-{index}"), SETTINGS, scorer=slow_scorer, record=order.append)

    threads = [threading.Thread(target=contend, args=(index,)) for index in range(len(values))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    champion = read_json(store.root / "champion.json")["models"]["default"]  # a whole, valid JSON file
    assert champion["run_id"] == "run-4" and champion["value"] == 0.9
    assert [p.name for p in store.root.iterdir() if p.name.startswith(".")] == [], "no temporary file left behind"
    assert len(order) == len(values)
    # Each run was compared with the champion of its moment, never a stale one.
    best = None
    for decision in order:
        assert (decision["champion"] or {}).get("value") == best
        assert decision["promoted"] == (best is None or decision["new"] > best)
        best = decision["new"] if decision["promoted"] else best


def test_a_champion_tested_on_other_texts_is_scored_again(tmp_path: Path):
    store = ArtifactStore(tmp_path / "artifacts")
    _fake_run(store, "old", 0.9, test_fingerprint="their texts")
    score = score_champion(store, "old", _candidate(0.7, test_texts=tmp_path / "test.parquet"), "accuracy")
    # The fake champion has no model to score: the comparison is refused, not made on unlike splits.
    assert score.rescored and score.value is None and "cannot be scored again" in score.note
    assert not decide(_candidate(0.95), score, SETTINGS)["promoted"]
    assert store.champions.read_all() == {}


# --------------------------------------------------------------------------- the flow and the CLI, for real

BASE = [
    "data.synthetic_reviews=400",
    "encode.num_words=200",
    "encode.max_len=80",
    "model.units=8",
    "model.embedding_dim=8",
    "model.pooling=mean",
    "train.patience=8",
]
CHANCE = [*BASE, "train.epochs=1", "train.learning_rate=0"]  # the weights never move: accuracy stays near 0.5
GOOD = [*BASE, "train.epochs=8", "train.learning_rate=0.05"]  # about 0.74 on this corpus


@pytest.mark.slow
def test_runs_are_promoted_only_when_better_and_by_hand_on_request(prefect_api, tmp_path: Path, capsys):
    from prefect.artifacts import Artifact

    from flows.cli import main
    from flows.pipeline import rnnflow_pipeline
    from tasks.config import load_config

    root = tmp_path / "artifacts"
    store = ArtifactStore(root)

    chance = Path(rnnflow_pipeline(config=load_config("demo", overrides=CHANCE), artifacts_root=str(root)))
    first = read_json(chance / "manifest.json")
    assert first["promotion"]["outcome"] == "promoted" and first["promotion"]["reason"] == "first run: there is no champion yet"
    assert first["steps"]["promote"]["status"] == "completed"
    assert read_json(chance / "promote" / "decision.json")["outcome"] == "promoted"
    assert store.champions.read("synthetic")["run_id"] == chance.name

    good = Path(rnnflow_pipeline(config=load_config("demo", overrides=GOOD), artifacts_root=str(root)))
    promotion = read_json(good / "manifest.json")["promotion"]
    assert promotion["promoted"] and promotion["champion"]["run_id"] == chance.name
    assert promotion["new"] > promotion["champion"]["value"] + 0.1
    champion = store.champions.read("synthetic")
    assert champion["run_id"] == good.name and champion["previous_run_id"] == chance.name
    assert champion["decided_by"] == "rnnflow promote step"
    pointer_bytes = (root / "champion.json").read_bytes()

    # The worse run through the CLI: it completes (exit 0) and says so just before its report and its folder.
    capsys.readouterr()
    assert main(["run", "--preset", "demo", *[f"--set={item}" for item in CHANCE], "--artifacts", str(root)]) == 0
    *_, line, report_line, folder_line = capsys.readouterr().out.strip().splitlines()
    assert report_line == f"report {Path(folder_line) / 'report' / 'report.html'}"
    assert line.startswith("not promoted: accuracy ") and f"<= champion {promotion['new']:.4f} + 0.0000" in line
    worse = Path(folder_line)
    manifest = read_json(worse / "manifest.json")
    assert manifest["status"] == "completed" and manifest["promotion"]["outcome"] == "not_promoted"
    assert (root / "champion.json").read_bytes() == pointer_bytes, "the champion is unchanged"
    artifact = Artifact.get("rnnflow-promotion")
    assert artifact is not None and artifact.data.startswith("# Not promoted")

    # Scored again on other texts, the champion's model gives what its own evaluate recorded on these.
    rescored = score_champion(store, good.name, dataclasses.replace(candidate_from_run(worse), test_fingerprint="other"), "accuracy")
    assert rescored.rescored and rescored.value == pytest.approx(promotion["new"])

    # By hand: refused without --force, recorded with it.
    assert main(["promote", worse.name, "--artifacts", str(root)]) == 1
    assert main(["promote", worse.name, "--force", "--reason", "rollback drill", "--artifacts", str(root)]) == 0
    champion = store.champions.read("synthetic")
    assert champion["run_id"] == worse.name and champion["forced"]
    assert champion["decided_by"] == f"{getpass.getuser()} by hand (forced)"
    assert champion["reason"].startswith("rollback drill (forced over: accuracy")
    manifest = read_json(worse / "manifest.json")
    assert manifest["promotion"]["decided_by"] == champion["decided_by"]
    assert [p["decided_by"] for p in manifest["promotion_history"]] == ["rnnflow promote step", f"{getpass.getuser()} by hand"]
    capsys.readouterr()
    assert main(["champion", "--artifacts", str(root)]) == 0
    out = capsys.readouterr().out
    assert worse.name in out and "accuracy" in out
    assert store.resolve_run("champion") == worse


def test_a_champion_whose_manifest_is_damaged_is_not_taken_for_gone(tmp_path: Path):
    store = ArtifactStore(tmp_path / "artifacts")
    _fake_run(store, "old", 0.9)
    (store.run_dir("old") / "manifest.json").write_text("[1, 2]")
    score = score_champion(store, "old", _candidate(0.95), "accuracy")
    assert not score.missing and score.value is None
    assert score.note.startswith("the champion cannot be compared: ") and "manifest.json" in score.note
    decision = decide(_candidate(0.95), score, SETTINGS)
    assert not decision["promoted"] and "run folder is gone" not in decision["reason"]
