"""Evaluate: the trained model on the test split; metrics.json, predictions, and slices by review length.

A next_token model (train.json's task) is scored per step instead: how often its most likely next
token is the right one, and its loss, over the steps train weighed in (padding excluded).

predictions.parquet has a row per test review, in the order of ingest's test.parquet (encode
streams that file in order into X_test and tokens_test.parquet, and the model predicts X_test in
order): its `row` column is the review's place there. `id` is the source's id, which is not
unique for every source (IMDb numbers each polarity from 0), so `row` is the one to join on.

mistakes.parquet holds a classifier's most confident mistakes, the report's "Most confident
mistakes": per true class, the MISTAKES_PER_CLASS misclassified reviews with the highest predicted
probability, with `text`, the review as written (ingest's test.parquet at `row`: ingest is one of
this step's upstream steps, so its cache key covers the texts), and `tokens`, the review in the
model's tokens, decoded from encode's token ids (tokens_test.parquet) through its vocabulary: for
words, lowercased (unless encode.lowercase is false) and without punctuation, with OOV_MARK for a
token outside the vocabulary; the whole review, though the model reads at most max_len tokens of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.baseline import compared, read_baseline
from tasks.caching import CacheSlot, produce_step, step_task
from tasks.encode import INDEX_FROM, OOV, PAD, START, load_arrays
from tasks.length_buckets import predict_in_buckets
from tasks.metrics import headline_metrics
from tasks.store import RunFiles, StepOutput, atomic_path, read_json, write_json

LENGTH_BUCKETS = (0, 100, 200, 400, 800, 10**9)
PREDICTIONS_FILE = "predictions.parquet"
MISTAKES_FILE = "mistakes.parquet"
MISTAKES_PER_CLASS = 5
# Stands for a token outside the vocabulary in a decoded review: a reader sees where the model read nothing.
OOV_MARK = "⟨?⟩"


def predict_probabilities(model: Any, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Class probabilities, shape (n, n_classes), whether the model ends in a sigmoid or a softmax."""
    return class_probabilities(predict_outputs(model, x, batch_size))


def predict_outputs(model: Any, x: np.ndarray, batch_size: int = 512) -> Any:
    """model.predict(x); for a model of rows of any width (train.bucket_by_length) batch by batch in length buckets."""
    shape = tuple(model.inputs[0].shape) if len(model.inputs) == 1 else ()
    if len(shape) == 2 and shape[1] is None and np.ndim(x) == 2:
        return predict_in_buckets(model, x, batch_size)
    return model.predict(x, batch_size=batch_size, verbose=0)


def class_probabilities(outputs: Any) -> np.ndarray:
    """A classifier's outputs as probabilities per class: one sigmoid column becomes (1 - p, p)."""
    raw = np.asarray(outputs, dtype=np.float64)
    if raw.ndim == 1 or raw.shape[1] == 1:
        positive = raw.reshape(-1)
        return np.stack([1.0 - positive, positive], axis=1)
    return raw


def _bucket_name(low: int, high: int) -> str:
    return f"{low}+" if high >= 10**9 else f"{low}-{high - 1}"


def score(probabilities: np.ndarray, y_true: np.ndarray, lengths: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Every number the report shows, from predicted probabilities and the true labels: headline_metrics, the ROC
    curve (two classes), each class's own figures (keyed by its name) and the figures by review length."""
    from sklearn import metrics as skm  # here, not at import: a flow whose evaluate is cached never needs it
    y_pred = probabilities.argmax(axis=1)
    n_classes = probabilities.shape[1]
    test = headline_metrics(probabilities, y_true)
    roc_curve = None
    if n_classes == 2 and test["roc_auc"] is not None:
        fpr, tpr, _ = skm.roc_curve(y_true, probabilities[:, 1], drop_intermediate=True)
        keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), 200)).astype(int))
        roc_curve = {"fpr": fpr[keep].round(5).tolist(), "tpr": tpr[keep].round(5).tolist()}
    per_class_arrays = skm.precision_recall_fscore_support(y_true, y_pred, labels=list(range(n_classes)), zero_division=0)
    per_class = {
        labels[i]: {name: float(arr[i]) if name != "support" else int(arr[i]) for name, arr in zip(("precision", "recall", "f1", "support"), per_class_arrays)}
        for i in range(n_classes)
    }
    by_length = []
    for low, high in zip(LENGTH_BUCKETS, LENGTH_BUCKETS[1:]):
        mask = (lengths >= low) & (lengths < high)
        if mask.any():
            by_length.append({"bucket": _bucket_name(low, high), "n": int(mask.sum()), "accuracy": float((y_pred[mask] == y_true[mask]).mean())})
    return {
        "test": test,
        "labels": labels,
        "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=list(range(n_classes))).tolist(),
        "roc_curve": roc_curve,
        "by_length": by_length,
        "per_class": per_class,
    }


