"""Predict: labels and probabilities for new texts, from a finished run's vocabulary and model.

New texts take the path training texts took: the run's own Vocabulary.encode_raw, which repeats
ingest's cleaning (recorded in vocab.json) and then encodes. Nothing here cleans, tokenizes or
pads on its own, so serving cannot drift from training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from tasks.encode import OOV, Vocabulary
from tasks.errors import RnnflowError
from tasks.evaluate import predict_probabilities
from tasks.input_files import csv_delimiter
from tasks.provenance import rerunnable_steps
from tasks.store import RunFiles, atomic_path, read_json, require_run_files

INPUT_SUFFIXES = (".txt", ".csv", ".parquet")
OUTPUT_SUFFIXES = (".parquet", ".csv")


class PredictionInputError(RnnflowError, ValueError):
    """Input to predict that the user must fix; the message is one sentence naming the file and the way out."""


@dataclass(frozen=True)
class Predictor:
    """What predicting needs from a run: its encoder, its label names and its trained model."""

    run_folder: Path
    vocabulary: Vocabulary
    labels: list[str]
    model: Any  # keras.Model


# Files a loader reads when they are there (a subword vocabulary's model), checked like the needed ones.
def load_run_model(path: Path) -> Any:
    """A run's model.keras, with rnnflow's custom layers registered; Keras is imported only here."""
    import keras

    import tasks.models  # noqa: F401  (registers the custom layers before loading)

    return keras.models.load_model(path, compile=False)


def load_predictor(run_folder: Path) -> Predictor:
    """The run's vocabulary and cleaning (encode/vocab.json), labels (encode/labels.json), model (train/model.keras)."""
    run_folder = Path(run_folder)
    training = RunFiles.TRAINING.of_run(run_folder)
    needed = require_run_files(run_folder, RunFiles.VOCABULARY, RunFiles.LABELS, RunFiles.MODEL,
                               optional=(RunFiles.TRAINING, RunFiles.SUBWORD_MODEL), rerunnable=rerunnable_steps())
    if training.is_file() and read_json(training).get("task") == "next_token":
        raise PredictionInputError(
            f"Run {run_folder.name} holds a next_token model, which continues texts rather than labelling them: "
            f"use 'rnnflow generate --run {run_folder.name} --prompt TEXT', or give --run a classifier run."
        )
    return Predictor(
        run_folder=run_folder,
        vocabulary=Vocabulary.load(needed[0]),
        labels=list(read_json(needed[1])),
        model=load_run_model(needed[2]),
    )


def encode_texts(predictor: Predictor, texts: Sequence[str]) -> tuple[np.ndarray, list[list[int]]]:
    """Raw texts -> (padded ids, unpadded ids), exactly as ingest cleaned and encode encoded the training reviews."""
    return predictor.vocabulary.encode_raw(texts)


def predict_texts(predictor: Predictor, texts: Sequence[str], batch_size: int = 256, rows: Sequence[int] | None = None) -> pd.DataFrame:
    """One row per text, in order: row (the text's key in the input: rows, else 1, 2, ...), text, label, probability
    (of that label), probability_<label> per class, tokens (words found), unknown_tokens (words outside the
    vocabulary), truncated (longer than max_len), empty (no tokens at all: the label is the model's guess for an
    empty review, as train/model_text.keras gives it, kept so that every input row has its prediction row)."""
    texts = [str(text) for text in texts]
    if rows is not None and len(rows) != len(texts):
        raise ValueError(f"{len(rows)} row keys for {len(texts)} texts")
    if texts:
        padded, sequences = encode_texts(predictor, texts)
        probabilities = predict_probabilities(predictor.model, padded, batch_size=batch_size)
    else:  # Keras cannot predict on zero rows; an empty table keeps the columns and their types
        sequences, probabilities = [], np.zeros((0, len(predictor.labels)))
    best = probabilities.argmax(axis=1)
    frame = pd.DataFrame({"row": np.array(rows if rows is not None else range(1, len(texts) + 1), dtype=np.int64)})
    frame["text"] = pd.Series(texts, dtype="object")
    frame["label"] = pd.Series([predictor.labels[i] for i in best], dtype="object")
    frame["probability"] = probabilities.max(axis=1)
    for index, name in enumerate(predictor.labels):
        frame[f"probability_{name}"] = probabilities[:, index]
    # Each sequence starts with the start id, which is not a word.
    frame["tokens"] = np.array([len(ids) - 1 for ids in sequences], dtype=np.int64)
    frame["unknown_tokens"] = np.array([sum(1 for i in ids if i == OOV) for ids in sequences], dtype=np.int64)
    frame["truncated"] = np.array([len(ids) > predictor.vocabulary.max_len for ids in sequences], dtype=bool)
    frame["empty"] = frame["tokens"].to_numpy() == 0
    return frame


# --------------------------------------------------------------------------- files in and out


def read_texts(path: Path, text_column: str = "text") -> list[str]:
    """The texts of an input file, in order (read_rows without the row keys)."""
    return read_rows(path, text_column)[1]


