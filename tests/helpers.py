"""What several test modules share, in one place: the tiny configuration, made-up inputs, and folder helpers.

tests/conftest.py builds its fixtures from these; a test module imports them from here (`from tests.helpers
import ...`), never from another test module.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import shutil
import tarfile
from pathlib import Path

import numpy as np

# --------------------------------------------------------------------------- the tiny configuration

# Every test that wants a real run, small and quick, starts from the demo preset and these overrides.
# TINY_MODEL is the part that does not depend on the data source (the multi-class table reuses it).
TINY_CORPUS = ["data.synthetic_reviews=160"]
TINY_MODEL = [
    "encode.num_words=200",
    "encode.max_len=40",
    "model.units=8",
    "model.embedding_dim=8",
    "train.epochs=2",
    "train.learning_rate=0.01",
]
TINY = [*TINY_CORPUS, *TINY_MODEL]
TINY_PRESET = "demo"
# The id of the one finished tiny run the session shares (conftest.py's tiny_run).
TINY_RUN_ID = "20260101T000000000Z-tiny"


def tiny_config(*extra: str):
    """The tiny run's configuration, with extra --set items after TINY's (a later item wins)."""
    from tasks.config import load_config

    return load_config(TINY_PRESET, overrides=[*TINY, *extra])


def tiny_cli_args(*extra: str) -> list[str]:
    """`rnnflow run` arguments for the tiny configuration: --preset demo --set ... (extra items last, so they win)."""
    args = ["--preset", TINY_PRESET]
    for item in [*TINY, *extra]:
        args += ["--set", item]
    return args


# --------------------------------------------------------------------------- folders


def tree_digest(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under folder (folders as 'dir'): equal digests, equal trees."""
    found = {}
    for path in sorted(Path(folder).rglob("*")):
        name = str(path.relative_to(folder))
        if path.is_symlink():
            found[name] = f"link {path.readlink()}"
        elif path.is_dir():
            found[name] = "dir"
        else:
            found[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def copy_root(source: Path, target: Path) -> Path:
    """A private copy of an artifacts root: real copies, not hard links, so damaging the copy leaves the source whole."""
    shutil.copytree(source, target, symlinks=True)
    return target


def manifest(folder: Path) -> dict:
    return json.loads((Path(folder) / "manifest.json").read_text())


def step_statuses(folder: str | Path) -> dict[str, str]:
    return {name: entry["status"] for name, entry in manifest(Path(folder))["steps"].items()}


# --------------------------------------------------------------------------- made-up inputs


def make_imdb_archive(path: Path, per_class: int = 30, seed: int = 0) -> Path:
    """A .tar.gz in the aclImdb layout, with review-like texts and <br /> tags, like the real archive."""
    from tasks.synthetic import synthetic_reviews

    with tarfile.open(path, "w:gz") as archive:
        for split_index, split in enumerate(("train", "test")):
            frame = synthetic_reviews(per_class * 4, seed=seed + split_index)
            for polarity, label in (("neg", 0), ("pos", 1)):
                rows = frame[frame["label"] == label].head(per_class)
                for review_id, (text, rating) in enumerate(zip(rows["text"], rows["rating"])):
                    data = (text + f" review {split} {polarity} {review_id}.<br /><br />The end.").encode()
                    info = tarfile.TarInfo(f"aclImdb/{split}/{polarity}/{review_id}_{rating}.txt")
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
        readme = b"the dataset's own description"
        info = tarfile.TarInfo("aclImdb/README")
        info.size = len(readme)
        archive.addfile(info, io.BytesIO(readme))
    return path


def toy_encoding(folder: Path, *, n_train: int = 256, n_val: int = 64, max_len: int = 12, test: bool = False) -> Path:
    """A trivially learnable encode folder: positive rows use ids 3-5, negative rows ids 6-8, post-padded.
    test: also a test split of n_val rows, with the tokens_test.parquet evaluate reads lengths from."""
    from tasks.encode import PAD, START, Vocabulary
    from tasks.store import write_json

    rng = np.random.default_rng(1)
    folder.mkdir()
    for split, n in (("train", n_train), ("val", n_val), *((("test", n_val),) if test else ())):
        y = (np.arange(n) % 2).astype(np.int32)
        x = np.full((n, max_len), PAD, np.int32)
        for i, label in enumerate(y):
            length = int(rng.integers(3, max_len + 1))
            x[i, 0] = START
            x[i, 1:length] = rng.integers(3, 6, size=length - 1) if label else rng.integers(6, 9, size=length - 1)
        np.save(folder / f"X_{split}.npy", x)
        np.save(folder / f"y_{split}.npy", y)
    if test:
        import pandas as pd

        pd.DataFrame({"id": [f"r{i}" for i in range(n_val)], "length": np.count_nonzero(x, axis=1)}).to_parquet(folder / "tokens_test.parquet")
    write_json(folder / "encode.json", {"num_words": 9, "max_len": max_len, "padding": "post"})
    write_json(folder / "labels.json", ["neg", "pos"])
    Vocabulary([f"w{i}" for i in range(6)], max_len=max_len, padding="post", truncating="pre").save(folder / "vocab.json")
    return folder


# --------------------------------------------------------------------------- a report's upstream, made up

MODEL_SUMMARY = (
    'Model: "imdb_lstm"\n'
    "┏━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━┓\n"
    "┃ Layer (type)                    ┃ Output Shape           ┃\n"
    "│ tokens (InputLayer)             │ (None, 100) <masked>   │\n"
    "│ embedding (Embedding)           │ (None, 100, 16)        │\n"
    "Total params: 8,209 (32.07 KB)\n"
)

REPORT_CONFIG = {
    "preset": "tiny",
    "data": {"source": "synthetic", "url": "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"},
    "encode": {"num_words": 500, "max_len": 100},
    "model": {"cell": "lstm", "units": 8, "layers": 1, "bidirectional": True, "input": "embedding", "embedding_dim": 16},
    "train": {"epochs": 3},
}


def _step(tmp_path: Path, step: str, files: dict[str, object]):
    from tasks.store import StepOutput

    folder = tmp_path / "upstream" / step
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_text(json.dumps(data), encoding="utf-8")
    return StepOutput(step=step, key="k", dir=str(folder), files={name: "0" for name in files}, summary={})


def make_upstream(tmp_path: Path, labels: list[str], model_summary: str = MODEL_SUMMARY) -> dict:
    """The report step's upstream (validate, encode, train, evaluate) as JSON files with known figures."""
    size = len(labels)
    matrix = [[40 if row == col else 5 for col in range(size)] for row in range(size)]
    binary = size == 2
    validation = {
        "passed": True,
        "checks": [
            {"check": "class_balance", "split": "train", "observed": 0.4987, "bound": [0.3, 0.7], "severity": "error",
             "passed": True, "message": "smallest class share within bounds"},
            {"check": "token_length", "split": "test", "observed": 5123, "bound": 5000, "severity": "warning",
             "passed": False, "message": "1 review longer than 5000 tokens <check the source>"},
        ],
        "length_stats": {split: {"min": 3, "mean": 120.5, "median": 100, "p90": 210, "p99": 400, "max": 5123}
                         for split in ("train", "val", "test")},
        "label_counts": {split: {label: 50 + index for index, label in enumerate(labels)} for split in ("train", "val", "test")},
        "warnings": ["test: 1 review longer than 5000 tokens & more"],
    }
    encode = {
        "max_len": 100, "num_words": 500, "vocab_size": 500, "tokenizer": "word", "padding": "post", "truncating": "pre",
        "length_histogram": {"edges": [0, 50, 100, 150, 200], "counts": [10, 30, 20, 5]},
        "truncated_fraction": {"train": 0.3846, "val": 0.35, "test": 0.4}, "n": {"train": 80, "val": 20, "test": 90},
    }
    train = {
        "epochs_run": 3, "best_epoch": 2, "params": 8209, "seconds": 12.34, "samples_per_second": 1500.0,
        "model_summary": model_summary, "cudnn_eligible": True, "stopped_early": True,
    }
    history = {"loss": [0.69, 0.5, 0.45], "accuracy": [0.5, 0.75, 0.8], "val_loss": [0.68, 0.55, 0.58], "val_accuracy": [0.52, 0.74, 0.73]}
    metrics = {
        "test": {"accuracy": 0.87654, "loss": 0.3312, "precision": 0.8811, "recall": 0.8712, "f1": 0.8761,
                 "roc_auc": 0.9423 if binary else None, "n": 90},
        "labels": labels,
        "confusion_matrix": matrix,
        "roc_curve": {"fpr": [0.0, 0.1, 0.3, 1.0], "tpr": [0.0, 0.6, 0.9, 1.0]} if binary else None,
        "by_length": [{"bucket": "0-100", "n": 50, "accuracy": 0.9}, {"bucket": "100+", "n": 40, "accuracy": 0.85}],
        "per_class": {label: {"precision": 0.88, "recall": 0.87, "f1": 0.875, "support": 45} for label in labels},
    }
    return {
        "validate": _step(tmp_path, "validate", {"validation.json": validation}),
        "encode": _step(tmp_path, "encode", {"encode.json": encode}),
        "train": _step(tmp_path, "train", {"train.json": train, "history.json": history}),
        "evaluate": _step(tmp_path, "evaluate", {"metrics.json": metrics}),
    }


# --------------------------------------------------------------------------- logs


@contextlib.contextmanager
def logged(name: str):
    """The records logger `name` emits meanwhile, however Prefect's logging setup routes them to the console."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger(name).addHandler(handler)
    try:
        yield records
    finally:
        logging.getLogger(name).removeHandler(handler)


# --------------------------------------------------------------------------- `rnnflow` processes


def cli_command(*args: str) -> list[str]:
    """An `rnnflow ARGS...` process's command line, run from this interpreter."""
    import sys

    return [sys.executable, "-m", "flows.cli", *args]


def session_api_env() -> dict[str, str]:
    """This process's environment for an `rnnflow` process, reporting to the session's Prefect API (conftest's prefect_api)."""
    import os

    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ)
    env["PREFECT_API_URL"] = PREFECT_API_URL.value()  # the test harness's server
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait_for(predicate, timeout: float, what: str, every: float = 0.2) -> None:
    """Poll predicate every `every` seconds until it holds; AssertionError naming `what` after timeout seconds."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")