def _macro_scores(confusion: np.ndarray) -> tuple[float, float, float]:
    """Macro precision, recall and F1 over the classes that occur (true or predicted), as sklearn's defaults."""
    true, predicted, hits = confusion.sum(axis=1), confusion.sum(axis=0), np.diag(confusion).astype(np.float64)
    present = (true + predicted) > 0
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, true, out=np.zeros_like(hits), where=true > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(hits), where=(precision + recall) > 0)
    if not present.any():
        return 0.0, 0.0, 0.0
    return float(precision[present].mean()), float(recall[present].mean()), float(f1[present].mean())


def score_next_token(model: Any, x: np.ndarray, lengths: np.ndarray, chunk: int = 256) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """(metrics.json, steps scored per row, right guesses per row) for a next_token model: next-token
    accuracy and loss over the weighted steps.

    The test rows go through train's next_token_arrays, so the same steps count (a padding step
    never does; the step after a text's last token, whose answer is "the text ends", does).
    Scored chunk by chunk: the per-step probabilities of a whole split would not fit in memory.
    """
    from tasks.models import next_token_arrays

    inputs, targets, weights = next_token_arrays(x)
    vocabulary = int(model.output_shape[-1])
    confusion = np.zeros((vocabulary, vocabulary), dtype=np.int64)
    row_steps = np.zeros(len(inputs), dtype=np.int64)
    row_hits = np.zeros(len(inputs), dtype=np.int64)
    log_loss = 0.0
    for start in range(0, len(inputs), chunk):
        stop = start + chunk
        probabilities = np.asarray(model.predict(inputs[start:stop], batch_size=chunk, verbose=0), dtype=np.float64)
        counted = weights[start:stop] > 0
        truth, guess = targets[start:stop], probabilities.argmax(axis=-1)
        picked = np.take_along_axis(probabilities, truth[..., None], axis=-1)[..., 0]
        log_loss -= float(np.log(np.clip(picked[counted], 1e-7, 1.0)).sum())
        pairs = truth[counted] * vocabulary + guess[counted]
        confusion += np.bincount(pairs, minlength=vocabulary * vocabulary).reshape(vocabulary, vocabulary)
        row_steps[start:stop] = counted.sum(axis=1)
        row_hits[start:stop] = ((guess == truth) & counted).sum(axis=1)
    steps = int(row_steps.sum())
    precision, recall, f1 = _macro_scores(confusion)
    by_length = []
    for low, high in zip(LENGTH_BUCKETS, LENGTH_BUCKETS[1:]):
        mask = (lengths >= low) & (lengths < high) & (row_steps > 0)
        if mask.any():
            accuracy = float(row_hits[mask].sum() / row_steps[mask].sum())
            by_length.append({"bucket": _bucket_name(low, high), "n": int(mask.sum()), "accuracy": accuracy})
    return {
        "task": "next_token",
        "test": {
            "n": int(len(inputs)),
            "steps": steps,  # the next tokens scored
            "accuracy": float(np.trace(confusion) / steps) if steps else None,
            "loss": log_loss / steps if steps else None,
            # Macro over the tokens that occur; no ROC curve for a choice among a whole vocabulary.
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "roc_auc": None,
        },
        "labels": [],
        "confusion_matrix": [],
        "roc_curve": None,
        "by_length": by_length,
        "per_class": {},
    }, row_steps, row_hits


def _evaluate_next_token(model: Any, encode_dir: Path, out_dir: Path) -> dict[str, Any]:
    x_test, _ = load_arrays(encode_dir, "test")
    tokens = pd.read_parquet(Path(encode_dir) / "tokens_test.parquet", columns=["id", "length"])
    result, row_steps, row_hits = score_next_token(model, np.asarray(x_test), tokens["length"].to_numpy())
    write_json(RunFiles.METRICS.of_step(out_dir), result)
    predictions = pd.DataFrame(
        {
            "row": np.arange(len(tokens), dtype=np.int64),
            "id": tokens["id"],
            "steps": row_steps,
            "correct": row_hits,
            "accuracy": np.divide(row_hits, row_steps, out=np.full(len(row_steps), np.nan), where=row_steps > 0).round(6),
            "length": tokens["length"],
        }
    )
    _write_parquet(out_dir / PREDICTIONS_FILE, predictions)
    return {k: result["test"][k] for k in ("accuracy", "loss", "f1", "roc_auc", "n")}


