"""Train: a recurrent classifier (or next-character model) on the encoded arrays, early stopping on validation loss, best model kept."""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from prefect import task

from tasks.caching import StepCachePolicy, produce_step
from tasks.config import ModelConfig, TrainConfig
from tasks.encode import Vocabulary, load_arrays
from tasks.store import StepOutput, read_json, write_json, write_text

# Keras (and TensorFlow under it) is imported inside train_model, not here: the flow imports this
# module for its task, and a run whose train step comes from the cache should not pay seconds of
# TensorFlow start-up for nothing.

EpochHook = Callable[[int, int, dict[str, float]], None]

_OPTIMIZERS = {"adam": "Adam", "rmsprop": "RMSprop", "sgd": "SGD"}  # names in keras.optimizers

# Why train.json says there is no model_text.keras for a next_token run.
NO_TEXT_MODEL = "not exported: a next_token model continues texts (rnnflow generate) rather than labelling them"


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """Prefect's run logger inside a run (so lines reach the UI), the module logger outside."""
    from prefect.context import TaskRunContext
    from prefect.logging import get_run_logger

    return get_run_logger() if TaskRunContext.get() else logging.getLogger("rnnflow")


def epoch_report(epochs: int, hook: EpochHook | None) -> Any:
    """A Keras callback: one line per epoch in the logs, and a hook for progress displays."""
    import keras

    started = [0.0]

    def begin(epoch: int, logs: dict | None = None) -> None:
        started[0] = time.perf_counter()

    def end(epoch: int, logs: dict | None = None) -> None:
        logs = {k: float(v) for k, v in (logs or {}).items()}
        shown = "  ".join(f"{k} {v:.4f}" for k, v in logs.items() if k in ("loss", "accuracy", "val_loss", "val_accuracy"))
        run_logger().info("epoch %d/%d  %s  (%.0f s)", epoch + 1, epochs, shown, time.perf_counter() - started[0])
        if hook:
            hook(epoch + 1, epochs, logs)

    return keras.callbacks.LambdaCallback(on_epoch_begin=begin, on_epoch_end=end)


