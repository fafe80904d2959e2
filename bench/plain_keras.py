"""The pipeline's recipe as one plain Keras script, the baseline `rnnflow run` is compared with (overhead suite).

Same data (tasks.ingest.read_imdb, the same seeded per-split sample and stratified validation
split), the same tokenisation (tasks.encode.Vocabulary), the same model (tasks.models.build_model
from the preset's configuration), optimizer, epochs, early stopping and seed; then test accuracy
and the model saved once. No Prefect flow, no validation suite, no cache, no report.

    python -m bench.plain_keras --archive PATH [--preset NAME] [--max-reviews N] [--epochs N] --out DIR

Prints one JSON line: seconds per phase and the test accuracy (which should equal the pipeline's).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

STARTED = time.perf_counter()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if __package__ in (None, ""):  # run as a file (python bench/plain_keras.py): make tasks/ importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plain_keras", description=__doc__.splitlines()[0])
    parser.add_argument("--archive", required=True, help="the IMDb .tar.gz or its unpacked folder")
    parser.add_argument("--preset", default="seed-simple-rnn")
    parser.add_argument("--max-reviews", type=int, help="reviews per split, as data.max_reviews")
    parser.add_argument("--epochs", type=int, help="as train.epochs (default: the preset's)")
    parser.add_argument("--out", required=True, help="folder for model.keras")
    args = parser.parse_args(argv)
    phases: dict[str, float] = {}
    mark = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        phases[name] = round(now - mark, 3)
        mark = now

    # tasks.ingest and tasks.encode import Prefect for their @task wrappers; a script of its own
    # would not, so that import is timed apart and the overhead suite can take it out.
    import prefect  # noqa: F401

    phase("import_prefect")
    import keras
    import numpy as np

    from tasks.config import load_config
    from tasks.encode import Vocabulary, resolve_max_len
    from tasks.ingest import read_imdb, stratified_sample, stratified_split
    from tasks.models import build_model

    phase("import_other")

    overrides = [f"data.path={args.archive}"]
    if args.max_reviews:
        overrides.append(f"data.max_reviews={args.max_reviews}")
    if args.epochs:
        overrides.append(f"train.epochs={args.epochs}")
    cfg = load_config(args.preset, overrides=overrides)

    raw = read_imdb(Path(args.archive), cfg.data.strip_html)
    if cfg.data.max_reviews:
        raw = {split: stratified_sample(frame, cfg.data.max_reviews, cfg.data.seed) for split, frame in raw.items()}
    train, val = stratified_split(raw["train"], cfg.data.val_fraction, cfg.data.seed)
    test = raw["test"].sample(frac=1.0, random_state=cfg.data.seed).reset_index(drop=True)
    phase("read_and_split")

    train_texts = train["text"].tolist()
    counted = Vocabulary.build(train_texts, cfg.encode, max_len=1)
    max_len = resolve_max_len(cfg.encode, np.array([len(counted.to_ids(t)) for t in train_texts]))
    vocab = Vocabulary(counted.tokens, lowercase=cfg.encode.lowercase, max_len=max_len, padding=cfg.encode.padding,
                       truncating=cfg.encode.truncating, tokenizer=cfg.encode.tokenizer, strip_html=cfg.data.strip_html)
    x_train, x_val, x_test = (vocab.encode(frame["text"].tolist())[0] for frame in (train, val, test))
    y_train, y_val, y_test = (frame["label"].to_numpy(dtype=np.int32) for frame in (train, val, test))
    phase("tokenise")

    keras.utils.set_random_seed(cfg.train.seed)
    model = build_model(cfg.model, num_tokens=cfg.encode.num_words, max_len=max_len, n_classes=2)
    optimizer = {"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop, "sgd": keras.optimizers.SGD}[cfg.train.optimizer]
    model.compile(optimizer=optimizer(learning_rate=cfg.train.learning_rate), loss="binary_crossentropy", metrics=["accuracy"])
    history = model.fit(
        x_train, y_train, validation_data=(x_val, y_val), batch_size=cfg.train.batch_size, epochs=cfg.train.epochs, shuffle=True,
        callbacks=[keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.train.patience, restore_best_weights=True)],
        verbose=0,
    )
    phase("fit")

    probabilities = model.predict(x_test, batch_size=512, verbose=0).reshape(-1)
    # > 0.5, as evaluate takes the argmax of (1 - p, p): a tie goes to class 0.
    accuracy = float(np.mean((probabilities > 0.5).astype(np.int32) == y_test))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.keras")
    phase("evaluate_and_save")

    print(json.dumps({
        "test_accuracy": accuracy,
        "epochs_run": len(history.history["loss"]),
        "n": {"train": len(train), "val": len(val), "test": len(test)},
        "max_len": max_len,
        "phases_s": phases,
        "in_script_s": round(time.perf_counter() - STARTED, 3),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