def _write_parquet(target: Path, frame: pd.DataFrame) -> None:
    with atomic_path(target) as tmp:
        frame.to_parquet(tmp, index=False)


def most_confident_mistakes(predictions: pd.DataFrame, per_class: int = MISTAKES_PER_CLASS) -> pd.DataFrame:
    """Per true label, the per_class misclassified rows with the highest predicted probability (ties: the earlier row)."""
    wrong = predictions[predictions["label"] != predictions["predicted"]]
    ranked = wrong.sort_values(["label", "probability", "row"], ascending=[True, False, True], kind="stable")
    return ranked.groupby("label", sort=True).head(per_class).reset_index(drop=True)


def decode_tokens(ids: Any, vocabulary: dict[str, Any]) -> str:
    """Token ids (encode's, start id first) as text: the review in the model's tokens; OOV_MARK for an unknown token."""
    tokens, index_from = vocabulary["tokens"], int(vocabulary.get("index_from", INDEX_FROM))
    pieces = []
    for token_id in ids:
        token_id = int(token_id)
        if token_id in (PAD, START):
            continue
        place = token_id - index_from
        pieces.append(tokens[place] if token_id != OOV and 0 <= place < len(tokens) else OOV_MARK)
    tokenizer = vocabulary.get("tokenizer", "word")
    if tokenizer == "char":
        return "".join(pieces)
    if tokenizer == "subword":  # SentencePiece marks a word's start with U+2581
        return "".join(pieces).replace("\u2581", " ").strip()
    return " ".join(pieces)


def mistake_texts(encode_dir: Path, rows: list[int]) -> list[str | None]:
    """The decoded text of each of rows of the test split; None for all when encode recorded no token ids."""
    import pyarrow.parquet as pq

    tokens_file = Path(encode_dir) / "tokens_test.parquet"
    if not rows or "token_ids" not in pq.read_schema(tokens_file).names:
        return [None] * len(rows)
    ids = pq.read_table(tokens_file, columns=["token_ids"]).column("token_ids").take(rows).to_pylist()
    vocabulary = read_json(RunFiles.VOCABULARY.of_step(encode_dir))
    return [decode_tokens(row_ids, vocabulary) for row_ids in ids]


def written_texts(ingest_dir: Path | None, rows: list[int]) -> list[str | None]:
    """The texts as written of rows of ingest's test split; None for all without an ingest folder (a step evaluated alone)."""
    import pyarrow.parquet as pq

    test_texts = RunFiles.TEST_TEXTS.of_step(ingest_dir) if ingest_dir is not None else None
    if not rows or test_texts is None or not test_texts.is_file():
        return [None] * len(rows)
    return pq.read_table(test_texts, columns=["text"]).column("text").take(rows).to_pylist()


def write_mistakes(predictions: pd.DataFrame, encode_dir: Path, out_dir: Path, ingest_dir: Path | None = None) -> None:
    """mistakes.parquet: most_confident_mistakes with each review as written and in the model's tokens (the module docstring)."""
    mistakes = most_confident_mistakes(predictions)
    rows = mistakes["row"].tolist()
    mistakes["text"] = pd.Series(written_texts(ingest_dir, rows), dtype="string")
    mistakes["tokens"] = pd.Series(mistake_texts(encode_dir, rows), dtype="string")
    _write_parquet(out_dir / MISTAKES_FILE, mistakes)


def _with_channels(model: Any) -> Any:
    """The classifier itself, or, where a bag of n-grams (model.ngrams) adds its logits to the recurrent ones, a model
    of its output and the two logits apart: what it reads with its bag left out, and what the bag alone reads."""
    import keras

    from tasks.model_layers import NgramBag

    bags = [layer for layer in model.layers if isinstance(layer, NgramBag)]
    if not bags or "recurrent_logits" not in {layer.name for layer in model.layers}:
        return model
    return keras.Model(model.inputs, [model.outputs[0], model.get_layer("recurrent_logits").output, bags[0].output],
                       name=f"{model.name}_apart")


def _outputs(got: Any) -> list[Any]:
    """A model's outputs as a list, one output or several."""
    return list(got) if isinstance(got, (list, tuple)) else [got]


def _activated(logits: Any) -> np.ndarray:
    """Logits as probabilities per class, as the model's output activation makes them (sigmoid for one column)."""
    from scipy.special import expit, softmax

    raw = np.asarray(logits, dtype=np.float64)
    return class_probabilities(expit(raw)) if raw.ndim == 1 or raw.shape[1] == 1 else softmax(raw, axis=1)


