"""One member of the train step fitted: its data (load_training_data), its model compiled, its callbacks, its result.

Shared by tasks/train.py, which fits the members in turn, and tasks/member_pool.py, which fits them in processes of
their own: both import this module, neither imports the other.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tasks.architectures import TASKS, reads_padding
from tasks.config import ModelConfig, TrainConfig, member_changes, member_model
from tasks.determinism import keras_seeds
from tasks.encode import load_arrays
from tasks.length_buckets import memmap_dataset
from tasks.logs import step_logger
from tasks.progress import batch_progress
from tasks.store import RunFiles, read_json
from tasks.tensorboard_events import tensorboard_callbacks

EpochHook = Callable[[int, int, dict[str, float]], None]

_OPTIMIZERS = {"adam": "Adam", "rmsprop": "RMSprop", "sgd": "SGD"}  # names in keras.optimizers


class _EpochLines:
    """epoch_report's two hooks: the epoch's start time, then its line and the progress hook."""

    def __init__(self, epochs: int, hook: EpochHook | None, prefix: str):
        self.epochs, self.hook, self.prefix, self.started = epochs, hook, prefix, 0.0

    def begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.perf_counter()

    def end(self, epoch: int, logs: dict | None = None) -> None:
        logs = {k: float(v) for k, v in (logs or {}).items()}
        shown = "  ".join(f"{k} {v:.4f}" for k, v in logs.items() if k in ("loss", "accuracy", "val_loss", "val_accuracy"))
        if "learning_rate" in logs:  # only with train.lr_drop
            shown += f"  learning_rate {logs['learning_rate']:.2g}"
        step_logger().info("%sepoch %d/%d  %s  (%.0f s)", self.prefix, epoch + 1, self.epochs, shown, time.perf_counter() - self.started)
        if self.hook:
            self.hook(epoch + 1, self.epochs, logs)


def epoch_report(epochs: int, hook: EpochHook | None, prefix: str = "") -> Any:
    """A Keras callback: one line per epoch in the logs (after prefix), and a hook for progress displays."""
    import keras

    lines = _EpochLines(epochs, hook, prefix)
    return keras.callbacks.LambdaCallback(on_epoch_begin=lines.begin, on_epoch_end=lines.end)


def member_rows(n_train: int, n_val: int, members: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, validation rows) of each member, as indices into train and val laid end to end.

    Member k validates on the k-th block of n_val rows counted from the end: member 0 on val itself
    (so one member is exactly the single model), the others on blocks of train, which then train
    member 0. Together the members learn from every labelled row; each stops early on rows it never saw.
    """
    pool = n_train + n_val
    if n_val < 1 or members * n_val > pool:
        raise ValueError(
            f"train.members {members} needs {members} validation blocks of {n_val:,} rows but train and val hold {pool:,}: "
            f"use at most {pool // max(n_val, 1)} members, or a smaller data.val_fraction"
        )
    rows = np.arange(pool)
    splits = []
    for k in range(members):
        held = (rows >= pool - (k + 1) * n_val) & (rows < pool - k * n_val)
        splits.append((rows[~held], rows[held]))
    return splits


@dataclass
class TrainingData:
    """encode's train and val arrays, and what training needs to know of them (load_training_data)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    encoding: dict[str, Any]  # encode.json: num_words, max_len, padding
    n_classes: int
    # Read from the memory-mapped .npy a batch at a time through tf.data (streamed_input), or handed to model.fit whole.
    streamed: bool
    # With train.members > 1: train and val laid end to end, and each member's (train rows, validation rows) in them.
    x_pool: np.ndarray | None = None
    y_pool: np.ndarray | None = None
    splits: list[tuple[np.ndarray, np.ndarray]] | None = None

    def member_arrays(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(x train, y train, x val, y val) of member k: train and val as encoded for a lone model."""
        if self.splits is None:
            return self.x_train, self.y_train, self.x_val, self.y_val
        trained, held = self.splits[k]
        return self.x_pool[trained], self.y_pool[trained], self.x_pool[held], self.y_pool[held]

    def validation_rows(self, k: int) -> int:
        """How many rows member k stops early on."""
        return len(self.x_val) if self.splits is None else len(self.splits[k][1])


