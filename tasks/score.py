"""Score: label every text of a table with a model's champion, in batches, and measure it for drift checks.

The input is opened through open_scoring_input (a stream of batches and a fingerprint of its bytes); each
batch goes through predict's own path (tasks.predict.predict_texts: the run's Vocabulary.encode_raw, the
cleaning and tokenizer training used, then train/model.keras) and is appended to predictions.parquet with a
ParquetWriter, so a million-row input is never in memory whole: what is kept across batches is a few numbers
per row (figures.parquet: tokens, unknown_share, kept_share, predicted), which the drift check reads.

Two cached steps, declared in tasks/steps.py's SCORE_STEP_TABLE and cached like the training steps
(tasks/caching.py): score_label (key: the input's fingerprint, the champion's run and model sha256, the
score section) and score_drift (key: score_label's outputs, the champion's reference, the score section).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from tasks.caching import CacheSlot, produce_step, step_task
from tasks.score_config import ScoreConfig
from tasks.ingest.base import IngestError
from tasks.store import StepOutput, atomic_path, iter_parquet, read_json, sha256_file

PREDICTIONS_FILE = "predictions.parquet"
FIGURES_FILE = "figures.parquet"


class ScoreInputError(IngestError):
    """An input to score that the user must fix; the message is one sentence naming the file and the way out.
    An IngestError, so that ingest's retry condition (retry_unless_bad_input) does not retry it."""


@dataclass(frozen=True)
class ScoringInput:
    """An opened input: where it is read from, its format, the text column, and a fingerprint of its content."""

    location: str  # as the user gave it
    path: Path | str  # the local file read, or the URL streamed
    fmt: str
    text_column: str
    fingerprint: str

    def batches(self, batch_rows: int) -> Iterator[pd.DataFrame]:
        """The text column in batches of at most batch_rows rows (CSV and TSV: pyarrow's blocks), in file order."""
        from tasks.ingest.table import iter_table

        try:
            for frame in iter_table(self.path, self.fmt, {"text_column": self.text_column}, batch_rows):
                for start in range(0, len(frame), batch_rows):
                    yield frame.iloc[start : start + batch_rows]
        except IngestError as error:  # ingest's sentences name its own key; score's is --text-column
            message = str(error).replace(" for data.text_column", "").replace("--set data.text_column=", "--text-column ")
            raise ScoreInputError(message.replace("point data.text_column at", "give --text-column")) from None

    def as_key(self) -> dict[str, str]:
        """What the score_label cache key holds of the input: its content, not where it lies."""
        return {"fingerprint": self.fingerprint, "format": self.fmt, "text_column": self.text_column}


def open_scoring_input(location: str, text_column: str = "text") -> ScoringInput:
    """The input to score, as a stream and a fingerprint: a .csv, .tsv, .parquet or .jsonl file, local or by URL
    (s3://, gs://, https://: tasks/remote_input.py streams it and fingerprints it by version/ETag and size)."""
    from tasks.ingest.table import table_format
    from tasks.remote_input import as_location, check_input, fingerprint

    where = as_location(location)
    try:
        fmt = table_format(where)
    except IngestError as error:
        raise ScoreInputError(str(error).replace("source=table", "rnnflow score")) from None
    if isinstance(where, str):  # a URL: one sentence when it is missing or unreadable, read where it lies
        try:
            check_input(where, key="--input")
            return ScoringInput(location=where, path=where, fmt=fmt, text_column=text_column, fingerprint=fingerprint(where, key="--input"))
        except IngestError as error:
            raise ScoreInputError(str(error)) from None
    path = where.expanduser()
    if not path.is_file():
        raise ScoreInputError(f"Input {location} does not exist: check the path given to --input.")
    # As ingest fingerprints a table (tasks/ingest/table.py): the sha256 of its bytes.
    return ScoringInput(location=str(location), path=path.resolve(), fmt=fmt, text_column=text_column, fingerprint=sha256_file(path))


def champion_model_sha256(run_folder: Path) -> str:
    """The sha256 of a run's train/model.keras as its manifest recorded it (checked against the file when loaded)."""
    manifest = read_json(Path(run_folder) / "manifest.json")
    recorded = ((manifest.get("steps") or {}).get("train") or {}).get("outputs") or {}
    return recorded.get("model.keras") or sha256_file(Path(run_folder) / "train" / "model.keras")


# --------------------------------------------------------------------------- labelling, batch by batch


