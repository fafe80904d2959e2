"""The linear baseline beside every run (issue 30): fitted on train, chosen on val, scored on test, cached like a step,
shown in metrics.json and the report, and promote.beat_baseline keeps a model that loses to it from promotion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.baseline import BASELINE_FILE, compared, fit_baseline
from tasks.config import load_config
from tasks.promote import Candidate, decide, outcome_line, promotion_rows
from tasks.report_sections import baseline_key_row, baseline_section, channels_key_row
from tests.helpers import tiny_config

SECTION = load_config("demo").baseline.model_dump(mode="json")
SETTINGS = {"enabled": True, "metric": "accuracy", "min_delta": 0.0, "floors": {}}


def _class_texts(labels: list[str], n: int, seed: int) -> pd.DataFrame:
    """n reviews per split of len(labels) classes: each class has its own words, mixed with shared filler and noise."""
    rng = np.random.default_rng(seed)
    filler = "the film plot actor scene story music camera night city long short".split()
    cues = {label: [f"{label}{k}" for k in range(6)] for label in labels}
    rows = []
    for i in range(n):
        label = int(rng.integers(len(labels)))
        words = list(rng.choice(filler, 12))
        own = cues[labels[label]] if rng.random() < 0.85 else cues[labels[int(rng.integers(len(labels)))]]
        words += list(rng.choice(own, 2))
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label, "rating": None, "id": i})
    return pd.DataFrame(rows)


def _ingest_folder(folder: Path, labels: list[str], n: int = 150) -> Path:
    folder.mkdir(parents=True)
    for seed, split in enumerate(("train", "val", "test")):
        _class_texts(labels, n, seed).to_parquet(folder / f"{split}.parquet", index=False)
    (folder / "ingest.json").write_text(json.dumps({"labels": labels}))
    return folder


def test_the_baseline_beats_chance_on_synthetic_reviews_and_says_how_it_chose(tmp_path: Path):
    from tasks.config import DataConfig
    from tasks.ingest import ingest_reviews, locate_source

    data = DataConfig(source="synthetic", synthetic_reviews=400)
    ingested, out = tmp_path / "ingest", tmp_path / "baseline"
    ingested.mkdir()
    out.mkdir()
    ingest_reviews(data, locate_source(data), ingested)
    summary = fit_baseline(ingested, SECTION, out)
    result = json.loads((out / BASELINE_FILE).read_text())
    assert result["test"]["accuracy"] > 0.65, "well above the 0.5 of guessing on balanced classes"
    assert summary["accuracy"] == result["test"]["accuracy"] and result["test"]["n"] == 400
    assert result["analyzer"] == "word" and "most frequent words cover" in result["why"], "English: words, by the tokenizer rule"
    assert [row["c"] for row in result["candidates"]] == SECTION["c_values"], "every C measured on val"
    assert result["validation"]["accuracy"] == pytest.approx(max(row["val_accuracy"] for row in result["candidates"]), abs=1e-4)
    assert set(result["test"]) >= {"accuracy", "loss", "precision", "recall", "f1", "roc_auc"}, "every metric promote can name"


def test_a_script_whose_words_repeat_little_gets_character_ngrams(tmp_path: Path):
    # Every review's words are its own (as Korean words carry their endings): no vocabulary covers them.
    folder = _ingest_folder(tmp_path / "ingest", ["neg", "pos"])
    for split in ("train", "val", "test"):
        frame = pd.read_parquet(folder / f"{split}.parquet")
        frame["text"] = [" ".join(f"{word}{split}{i}x{j}" for j, word in enumerate(text.split())) for i, text in enumerate(frame["text"])]
        frame.to_parquet(folder / f"{split}.parquet", index=False)
    out = tmp_path / "baseline"
    out.mkdir()
    fit_baseline(folder, SECTION, out, word_rule={"num_words": 200, "auto_min_coverage": 0.75})
    result = json.loads((out / BASELINE_FILE).read_text())
    assert result["analyzer"] == "char_wb" and "char_wb n-grams" in result["why"]
    assert result["test"]["accuracy"] > 0.65


def test_more_than_two_classes(tmp_path: Path):
    labels = ["1-3", "4-6", "7-8", "9-10"]
    out = tmp_path / "baseline"
    out.mkdir()
    fit_baseline(_ingest_folder(tmp_path / "ingest", labels), SECTION, out)
    result = json.loads((out / BASELINE_FILE).read_text())
    assert result["labels"] == labels
    assert result["test"]["accuracy"] > 0.5, "four classes: chance is 0.25"
    assert 0 < result["test"]["roc_auc"] <= 1 and result["test"]["loss"] > 0


def test_disabled_or_next_token_runs_skip_it(ingested, tmp_path: Path):
    for name, section, task in (("off", {**SECTION, "enabled": False}, "classify"), ("lm", SECTION, "next_token")):
        out = tmp_path / name
        out.mkdir()
        assert "skipped" in fit_baseline(ingested, section, out, task)
        assert "test" not in json.loads((out / BASELINE_FILE).read_text())


def _metrics(model_accuracy: float, baseline_accuracy: float) -> dict:
    test = {"accuracy": model_accuracy, "loss": 0.4, "f1": 0.8, "roc_auc": 0.9, "precision": 0.8, "recall": 0.8, "n": 100}
    baseline = {"model": "NB-weighted logistic regression on TF-IDF word 1-3-grams", "analyzer": "word", "why": "test",
                "validation": {"accuracy": 0.9}, "fit_seconds": 12.3,
                "test": {**test, "accuracy": baseline_accuracy}}
    return {"test": test, "baseline": compared(test, baseline)}


def _candidate(metrics: dict) -> Candidate:
    return Candidate(run_id="new", test=metrics["test"], labels=["neg", "pos"], n_checks=3, baseline=metrics["baseline"])


def test_beat_baseline_refuses_a_model_that_loses_and_promotes_one_that_wins():
    losing, winning = _metrics(0.88, 0.91), _metrics(0.93, 0.91)
    assert losing["baseline"]["difference"]["accuracy"] == pytest.approx(-0.03)
    refused = decide(_candidate(losing), None, {**SETTINGS, "beat_baseline": True})
    assert not refused["promoted"]
    assert outcome_line(refused) == (
        "not promoted: the model's accuracy 0.8800 does not beat the linear baseline's 0.9100 (NB-weighted logistic regression "
        "on TF-IDF word 1-3-grams), and promote.beat_baseline is on: improve the model, or turn promote.beat_baseline off to "
        "promote it anyway")
    assert ["Linear baseline", "0.9100, NOT beaten (promote.beat_baseline: required)"] in promotion_rows(refused)
    assert decide(_candidate(winning), None, {**SETTINGS, "beat_baseline": True})["promoted"]
    shown = decide(_candidate(losing), None, SETTINGS)
    assert shown["promoted"] and shown["baseline"]["wins"] is False, "off by default: shown, not required"
    assert ["Linear baseline", "0.9100, NOT beaten"] in promotion_rows(shown)


def test_beat_baseline_without_a_baseline_says_how_to_get_one():
    metrics = _metrics(0.9, 0.8)
    candidate = Candidate(run_id="new", test=metrics["test"], labels=["neg", "pos"], n_checks=3)
    decision = decide(candidate, None, {**SETTINGS, "beat_baseline": True})
    assert not decision["promoted"] and "turn baseline.enabled on" in decision["reason"]


def test_the_report_shows_model_and_baseline_side_by_side():
    metrics = _metrics(0.88, 0.91)
    assert baseline_key_row(metrics) == [["Linear baseline test accuracy", "0.9100 (this model -0.0300; word n-grams, fitted in 12.3 s)"]]
    section = baseline_section(metrics)
    (table,) = [content for kind, content in section.blocks if kind == "table"]
    assert table.rows[0] == ["accuracy", "0.8800", "0.9100", "-0.0300"]
    assert baseline_section({"test": metrics["test"]}) is None and baseline_key_row({}) == []


@pytest.mark.slow
def test_a_run_records_the_baseline_and_a_rerun_of_train_reuses_it(tiny_run_copy):
    from flows.pipeline import rnnflow_pipeline

    first = json.loads((tiny_run_copy.folder / "evaluate" / "metrics.json").read_text())
    assert first["baseline"]["test"]["n"] == first["test"]["n"], "scored on the same test split"
    config = load_config(base=tiny_config().as_dict(), overrides=["train.epochs=1", "promote.beat_baseline=true"])
    folder = Path(rnnflow_pipeline(config=config, artifacts_root=str(tiny_run_copy.root)))
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["steps"]["baseline"]["status"] == "cached" and manifest["steps"]["train"]["status"] == "completed"
    metrics = json.loads((folder / "evaluate" / "metrics.json").read_text())
    assert metrics["baseline"]["test"] == first["baseline"]["test"]
    decision = json.loads((folder / "promote" / "decision.json").read_text())
    wins = metrics["test"]["accuracy"] > metrics["baseline"]["test"]["accuracy"]
    assert decision["baseline"]["wins"] is wins and decision["baseline"]["required"] is True
    assert wins or "does not beat the linear baseline" in decision["reason"]
    assert "Linear baseline" in (folder / "report" / "report.md").read_text()


@pytest.mark.parametrize("members", [1, 2])
def test_evaluate_scores_the_recurrence_and_the_bag_apart(members: int, tmp_path: Path):
    """A model with a bag of n-grams: what it reads with the bag's logits left out, and what the bag alone reads, in
    metrics.json and the report, so nobody takes a bag that decides for a recurrent model that does."""
    import keras

    from tasks.config import ModelConfig
    from tasks.evaluate import evaluate_model
    from tasks.models import build_model
    from tasks.train import average_members
    from tests.helpers import toy_encoding

    encoded = toy_encoding(tmp_path / "encode", max_len=12, test=True)
    cfg = ModelConfig(cell="gru", units=4, embedding_dim=4, bidirectional=False, ngrams=2, ngram_buckets=1024)
    built = []
    for k in range(members):
        keras.utils.set_random_seed(k)
        built.append(build_model(cfg, num_tokens=9, max_len=12, n_classes=2))
        built[-1].name = f"{built[-1].name}_member{k + 1}"  # as train names members
        bag = built[-1].get_layer("bag_of_1_to_2_grams")
        bag.set_weights([np.random.default_rng(k).normal(0, 0.3, w.shape).astype("float32") for w in bag.get_weights()])
    (tmp_path / "train").mkdir()
    (average_members(built, 12) if members > 1 else built[0]).save(tmp_path / "train" / "model.keras")
    evaluate_model(encoded, tmp_path / "train", tmp_path / "evaluate")
    metrics = json.loads((tmp_path / "evaluate" / "metrics.json").read_text())

    x, y = np.load(encoded / "X_test.npy"), np.load(encoded / "y_test.npy")
    apart = [keras.Model(m.inputs, [m.get_layer("recurrent_logits").output, m.get_layer("bag_of_1_to_2_grams").output]).predict(x, verbose=0)
             for m in built]
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    for channel, k in (("recurrent_accuracy", 0), ("bag_accuracy", 1)):
        mean = np.mean([sigmoid(parts[k][:, 0]) for parts in apart], axis=0)
        assert metrics["channels"][channel] == pytest.approx(float(((mean > 0.5) == (y == 1)).mean()))
    if members > 1:
        assert [m["bag_accuracy"] for m in metrics["members"]] == pytest.approx([float(((p[1][:, 0] > 0) == (y == 1)).mean()) for p in apart])
    sentence = [text for kind, text in baseline_section({**metrics, "baseline": {"test": {}}}).blocks if kind == "text"][1]
    assert f"recurrent layers alone read {metrics['channels']['recurrent_accuracy']:.4f} of the test reviews right" in sentence
    channels = metrics["channels"]
    assert channels_key_row(metrics) == [["Recurrence alone / bag alone", f"{channels['recurrent_accuracy']:.4f} / "
                                                                          f"{channels['bag_accuracy']:.4f} test accuracy (the other's logits left out)"]]
    assert channels_key_row({"test": metrics["test"]}) == [], "a model without a bag has no such row"