def streamed_input(x_train: np.ndarray, train_cfg: TrainConfig) -> bool:
    """Whether the train array is read a batch at a time from its memory-mapped .npy, not handed to model.fit whole.

    Up to train.in_memory_max_mb the arrays go to model.fit whole (Keras copies them into one tensor);
    a larger train array is read from its .npy a batch at a time through tf.data (memmap_dataset).
    """
    streamed = x_train.nbytes > train_cfg.in_memory_max_mb * 2**20
    if train_cfg.members > 1 and streamed:
        raise ValueError(
            f"train.members {train_cfg.members} redraws validation rows from train and val in memory, but the train array "
            f"({x_train.nbytes / 2**20:,.0f} MiB) is over train.in_memory_max_mb {train_cfg.in_memory_max_mb:g}: "
            "raise train.in_memory_max_mb or leave train.members at 1"
        )
    return streamed


def load_training_data(encode_dir: Path, train_cfg: TrainConfig) -> TrainingData:
    """encode's train and val arrays (memory-mapped), the number of classes, and with members each one's rows (member_rows)."""
    encoding = read_json(RunFiles.ENCODING.of_step(encode_dir))
    labels = read_json(RunFiles.LABELS.of_step(encode_dir)) if RunFiles.LABELS.of_step(encode_dir).exists() else None
    x_train, y_train = load_arrays(encode_dir, "train")
    x_val, y_val = load_arrays(encode_dir, "val")
    n_classes = len(labels) if labels else max(2, int(max(y_train.max(), y_val.max())) + 1)
    data = TrainingData(x_train, y_train, x_val, y_val, encoding, n_classes, streamed_input(x_train, train_cfg))
    if train_cfg.members > 1:
        data.x_pool, data.y_pool = np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val])
        data.splits = member_rows(len(x_train), len(x_val), train_cfg.members)
    return data


def compile_settings(model_cfg: ModelConfig, train_cfg: TrainConfig, n_classes: int) -> dict[str, Any]:
    """model.compile's optimizer, loss and metrics: a new optimizer for each model."""
    import keras

    if TASKS[model_cfg.task].per_step:
        # The mean over the steps that count (weight 1), not over every step padding included.
        loss: Any = keras.losses.SparseCategoricalCrossentropy(reduction="mean_with_sample_weight")
        # Keras weighs only weighted_metrics by the sample weights: accuracy over the real steps.
        metrics: dict[str, Any] = {"weighted_metrics": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]}
    else:
        loss = "binary_crossentropy" if n_classes == 2 else "sparse_categorical_crossentropy"
        metrics = {"metrics": ["accuracy"]}
    optimizer = getattr(keras.optimizers, _OPTIMIZERS[train_cfg.optimizer])(learning_rate=train_cfg.learning_rate)
    return {"optimizer": optimizer, "loss": loss, **metrics}


def bucketed(model_cfg: ModelConfig, train_cfg: TrainConfig, k: int) -> bool:
    """Whether member k trains on batches padded to their own longest review (train.bucket_by_length).

    Only where the padding cut off could not change what the model computes: a classifier that masks
    its padding (model.mask_padding; one that reads padding as input would learn on fewer padding steps
    than evaluate gives it), and a next_token model, whose steps read only the steps before them, so the
    padding after a batch's longest text changes no step that counts.
    """
    cfg = member_model(model_cfg, train_cfg, k)
    return train_cfg.bucket_by_length and not reads_padding(cfg)