def _batch_frames(predictor: Any, texts: list[str], rows: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(predictions, figures) of one batch: predict's rows without the text (the row key joins them back)."""
    from tasks.predict import predict_texts
    from tasks.text import clean_text, kept_shares

    labelled = predict_texts(predictor, texts, rows=rows.tolist())
    vocabulary = predictor.vocabulary
    cleaned = [clean_text(text, vocabulary.strip_html) for text in texts]
    tokens = labelled["tokens"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        unknown = np.where(tokens > 0, labelled["unknown_tokens"].to_numpy() / np.maximum(tokens, 1), np.nan)
    figures = pd.DataFrame({
        "row": labelled["row"].to_numpy(),
        "tokens": tokens,
        "unknown_share": unknown.astype(np.float32),
        "kept_share": kept_shares(cleaned, vocabulary.lowercase, vocabulary.tokenizer).astype(np.float32),
        "predicted": np.array([predictor.labels.index(label) for label in labelled["label"]], dtype=np.int16),
    })
    return labelled.drop(columns=["text"]), figures


def label_input(run_folder: Path, source: ScoringInput, batch_rows: int, out_dir: Path) -> dict[str, Any]:
    """predictions.parquet and figures.parquet in out_dir, written batch by batch; returns the counts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.predict import load_predictor

    predictor = load_predictor(run_folder)
    rows_done, empty, counts = 0, 0, np.zeros(len(predictor.labels), dtype=np.int64)
    with atomic_path(out_dir / PREDICTIONS_FILE) as predictions_tmp, atomic_path(out_dir / FIGURES_FILE) as figures_tmp:
        writers: list[Any] = []
        try:
            for batch in source.batches(batch_rows):
                texts = batch[source.text_column].fillna("").astype(str).tolist()  # a missing text is an empty one, kept
                rows = np.arange(rows_done + 1, rows_done + len(texts) + 1, dtype=np.int64)
                labelled, figures = _batch_frames(predictor, texts, rows)
                tables = [pa.Table.from_pandas(labelled, preserve_index=False), pa.Table.from_pandas(figures, preserve_index=False)]
                if not writers:
                    writers = [pq.ParquetWriter(predictions_tmp, tables[0].schema), pq.ParquetWriter(figures_tmp, tables[1].schema)]
                for writer, table in zip(writers, tables):
                    writer.write_table(table)
                rows_done += len(texts)
                empty += int(labelled["empty"].sum())
                counts += np.bincount(figures["predicted"].to_numpy(), minlength=len(counts))
        finally:
            for writer in writers:
                writer.close()
        if not rows_done:
            raise ScoreInputError(f"Input {source.location} holds no rows: give a table with at least one text.")
    return {"rows": rows_done, "empty": empty, "labels": predictor.labels,
            "label_counts": {label: int(n) for label, n in zip(predictor.labels, counts)}}


def read_figures(label_dir: Path, labels: list[str], batch_rows: int) -> pd.DataFrame:
    """The drift suite's frame from figures.parquet, read in batches (a few numbers a row)."""
    from tasks.drift import figure_frame

    parts = [figure_frame(part, part["predicted"].to_numpy(), labels) for part in iter_parquet(Path(label_dir) / FIGURES_FILE, batch_rows=batch_rows)]
    return pd.concat(parts, ignore_index=True)


# --------------------------------------------------------------------------- the cached steps


@step_task("score_label")
def score_label_task(score: ScoreConfig, *, source: dict, champion: dict, slot: CacheSlot) -> StepOutput:
    """source: ScoringInput.as_key() plus "location" and "path" (left out of the key); champion: run_id, folder, model_sha256."""
    from tasks.remote_input import as_location

    opened = ScoringInput(location=source["location"], path=as_location(source["path"]), fmt=source["format"],
                          text_column=source["text_column"], fingerprint=source["fingerprint"])
    return produce_step(slot, lambda out: label_input(Path(champion["folder"]), opened, score.batch_rows, out))


@step_task("score_drift")
def score_drift_task(score: ScoreConfig, *, score_label: StepOutput, reference: dict | None, labels: list, slot: CacheSlot) -> StepOutput:
    from tasks.drift import check_drift

    def work(out: Path) -> dict[str, Any]:
        report = check_drift(read_figures(score_label.path, labels, score.batch_rows), labels, reference, score, out)
        return {"reference": report["reference"], "passed": report["passed"], "failed": report["failed"],
                "figures": [{k: row[k] for k in ("figure", "value", "reference", "bound", "passed")} for row in report["figures"]]}

    return produce_step(slot, work)