def evaluate_model(encode_dir: Path, train_dir: Path, out_dir: Path, ingest_dir: Path | None = None,
                   baseline_dir: Path | None = None) -> dict[str, Any]:
    import keras

    import tasks.models  # noqa: F401  (registers the custom layers before loading)

    training = RunFiles.TRAINING.of_step(train_dir)
    if training.is_file() and read_json(training).get("task") == "next_token":  # runs from before the setting are classifiers
        model = keras.models.load_model(RunFiles.MODEL.of_step(train_dir), compile=False)
        return _evaluate_next_token(model, encode_dir, out_dir)
    model = keras.models.load_model(RunFiles.MODEL.of_step(train_dir))
    x_test, y_test = load_arrays(encode_dir, "test")
    labels = read_json(RunFiles.LABELS.of_step(encode_dir))
    tokens = pd.read_parquet(Path(encode_dir) / "tokens_test.parquet", columns=["id", "length"])
    members = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    # One pass: the model's output; each member's (train.members > 1), and, where a model has a bag of n-grams, its
    # recurrent and bag logits apart (_with_channels).
    readers = [_with_channels(member) for member in members]
    probe = keras.Model(model.inputs, [model.outputs[0], *(tensor for reader in readers for tensor in _outputs(reader(model.inputs[0])))]
                        ) if members else _with_channels(model)
    outputs = _outputs(predict_outputs(probe, x_test))
    probabilities = class_probabilities(outputs.pop(0))
    truth, lengths = np.asarray(y_test), tokens["length"].to_numpy()
    result = score(probabilities, truth, lengths, labels)

    def accuracy(chosen: np.ndarray) -> float:
        return float((chosen.argmax(axis=1) == truth).mean())

    channels: list[tuple[np.ndarray, np.ndarray]] = []  # per reader with a bag: (recurrent alone, bag alone) probabilities
    if members:
        result["members"] = []
        for member, reader in zip(members, readers):
            alone = score(class_probabilities(outputs.pop(0)), truth, lengths, labels)["test"]
            entry = {"name": member.name, **{k: alone[k] for k in ("accuracy", "loss", "f1", "roc_auc")}}
            if len(reader.outputs) == 3:  # a member with a bag
                channels.append((_activated(outputs.pop(0)), _activated(outputs.pop(0))))
                entry.update(recurrent_accuracy=accuracy(channels[-1][0]), bag_accuracy=accuracy(channels[-1][1]))
            result["members"].append(entry)
    elif outputs:
        channels.append((_activated(outputs[0]), _activated(outputs[1])))
    if channels and len(channels) == max(1, len(members)):  # each reader with its bag's logits left out, then its bag alone
        result["channels"] = {"recurrent_accuracy": accuracy(np.mean([r for r, _ in channels], axis=0)),
                              "bag_accuracy": accuracy(np.mean([b for _, b in channels], axis=0))}
    baseline = read_baseline(baseline_dir)
    if baseline is not None:  # the linear baseline on the same test split, and this model's difference from it
        result["baseline"] = compared(result["test"], baseline)
    write_json(RunFiles.METRICS.of_step(out_dir), result)
    predictions = pd.DataFrame(
        {
            "row": np.arange(len(tokens), dtype=np.int64),
            "id": tokens["id"],
            "label": y_test,
            "predicted": probabilities.argmax(axis=1),
            "probability": probabilities.max(axis=1).round(6),
            "length": tokens["length"],
        }
    )
    _write_parquet(out_dir / PREDICTIONS_FILE, predictions)
    write_mistakes(predictions, encode_dir, out_dir, ingest_dir)
    if ingest_dir is not None:  # what the model was trained on, for scoring's drift checks (tasks/reference.py)
        from tasks.reference import build_reference, write_reference

        write_reference(out_dir, build_reference(encode_dir, ingest_dir, predictions["predicted"].to_numpy(), labels))
    return {k: result["test"][k] for k in ("accuracy", "loss", "f1", "roc_auc", "n")}


@step_task("evaluate")
def evaluate_task(*, ingest: StepOutput, encode: StepOutput, train: StepOutput, baseline: StepOutput | None, slot: CacheSlot) -> StepOutput:
    """baseline: None when a run from before the baseline step is evaluated again."""
    return produce_step(slot, lambda out: evaluate_model(
        encode.path, train.path, out, ingest.path, baseline.path if baseline is not None else None))