def member_inputs(data: TrainingData, train_cfg: TrainConfig, k: int, *, next_token: bool, bucket: bool = False) -> dict[str, Any]:
    """What model.fit gets for member k: its training and validation data, streamed or in memory.

    bucket (bucketed): both through memmap_dataset's buckets, batches of rows of about one length each
    padded to its bucket's width, in an order seeded with the member's seed (train.seed + k).
    """
    if data.streamed or bucket:
        xt, yt, xv, yv = (data.x_train, data.y_train, data.x_val, data.y_val) if data.streamed else data.member_arrays(k)
        layout = {"bucket": bucket, "right_padded": data.encoding.get("padding", "post") == "post"}
        train_data, steps_per_epoch = memmap_dataset(
            xt, yt, train_cfg.batch_size, epochs=train_cfg.epochs, seed=train_cfg.seed + k, next_token=next_token, **layout
        )
        val_data, _ = memmap_dataset(xv, yv, train_cfg.batch_size, next_token=next_token, **layout)
        # shuffle=False: the dataset brings each epoch's own order (Keras would only warn that it ignores True).
        return {"x": train_data, "validation_data": val_data, "steps_per_epoch": steps_per_epoch, "shuffle": False}
    # As before the tf.data path, so runs measured with it reproduce: whole arrays, Keras shuffles.
    from tasks.models import next_token_arrays

    xt, yt, xv, yv = data.member_arrays(k)
    weights_train = None
    if next_token:
        xt, yt, weights_train = next_token_arrays(xt)
        xv, yv, weights_val = next_token_arrays(xv)
        validation_data: tuple = (xv, yv, weights_val)
    else:
        validation_data = (xv, yv)
    return {
        "x": xt, "y": yt, "sample_weight": weights_train, "validation_data": validation_data,
        "batch_size": train_cfg.batch_size, "shuffle": True,
    }


def _member_epoch(on_epoch: EpochHook, k: int, members: int, epoch: int, epochs: int, logs: dict[str, float]) -> None:
    """on_epoch with member k's epochs counted after those of the k members before it, out of all members' epochs."""
    on_epoch(k * epochs + epoch, members * epochs, logs)


def monitor_mode(monitor: str) -> str:
    """Keras' mode for train.monitor: a loss is best at its lowest, an accuracy at its highest."""
    return "min" if monitor.endswith("loss") else "max"


def kept_epoch(history: dict[str, list[float]], monitor: str, epochs_run: int) -> int:
    """The epoch (from 1) whose weights early stopping kept: the first best train.monitor; the last epoch where it is never finite."""
    values = np.asarray(history.get(monitor, []), dtype=float)
    if not np.isfinite(values).any():
        return epochs_run
    return int(np.nanargmin(values) if monitor_mode(monitor) == "min" else np.nanargmax(values)) + 1


def member_callbacks(train_cfg: TrainConfig, k: int, checkpoint: Path, on_epoch: EpochHook | None) -> list[Any]:
    """Early stopping on train.monitor (best weights restored), the best epoch kept in checkpoint, epoch lines, TensorBoard's events if asked."""
    import keras

    members = train_cfg.members
    hook = partial(_member_epoch, on_epoch, k, members) if on_epoch else None
    watch = {"monitor": train_cfg.monitor, "mode": monitor_mode(train_cfg.monitor)}
    callbacks = [
        keras.callbacks.EarlyStopping(**watch, patience=train_cfg.patience, restore_best_weights=True),
        keras.callbacks.ModelCheckpoint(checkpoint, **watch, save_best_only=True),
        epoch_report(train_cfg.epochs, hook, f"member {k + 1}/{members}  " if members > 1 else ""),
    ]
    if train_cfg.lr_drop:
        # Before early stopping gives up, the epochs it still waits go on at a smaller step. First in the list,
        # so the epoch line and the history get the rate it adds to the logs.
        callbacks.insert(0, keras.callbacks.ReduceLROnPlateau(**watch, factor=train_cfg.lr_drop, patience=0, min_delta=0, min_lr=1e-6))
    progress = batch_progress(train_cfg.batch_size, f"member {k + 1}/{members}  " if members > 1 else "")  # first: wiped before the epoch line
    return progress + callbacks + tensorboard_callbacks(train_cfg, k, checkpoint.parent)


