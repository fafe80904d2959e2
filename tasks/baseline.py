"""The baseline step: a linear model on n-grams, fitted on the same train split as the recurrent model, scored on its test split.

It is a yardstick, not part of the exported model: a run shows its recurrent model beside it (metrics.json's
`baseline`, the report, the Prefect artifact), and promote.beat_baseline can refuse a model that loses to it.

The model is NB-weighted logistic regression on TF-IDF n-grams (Wang & Manning 2012, "NBSVM"): each feature is
scaled by the log-ratio of its weight in one class against the rest, then a logistic regression is fitted on
the scaled features; with more than two classes, one such model per class against the rest, whose
probabilities are normalised to sum to one. Features are hashed (scikit-learn's HashingVectorizer), so memory
stays bounded by baseline.features however many distinct n-grams a corpus has.

Which n-grams: baseline.analyzer auto applies encode.tokenizer auto's rule (tasks/vocabulary_rule.py) to train's
words: word n-grams where the most frequent words cover enough of the text (English), character n-grams within
words (char_wb) where they do not (Korean, Japanese, Chinese). Every other choice is made on validation: each of
baseline.c_values is fitted on train and scored on ingest's val split (carved from train), and the best kept.
The test split is scored once, with the chosen model. Cached like every step, on ingest's outputs and the baseline section, so a rerun
of train or evaluate does not refit it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.baseline_config import BaselineConfig
from tasks.caching import CacheSlot, produce_step, step_task
from tasks.metrics import headline_metrics
from tasks.store import StepOutput, read_json, write_json

BASELINE_FILE = "baseline.json"
TEST_METRICS = ("accuracy", "loss", "precision", "recall", "f1", "roc_auc", "n")


def _vectorizer(analyzer: str, section: dict[str, Any]) -> Any:
    from sklearn.feature_extraction.text import HashingVectorizer

    top = section["word_ngrams"] if analyzer == "word" else section["char_ngrams"]
    return HashingVectorizer(
        analyzer=analyzer, ngram_range=(1, int(top)), n_features=int(section["features"]), alternate_sign=False, norm=None,
        lowercase=True, token_pattern=r"(?u)\b\w+\b", dtype=np.float32,
    )


def features(analyzer: str, section: dict[str, Any], texts: dict[str, pd.Series]) -> dict[str, Any]:
    """TF-IDF (sublinear tf, idf from train) of each split's texts, hashed n-grams of analyzer."""
    from sklearn.feature_extraction.text import TfidfTransformer

    vectorizer = _vectorizer(analyzer, section)
    counts = {split: vectorizer.transform(series) for split, series in texts.items()}
    tfidf = TfidfTransformer(sublinear_tf=True).fit(counts["train"])
    # Only the columns some train text fills: liblinear's time grows with the columns, empty ones included.
    used = np.flatnonzero(counts["train"].getnnz(axis=0))
    return {split: tfidf.transform(matrix).tocsc()[:, used].tocsr() for split, matrix in counts.items()}


class NBLogistic:
    """NB-weighted logistic regression: binary, or one model per class against the rest."""

    def __init__(self, c: float, alpha: float = 1.0):
        self.c, self.alpha = c, alpha
        self.models: list[tuple[np.ndarray, Any]] = []

    def _ratio(self, x: Any, positive: np.ndarray) -> np.ndarray:
        p = self.alpha + np.asarray(x[positive].sum(axis=0)).ravel()
        q = self.alpha + np.asarray(x[~positive].sum(axis=0)).ravel()
        return np.log((p / p.sum()) / (q / q.sum())).astype(np.float32)

    def fit(self, x: Any, y: np.ndarray, n_classes: int) -> "NBLogistic":
        from sklearn.linear_model import LogisticRegression

        targets = [1] if n_classes == 2 else range(n_classes)
        for target in targets:
            positive = y == target
            ratio = self._ratio(x, positive)
            model = LogisticRegression(C=self.c, solver="liblinear", max_iter=1000).fit(x.multiply(ratio).tocsr(), positive.astype(int))
            self.models.append((ratio, model))
        return self

    def predict_proba(self, x: Any) -> np.ndarray:
        scores = np.stack([model.predict_proba(x.multiply(ratio).tocsr())[:, 1] for ratio, model in self.models], axis=1)
        if len(self.models) == 1:
            return np.concatenate([1.0 - scores, scores], axis=1)
        total = scores.sum(axis=1, keepdims=True)
        return np.divide(scores, total, out=np.full_like(scores, 1.0 / scores.shape[1]), where=total > 0)


