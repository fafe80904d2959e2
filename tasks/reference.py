"""The reference a model carries: what the data it was trained on looked like, for drift checks when it scores.

Evaluate writes evaluate/reference.json into every classifier run, so a champion carries it:

    tokens             quantiles (p10, p50, p90) of the train split's tokens per review, in the model's own tokens
    kept_share         median share of a review's non-space characters that end up in tokens (train split)
    unknown_share      mean share of a review's tokens outside the vocabulary (train split, reviews with tokens)
    class_balance      share of each label in the train split
    predicted_shares   share of each predicted label on the test split

Scoring measures its inputs with the very same functions (row_figures over the vocabulary's ids_many, as
encode and predict tokenise) and compares them with these figures (tasks/drift.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from tasks.encode import OOV, Vocabulary
from tasks.store import STREAM_ROWS, iter_parquet, read_json, write_json
from tasks.text import kept_shares

REFERENCE_FILE = "reference.json"  # in the evaluate folder: <run>/evaluate/reference.json
REFERENCE_FORMAT = 1
QUANTILES = (0.1, 0.5, 0.9)


def quantile_name(q: float) -> str:
    return f"p{round(q * 100)}"


def row_figures(vocabulary: Vocabulary, cleaned: Sequence[str]) -> pd.DataFrame:
    """Per text (cleaned as ingest cleans): tokens (the model's tokens found), unknown_share (of those, outside the
    vocabulary; nan for a text with none) and kept_share (of its non-space characters, in tokens; nan when blank)."""
    ids, offsets = vocabulary.ids_many(list(cleaned))
    tokens = np.diff(offsets).astype(np.int64)
    parents = np.repeat(np.arange(len(tokens)), tokens)
    unknown = np.bincount(parents, weights=(np.asarray(ids) == OOV), minlength=len(tokens))
    with np.errstate(invalid="ignore", divide="ignore"):
        unknown_share = np.where(tokens > 0, unknown / np.maximum(tokens, 1), np.nan)
    kept = kept_shares(list(cleaned), vocabulary.lowercase, vocabulary.tokenizer)
    return pd.DataFrame({"tokens": tokens, "unknown_share": unknown_share.astype(np.float32), "kept_share": kept.astype(np.float32)})


def summarize(figures: pd.DataFrame) -> dict[str, Any]:
    """The reference's text figures from per-text figures: token quantiles, median kept share, mean unknown share."""
    tokens = figures["tokens"].to_numpy(dtype=np.float64)
    kept = figures["kept_share"].dropna()
    unknown = figures["unknown_share"].dropna()
    return {
        "tokens": {quantile_name(q): float(np.quantile(tokens, q)) if len(tokens) else None for q in QUANTILES},
        "kept_share": float(kept.median()) if len(kept) else None,
        "unknown_share": float(unknown.mean()) if len(unknown) else None,
    }


def shares(indices: np.ndarray, labels: Sequence[str]) -> dict[str, float]:
    """Share of each label among class indices (0 for a label that never occurs)."""
    counts = np.bincount(np.asarray(indices, dtype=np.int64), minlength=len(labels))
    total = max(int(counts.sum()), 1)
    return {str(label): float(counts[i] / total) for i, label in enumerate(labels)}


def _train_figures(vocabulary: Vocabulary, batches: Iterable[pd.DataFrame]) -> pd.DataFrame:
    # ingest's texts are cleaned already: encode reads them as they are, and so does this.
    parts = [row_figures(vocabulary, batch["text"].fillna("").astype(str).tolist()) for batch in batches]
    return pd.concat(parts, ignore_index=True) if parts else row_figures(vocabulary, [])


def build_reference(encode_dir: Path, ingest_dir: Path, predicted: np.ndarray, labels: list[str], batch_rows: int = STREAM_ROWS) -> dict[str, Any]:
    """The reference of a run: the train split's texts (ingest's train.parquet, read batch_rows at a time) measured
    through the run's vocabulary, the train split's labels (encode's tokens_train.parquet, as trained on), and the
    predicted shares of the test split (predicted: class indices)."""
    vocabulary = Vocabulary.load(Path(encode_dir) / "vocab.json")
    figures = _train_figures(vocabulary, iter_parquet(Path(ingest_dir) / "train.parquet", ["text"], batch_rows))
    trained = np.concatenate([b["label"].to_numpy() for b in iter_parquet(Path(encode_dir) / "tokens_train.parquet", ["label"], batch_rows)])
    return {
        "format": REFERENCE_FORMAT,
        "tokenizer": vocabulary.tokenizer,
        "n_train": int(len(figures)),
        "n_test": int(len(predicted)),
        **summarize(figures),
        "class_balance": shares(trained, labels),
        "predicted_shares": shares(predicted, labels),
    }


def write_reference(out_dir: Path, reference: dict[str, Any]) -> Path:
    return write_json(Path(out_dir) / REFERENCE_FILE, reference)


def read_reference(run_folder: Path) -> dict[str, Any] | None:
    """A run's reference, None for a run made before references (or one whose file is gone)."""
    path = Path(run_folder) / "evaluate" / REFERENCE_FILE
    if not path.is_file():
        return None
    reference = read_json(path)
    return reference if isinstance(reference, dict) and reference.get("format") == REFERENCE_FORMAT else None
