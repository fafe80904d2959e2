"""The test figures a promotion can be judged on, computed one way for the model and for its linear baseline."""

from __future__ import annotations

from typing import Any

import numpy as np


def headline_metrics(probabilities: np.ndarray, y_true: np.ndarray) -> dict[str, Any]:
    """metrics.json's `test` numbers that promote.metric can name, for the model (tasks/evaluate.py) and the baseline.

    Two classes: precision, recall and F1 of the second class (ingest.json's order: pos for IMDb). More: their
    macro averages, and ROC AUC one-vs-rest macro. ROC AUC is None when the split lacks a class.
    """
    from sklearn import metrics as skm  # here, not at import: a flow whose evaluate is cached never needs it
    y_pred = probabilities.argmax(axis=1)
    n_classes = probabilities.shape[1]
    average = "binary" if n_classes == 2 else "macro"
    clipped = np.clip(probabilities, 1e-7, 1 - 1e-7)
    clipped /= clipped.sum(axis=1, keepdims=True)  # float32 softmax rows drift from 1 in float64
    test: dict[str, Any] = {
        "n": int(len(y_true)),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "loss": float(skm.log_loss(y_true, clipped, labels=list(range(n_classes)))),
        "precision": float(skm.precision_score(y_true, y_pred, average=average, zero_division=0)),
        "recall": float(skm.recall_score(y_true, y_pred, average=average, zero_division=0)),
        "f1": float(skm.f1_score(y_true, y_pred, average=average, zero_division=0)),
        "roc_auc": None,
    }
    if len(np.unique(y_true)) == n_classes:
        test["roc_auc"] = float(skm.roc_auc_score(y_true, probabilities[:, 1]) if n_classes == 2
                                else skm.roc_auc_score(y_true, probabilities, multi_class="ovr"))
    return test