def memmap_dataset(
    x: np.ndarray, y: np.ndarray, batch_size: int, *, epochs: int = 1, seed: int | None = None, next_token: bool = False,
) -> tuple[Any, int]:
    """(tf.data.Dataset, batches per epoch) reading rows of x and y (memory-mapped .npy) one batch at a time.

    With a seed, epoch e visits every row once in the order of a permutation seeded with seed + e,
    and the dataset holds epochs of them back to back (fit with steps_per_epoch = batches per epoch);
    without, one epoch in file order (validation). Each batch's indices are sorted, so its rows are read
    front to back; its labels are gathered with the same indices. next_token batches are
    next_token_arrays of the rows: (inputs, targets, weights).
    """
    import tensorflow as tf

    from tasks.models import next_token_arrays

    n, max_len = x.shape
    steps = -(-n // batch_size)
    permutation: dict[int, np.ndarray] = {}

    def rows(step: np.int64) -> np.ndarray:
        epoch, start = divmod(int(step), steps)
        start *= batch_size
        if seed is None:
            return np.arange(start, min(start + batch_size, n))
        order = permutation.get(epoch)
        if order is None:  # a pure function of the epoch: recomputing it (if tf.data ever loads out of order) is only slower
            order = np.random.default_rng(seed + epoch).permutation(n)
            permutation.clear()  # one epoch's order held at a time
            permutation[epoch] = order
        return np.sort(order[start : start + batch_size])

    if next_token:
        def load(step: np.int64) -> tuple[np.ndarray, ...]:
            return next_token_arrays(np.asarray(x[rows(step)]))

        types, shapes = (tf.int32, tf.int32, tf.float32), ([None, max_len - 1],) * 3
    else:
        def load(step: np.int64) -> tuple[np.ndarray, ...]:
            index = rows(step)
            return np.asarray(x[index], dtype=np.int32), np.asarray(y[index], dtype=np.int32)

        types, shapes = (tf.int32, tf.int32), ([None, max_len], [None])

    def load_tensors(step: Any) -> tuple[Any, ...]:
        tensors = tf.numpy_function(load, [step], types, stateful=False)
        for tensor, shape in zip(tensors, shapes):
            tensor.set_shape(shape)
        return tuple(tensors)

    dataset = tf.data.Dataset.range(steps * (epochs if seed is not None else 1)).map(load_tensors)
    return dataset.prefetch(tf.data.AUTOTUNE), steps


def train_model(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    encode_dir: Path,
    out_dir: Path,
    on_epoch: EpochHook | None = None,
) -> dict[str, Any]:
    """Fit, keep the best epoch as model.keras, and export it with its preprocessing as model_text.keras.

    model.task next_token fits every step's next token instead of the label (next_token_arrays:
    padding steps weigh 0), with the same early stopping and checkpoint; it has no model_text.keras.
    """
    import keras

    from tasks.export import export_text_model
    from tasks.models import build_model, cudnn_eligible, next_token_arrays, summary_text

    keras.utils.set_random_seed(train_cfg.seed)
    encoding = read_json(Path(encode_dir) / "encode.json")
    labels = read_json(Path(encode_dir) / "labels.json") if (Path(encode_dir) / "labels.json").exists() else None
    x_train, y_train = load_arrays(encode_dir, "train")
    x_val, y_val = load_arrays(encode_dir, "val")
    next_token = model_cfg.task == "next_token"
    n_classes = len(labels) if labels else max(2, int(max(y_train.max(), y_val.max())) + 1)

    model = build_model(model_cfg, num_tokens=encoding["num_words"], max_len=encoding["max_len"], n_classes=n_classes)
    if next_token:
        # The mean over the steps that count (weight 1), not over every step padding included.
        loss: Any = keras.losses.SparseCategoricalCrossentropy(reduction="mean_with_sample_weight")
        # Keras weighs only weighted_metrics by the sample weights: accuracy over the real steps.
        metrics: dict[str, Any] = {"weighted_metrics": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]}
    else:
        loss = "binary_crossentropy" if n_classes == 2 else "sparse_categorical_crossentropy"
        metrics = {"metrics": ["accuracy"]}
    n_train = len(x_train)
    # Up to train.in_memory_max_mb the arrays go to model.fit whole (Keras copies them into one tensor);
    # a larger train array is read from its memory-mapped .npy a batch at a time through tf.data.
    streamed = x_train.nbytes > train_cfg.in_memory_max_mb * 2**20
    if streamed:
        train_data, steps_per_epoch = memmap_dataset(
            x_train, y_train, train_cfg.batch_size, epochs=train_cfg.epochs, seed=train_cfg.seed, next_token=next_token
        )
        val_data, _ = memmap_dataset(x_val, y_val, train_cfg.batch_size, next_token=next_token)
        # shuffle=False: the dataset brings each epoch's own order (Keras would only warn that it ignores True).
        data: dict[str, Any] = {"x": train_data, "validation_data": val_data, "steps_per_epoch": steps_per_epoch, "shuffle": False}
    else:
        # As before the tf.data path, so runs measured with it reproduce: whole arrays, Keras shuffles.
        weights_train = None
        if next_token:
            x_train, y_train, weights_train = next_token_arrays(x_train)
            x_val, y_val, weights_val = next_token_arrays(x_val)
            validation_data: tuple = (x_val, y_val, weights_val)
        else:
            validation_data = (x_val, y_val)
        data = {
            "x": x_train, "y": y_train, "sample_weight": weights_train, "validation_data": validation_data,
            "batch_size": train_cfg.batch_size, "shuffle": True,
        }
    model.compile(optimizer=getattr(keras.optimizers, _OPTIMIZERS[train_cfg.optimizer])(learning_rate=train_cfg.learning_rate), loss=loss, **metrics)
    checkpoint = out_dir / "model.keras"
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=train_cfg.patience, restore_best_weights=True),
        keras.callbacks.ModelCheckpoint(checkpoint, monitor="val_loss", save_best_only=True),
        epoch_report(train_cfg.epochs, on_epoch),
    ]
    started = time.perf_counter()
    history = model.fit(**data, epochs=train_cfg.epochs, callbacks=callbacks, verbose=0)
    seconds = time.perf_counter() - started
    if not checkpoint.exists():  # val_loss was NaN every epoch: keep the last weights rather than nothing
        model.save(checkpoint)
    if not next_token:
        # Wrap the checkpoint, the file evaluate and predict load, so both models hold the very same weights.
        export_text_model(
            keras.models.load_model(checkpoint, compile=False), Vocabulary.load(Path(encode_dir) / "vocab.json"),
            out_dir / "model_text.keras",
        )

    curves = {name: [float(v) for v in values] for name, values in history.history.items()}
    epochs_run = len(curves.get("loss", []))
    best_epoch = int(np.nanargmin(curves["val_loss"])) + 1 if np.isfinite(curves.get("val_loss", [np.nan])).any() else epochs_run
    write_json(out_dir / "history.json", curves)
    with open(out_dir / "history.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", *curves])
        for i in range(epochs_run):
            writer.writerow([i + 1, *(curves[k][i] for k in curves)])
    summary = summary_text(model)
    write_text(out_dir / "model_summary.txt", summary + "\n")
    info = {
        "task": model_cfg.task,
        "epochs_run": epochs_run,
        "best_epoch": best_epoch,
        "stopped_early": epochs_run < train_cfg.epochs,
        "params": int(model.count_params()),
        "seconds": round(seconds, 2),
        "samples_per_second": round(n_train * epochs_run / seconds, 1) if seconds else None,
        # in_memory: the arrays handed to model.fit whole; memmap_tf_data: batches read from the .npy (train.in_memory_max_mb).
        "input": "memmap_tf_data" if streamed else "in_memory",
        "best_val_loss": min(curves.get("val_loss", [float("nan")])),
        "best_val_accuracy": curves.get("val_accuracy", [None])[best_epoch - 1] if epochs_run else None,
        "cudnn_eligible": cudnn_eligible(model_cfg, encoding["padding"]),
        "model_summary": summary,
    }
    if next_token:
        info["model_text"] = NO_TEXT_MODEL
    write_json(out_dir / "train.json", info)
    return {k: info[k] for k in ("epochs_run", "best_epoch", "params", "seconds", "best_val_accuracy", "cudnn_eligible")}


def _progress_hook() -> EpochHook | None:
    """A Prefect progress artifact that advances each epoch (shown on the run's Artifacts tab)."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact
    from prefect.context import TaskRunContext

    if not TaskRunContext.get():
        return None
    artifact_id = create_progress_artifact(progress=0.0, key="rnnflow-training", description="Training epochs done (%)")

    def advance(epoch: int, epochs: int, logs: dict[str, float]) -> None:
        update_progress_artifact(artifact_id=artifact_id, progress=100.0 * epoch / epochs)

    return advance


@task(name="train", cache_policy=StepCachePolicy(step="train"))
def train_task(root: str, section: dict, upstream: dict) -> StepOutput:
    model_cfg, train_cfg = ModelConfig(**section["model"]), TrainConfig(**section["train"])
    hook = _progress_hook()
    return produce_step(root, "train", section, upstream, lambda out: train_model(model_cfg, train_cfg, upstream["encode"].path, out, hook))