@dataclass
class MemberResult:
    """One fitted member: its model (the best epoch's weights), the file they are saved in, and its figures."""

    model: Any
    checkpoint: Path  # model.keras for a lone model, member_K.keras with members
    history: dict[str, list[float]]  # each metric's value per epoch (history.json for the first member)
    epochs_run: int
    best_epoch: int
    best_val_loss: float
    best_val_accuracy: float | None
    seconds: float
    seed: int
    validation_rows: int
    model_changes: dict[str, Any]  # train.member_models' entry for it
    jit_compile: bool = False  # XLA, as Keras resolved train.jit_compile for it
    bag_start: dict[str, Any] | None = None  # how its bag of n-grams started (start_bags); None without one
    refit: dict[str, Any] | None = None  # train.refit: the rows and epochs of the fit saved (refit_member); None without

    def run_record(self) -> dict[str, Any]:
        """Its entry in train.json's member_runs."""
        return {
            "epochs_run": self.epochs_run, "best_epoch": self.best_epoch, "best_val_loss": self.best_val_loss,
            "best_val_accuracy": self.best_val_accuracy, "seconds": self.seconds, "seed": self.seed,
            "validation_rows": self.validation_rows, "file": self.checkpoint.name, "history": self.history,
            "model_changes": self.model_changes, "refit": self.refit,
        }


def start_bags(model: Any, model_cfg: ModelConfig, data: TrainingData, k: int) -> dict[str, Any] | None:
    """model.ngram_start: each bag of n-grams (model.ngrams) starts from Naive Bayes, or from a logistic regression on its
    n-grams weighted by Naive Bayes (NBSVM) whose C is chosen on member k's val rows, fitted on member k's training rows;
    zeros: as built. Returns how the bag started (train.json's bag_starts), None without a bag."""
    from tasks.model_layers import NgramBag

    bags = [layer for layer in model.layers if isinstance(layer, NgramBag)]
    if not bags:
        return None
    if model_cfg.ngram_start == "zeros":
        return {"start": "zeros"}
    x, y, x_val, y_val = (data.x_train, data.y_train, data.x_val, data.y_val) if data.streamed else data.member_arrays(k)
    record: dict[str, Any] = {"start": model_cfg.ngram_start}
    for bag in bags:
        if model_cfg.ngram_start == "logistic":
            table, record = bag.logistic_table(x, y, data.n_classes, model_cfg.ngram_c, x_val, y_val)
        else:
            table = bag.naive_bayes_table(x, y, data.n_classes)
        bag.table.assign(table)
    return record


def fit_member(
    model_cfg: ModelConfig, train_cfg: TrainConfig, data: TrainingData, k: int, out_dir: Path, on_epoch: EpochHook | None = None,
) -> MemberResult:
    """Build member k (seed train.seed + k, its member_model section), fit it, keep its best epoch in its checkpoint; with
    train.refit, fit it again on its validation rows as well (refit_member)."""
    started = time.perf_counter()
    members, seed = train_cfg.members, train_cfg.seed + k
    bucket, member_cfg = bucketed(model_cfg, train_cfg, k), member_model(model_cfg, train_cfg, k)
    model = build_member(member_cfg, train_cfg, data, k, bucket)
    bag_start = start_bags(model, member_cfg, data, k)
    model.compile(**compile_settings(model_cfg, train_cfg, data.n_classes), jit_compile=train_cfg.jit_compile)
    checkpoint = out_dir / (RunFiles.MODEL.name if members == 1 else f"member_{k + 1}.keras")
    callbacks = member_callbacks(train_cfg, k, checkpoint, on_epoch)
    fitted = model.fit(
        **member_inputs(data, train_cfg, k, next_token=TASKS[model_cfg.task].per_step, bucket=bucket),
        epochs=train_cfg.epochs, callbacks=callbacks, verbose=0,
    )
    if not checkpoint.exists():  # train.monitor was NaN every epoch: keep the last weights rather than nothing
        model.save(checkpoint)
    history = {name: [float(v) for v in values] for name, values in fitted.history.items()}
    epochs_run = len(history.get("loss", []))
    best_epoch = kept_epoch(history, train_cfg.monitor, epochs_run)
    refit = None
    if train_cfg.refit:
        kept = {name: values[:best_epoch] for name, values in history.items()}
        model, refit = refit_member(member_cfg, train_cfg, data, k, bucket, bag_start, kept, checkpoint)
    return MemberResult(
        model=model, checkpoint=checkpoint, history=history, epochs_run=epochs_run, best_epoch=best_epoch,
        best_val_loss=history["val_loss"][best_epoch - 1] if history.get("val_loss") else float("nan"),
        best_val_accuracy=history.get("val_accuracy", [None])[best_epoch - 1] if epochs_run else None,
        seconds=round(time.perf_counter() - started, 2), seed=seed, validation_rows=data.validation_rows(k),
        model_changes=member_changes(train_cfg, k), jit_compile=bool(getattr(model, "jit_compile", False)), bag_start=bag_start,
        refit=refit,
    )