def read_rows(path: Path, text_column: str = "text") -> tuple[list[int], list[str]]:
    """(row keys, texts) of a .txt file (one text per line; blank lines skipped, each text keyed by its line number)
    or of the text column of a .csv or .parquet file (every row, blank texts too, keyed by its data row from 1, the
    header not counted): a prediction can always be joined back to the row it came from."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in INPUT_SUFFIXES:
        raise PredictionInputError(f"Input {path} is not a .txt, .csv or .parquet file: give one of those to --input.")
    if not path.is_file():
        raise PredictionInputError(f"Input {path} does not exist: check the path given to --input.")
    try:
        if suffix == ".txt":
            lines = path.read_text(encoding="utf-8-sig").splitlines()
            rows = [number for number, line in enumerate(lines, start=1) if line.strip()]
            texts = [lines[number - 1] for number in rows]
        else:
            texts = _csv_column(path, text_column) if suffix == ".csv" else _parquet_column(path, text_column)
            rows = list(range(1, len(texts) + 1))
    except UnicodeDecodeError as error:
        raise PredictionInputError(f"Input {path} is not valid UTF-8 (byte {error.start}): re-save it as UTF-8.") from None
    if not texts:
        raise PredictionInputError(f"Input {path} holds no texts: give a file with at least one review.")
    return rows, texts


def _missing_column(path: Path, column: str, columns: Sequence[str]) -> PredictionInputError:
    listed = ", ".join(repr(str(c)) for c in columns) or "none"
    return PredictionInputError(f"Input {path} has no column {column!r} (its columns: {listed}): name the text column with --text-column.")


def _csv_column(path: Path, column: str) -> list[str]:
    import csv

    try:
        # Empty cells stay empty texts (keep_default_na=False): a review reading "NA" is still a review. Blank lines stay
        # rows (skip_blank_lines=False): in a one-column file a line of spaces is a text, and skipping it shifted every
        # later prediction off its input row.
        frame = pd.read_csv(path, sep=csv_delimiter(path, "csv"), dtype=str, keep_default_na=False, skip_blank_lines=False,
                            encoding="utf-8-sig")  # -sig: a BOM is not part of a name
    except (pd.errors.ParserError, pd.errors.EmptyDataError, csv.Error) as error:
        raise PredictionInputError(f"Input {path} could not be read as CSV ({str(error).strip().splitlines()[0]}): check its quoting and separators.") from None
    if column not in frame.columns:
        raise _missing_column(path, column, list(frame.columns))
    return frame[column].tolist()


def _parquet_column(path: Path, column: str) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as error:
        raise PredictionInputError(f"Input {path} could not be read as Parquet ({error}): check that the file is complete.") from None
    if column not in schema.names:
        raise _missing_column(path, column, schema.names)
    field_type = schema.field(column).type
    if not (pa.types.is_string(field_type) or pa.types.is_large_string(field_type)):
        raise PredictionInputError(f"Column {column!r} of {path} holds {field_type}, not text: name the text column with --text-column.")
    values = pq.read_table(path, columns=[column]).column(column).to_pylist()
    blanks = [row for row, value in enumerate(values, start=1) if value is None]
    if blanks:
        raise PredictionInputError(
            f"Column {column!r} of {path} is empty in {len(blanks)} row(s), first row {blanks[0]}: fill or drop those rows."
        )
    return values


def check_output_path(path: Path) -> Path:
    """The --output path if its suffix is one we write; checked before any work is done."""
    path = Path(path)
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise PredictionInputError(f"Output {path} must end in .parquet or .csv: rnnflow writes predictions in one of those.")
    if path.is_dir():
        raise PredictionInputError(f"Output {path} is a folder: give --output a file path, e.g. {path / 'predictions'}{path.suffix}.")
    above = next((parent for parent in path.parents if parent.exists()), None)
    if above is not None and not above.is_dir():
        raise PredictionInputError(f"Output {path} cannot be written: {above} is a file, not a folder; choose another path for --output.")
    return path


def write_predictions(frame: pd.DataFrame, path: Path) -> Path:
    """Predictions as Parquet or CSV (by suffix), renamed into place only when complete."""
    path = check_output_path(path)
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)
    return path


def format_predictions(frame: pd.DataFrame, max_rows: int = 20, text_width: int = 60) -> str:
    """A plain table of row, label, probability and the start of each text, for a terminal."""
    label_width = max([5, *(len(str(label)) for label in frame["label"])])
    row_width = max([3, *(len(str(row)) for row in frame["row"])])
    lines = [f"{'row':>{row_width}}  {'label':<{label_width}}  {'probability':>11}  text"]
    for row in frame.head(max_rows).itertuples(index=False):
        text = " ".join(str(row.text).split())
        shown = text if len(text) <= text_width else text[: text_width - 3] + "..."
        if row.empty:
            shown = f"{shown} (no words: the model's guess for an empty review)".lstrip()
        lines.append(f"{row.row:>{row_width}}  {row.label:<{label_width}}  {row.probability:>11.4f}  {shown}")
    if len(frame) > max_rows:
        lines.append(f"... {len(frame) - max_rows} more; write them all with --output FILE.parquet or FILE.csv")
    return "\n".join(lines)