def test_metrics(probabilities: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """The keys of metrics.json's `test` that promote.metric can name, computed as evaluate computes them."""
    return headline_metrics(probabilities, y)


def _read_split(ingest_dir: Path, split: str) -> pd.DataFrame:
    return pd.read_parquet(Path(ingest_dir) / f"{split}.parquet", columns=["text", "label"])


def choose_analyzer(section: dict[str, Any], train_texts: pd.Series, word_rule: dict[str, Any] | None) -> tuple[str, str]:
    """(analyzer, why): baseline.analyzer, or for auto encode.tokenizer auto's rule (tasks.vocabulary_rule) on train's words:
    word n-grams where the most frequent words cover enough of the text, character n-grams within words where they do not
    (where encode takes characters or subword pieces)."""
    if section["analyzer"] != "auto":
        return section["analyzer"], f"baseline.analyzer {section['analyzer']}"
    from sklearn.feature_extraction.text import CountVectorizer

    from tasks.vocabulary_rule import choose_tokenizer

    rule = word_rule or {"num_words": 20000, "auto_min_coverage": 0.75}
    counter = CountVectorizer(token_pattern=r"(?u)\b\w+\b", lowercase=True, dtype=np.int64)
    totals = np.asarray(counter.fit_transform(train_texts).sum(axis=0)).ravel()
    counts = dict(zip(counter.get_feature_names_out(), totals.tolist()))
    choice = choose_tokenizer(counts, int(rule["num_words"]), float(rule["auto_min_coverage"]))
    analyzer = "word" if choice.chosen == "word" else "char_wb"
    relation = "at least" if analyzer == "word" else "under"
    return analyzer, (f"baseline.analyzer auto: the {choice.kept_words:,} most frequent words cover {choice.coverage:.1%} of train's "
                      f"words ({relation} encode.auto_min_coverage {choice.min_coverage:.0%}): {analyzer} n-grams")


def fit_baseline(ingest_dir: Path, section: dict[str, Any], out_dir: Path, task: str = "classify",
                 word_rule: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fit on train, choose analyzer and C on val, score test once; baseline.json, and its summary."""
    if not section.get("enabled", True) or task != "classify":
        reason = "baseline.enabled is false" if task == "classify" else f"model.task {task} is not a classification"
        write_json(Path(out_dir) / BASELINE_FILE, {"skipped": reason})
        return {"skipped": reason}
    started, cpu_started = time.perf_counter(), time.process_time()
    labels = [str(label) for label in read_json(Path(ingest_dir) / "ingest.json")["labels"]]
    splits = {split: _read_split(ingest_dir, split) for split in ("train", "val", "test")}
    y = {split: frame["label"].to_numpy() for split, frame in splits.items()}
    texts = {split: frame["text"].fillna("") for split, frame in splits.items()}
    analyzer, why = choose_analyzer(section, texts["train"], word_rule)
    x = features(analyzer, section, texts)
    candidates: list[dict[str, Any]] = []
    best: tuple[float, float, Any] | None = None
    for c in section["c_values"]:
        model = NBLogistic(float(c)).fit(x["train"], y["train"], len(labels))
        val_accuracy = float((model.predict_proba(x["val"]).argmax(axis=1) == y["val"]).mean())
        candidates.append({"c": float(c), "val_accuracy": round(val_accuracy, 4)})
        if best is None or val_accuracy > best[0]:
            best = (val_accuracy, float(c), model)
    assert best is not None
    val_accuracy, c, model = best
    test = test_metrics(model.predict_proba(x["test"]), y["test"])
    top = section["word_ngrams"] if analyzer == "word" else section["char_ngrams"]
    result = {
        "model": f"NB-weighted logistic regression on TF-IDF {analyzer} 1-{top}-grams",
        "analyzer": analyzer,
        "c": c,
        "why": f"{why}; C {c:g} had the best val accuracy of baseline.c_values",
        "candidates": candidates,
        "labels": labels,
        "n": {split: int(len(frame)) for split, frame in splits.items()},
        "validation": {"accuracy": val_accuracy, "n": int(len(y["val"]))},
        "test": test,
        "fit_seconds": round(time.perf_counter() - started, 1),
        "cpu_seconds": round(time.process_time() - cpu_started, 1),  # on a shared machine, the fairer measure
    }
    write_json(Path(out_dir) / BASELINE_FILE, result)
    return {"analyzer": analyzer, "val_accuracy": val_accuracy, "accuracy": test["accuracy"], "seconds": result["fit_seconds"]}


def read_baseline(baseline_dir: Path | None) -> dict[str, Any] | None:
    """baseline.json of a baseline step's folder; None without one (a run from before the step) or when it was skipped."""
    path = Path(baseline_dir) / BASELINE_FILE if baseline_dir is not None else None
    if path is None or not path.is_file():
        return None
    found = read_json(path)
    return found if "test" in found else None


def compared(model_test: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """metrics.json's `baseline`: the baseline's figures, and the recurrent model's difference from it per metric."""
    difference = {}
    for key in TEST_METRICS[:-1]:
        mine, theirs = model_test.get(key), baseline["test"].get(key)
        difference[key] = None if mine is None or theirs is None else round(float(mine) - float(theirs), 6)
    kept = ("model", "analyzer", "c", "why", "validation", "test", "fit_seconds", "cpu_seconds")
    return {**{key: baseline.get(key) for key in kept}, "difference": difference}


@step_task("baseline")
def baseline_task(baseline: BaselineConfig, *, ingest: StepOutput, task: str, word_rule: dict | None, slot: CacheSlot) -> StepOutput:
    """task, word_rule: tasks/steps.py's baseline_inputs."""
    section = baseline.model_dump(mode="json")
    return produce_step(slot, lambda out: fit_baseline(ingest.path, section, out, task, word_rule))