def build_member(member_cfg: ModelConfig, train_cfg: TrainConfig, data: TrainingData, k: int, bucket: bool) -> Any:
    """Member k's model as built before its fit, its seed (train.seed + k) set first: the same weights for a fit and a refit."""
    import keras

    from tasks.fused_rnn import turn_for
    from tasks.models import build_model

    keras.utils.set_random_seed(train_cfg.seed + k)
    with keras_seeds(train_cfg.seed + k):  # the weights this seed gives, whatever other threads draw meanwhile
        model = build_model(  # bucketed: rows of any length (max_len None), max_len-padded ones included
            member_cfg, num_tokens=data.encoding["num_words"],
            max_len=None if bucket else data.encoding["max_len"], n_classes=data.n_classes, fused_input=train_cfg.fused_input,
            turn=turn_for(len(data.x_train), data.encoding["max_len"]),  # graph steps for a fit too small to pay a compile
        )
    if train_cfg.members > 1:
        model.name = f"{model.name}_member{k + 1}"
    return model


def refit_member(member_cfg: ModelConfig, train_cfg: TrainConfig, data: TrainingData, k: int, bucket: bool,
                 bag_start: dict[str, Any] | None, kept: dict[str, list[float]], checkpoint: Path) -> tuple[Any, dict[str, Any]]:
    """train.refit: member k built again as before its fit, then fitted on its training and validation rows together for
    the epochs its fit kept (kept: their history), each at the learning rate it had; its bag started from the regression
    at the C its val rows chose. Saved over its checkpoint. No rows are left to judge it: its val figures stay the fit's."""
    import keras

    started = time.perf_counter()
    x, y, x_val, y_val = data.member_arrays(k)
    rows = TrainingData(np.concatenate([x, x_val]), np.concatenate([y, y_val]), x_val, y_val, data.encoding, data.n_classes, streamed=False)
    if bag_start and bag_start.get("start") == "logistic":
        member_cfg = member_cfg.model_copy(update={"ngram_c": [bag_start["c"]]})
    model = build_member(member_cfg, train_cfg, rows, k, bucket)
    start_bags(model, member_cfg, rows, k)
    model.compile(**compile_settings(member_cfg, train_cfg, data.n_classes), jit_compile=train_cfg.jit_compile)  # model.task is every member's
    epochs = len(kept.get("loss", [])) or 1
    inputs = member_inputs(rows, train_cfg.model_copy(update={"epochs": epochs}), k, next_token=False, bucket=bucket)
    inputs.pop("validation_data")
    callbacks = [epoch_report(epochs, None, f"member {k + 1}/{train_cfg.members}  refit  " if train_cfg.members > 1 else "refit  ")]
    if kept.get("learning_rate"):  # train.lr_drop: the rates the kept epochs ran at
        callbacks.insert(0, keras.callbacks.LearningRateScheduler(lambda epoch, rate: kept["learning_rate"][epoch]))
    model.fit(**inputs, epochs=epochs, callbacks=callbacks, verbose=0)
    model.save(checkpoint)
    return model, {"rows": len(rows.x_train), "epochs": epochs, "seconds": round(time.perf_counter() - started, 2)}
