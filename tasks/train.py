"""Train: a recurrent classifier (or next-character model) on the encoded arrays, early stopping on validation loss, best model kept."""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
from prefect import task

from tasks.caching import StepCachePolicy, produce_step
from tasks.config import ModelConfig, TrainConfig, member_changes, member_model
from tasks.determinism import op_determinism  # noqa: F401  (member_pool and the tests import it from here)
from tasks.encode import Vocabulary, load_arrays
from tasks.logs import step_logger
from tasks.member_pool import fit_members_in_processes, member_processes
from tasks.progress import batch_progress
from tasks.store import RunFiles, StepOutput, read_json, write_json, write_text
from tasks.tensorboard_events import tensorboard_callbacks

# Keras (and TensorFlow under it) is imported inside the functions that use it, not here: the flow imports this
# module for its task, and a run whose train step comes from the cache should not pay seconds of
# TensorFlow start-up for nothing.

EpochHook = Callable[[int, int, dict[str, float]], None]

_OPTIMIZERS = {"adam": "Adam", "rmsprop": "RMSprop", "sgd": "SGD"}  # names in keras.optimizers

# Why train.json says there is no model_text.keras for a next_token run.
NO_TEXT_MODEL = "not exported: a next_token model continues texts (rnnflow generate) rather than labelling them"

# What train_model returns (train_task's step result): these keys of train.json.
RESULT_KEYS = ("epochs_run", "best_epoch", "params", "seconds", "best_val_accuracy", "cudnn_eligible")


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


# train.bucket_by_length: a batch holds rows of one bucket, those whose length rounds up to the same multiple of
# BUCKET_STEP (at most max_len), and is padded to that width: a model meets max_len / BUCKET_STEP widths at most.
BUCKET_STEP = 32


def row_lengths(x: np.ndarray, rows_at_once: int = 65_536) -> np.ndarray:
    """Each row's number of ids that are not padding (0), read rows_at_once rows at a time (x may be memory-mapped)."""
    return np.concatenate([np.count_nonzero(x[i : i + rows_at_once], axis=1) for i in range(0, len(x), rows_at_once)] or [np.zeros(0, int)])


def bucket_width(longest: Any, max_len: int) -> Any:
    """The width of the bucket of a row of `longest` ids: the next multiple of BUCKET_STEP, at most max_len
    (an int for an int, an array of widths for an array of lengths)."""
    widths = np.minimum(max_len, np.maximum(BUCKET_STEP, -(-np.asarray(longest, dtype=np.int64) // BUCKET_STEP) * BUCKET_STEP))
    return int(widths) if widths.ndim == 0 else widths


def batch_width(longest: int, max_len: int, next_token: bool = False) -> int:
    """How wide a bucketed batch whose longest row holds `longest` ids is laid out: its bucket's width.

    A next_token row of L ids has L steps that count (the last one's target is the padding that ends
    it), max_len - 1 at most, so its batches are cut from max_len - 1 steps.
    """
    if next_token:
        return bucket_width(min(int(longest), max_len - 1), max_len - 1)
    return bucket_width(longest, max_len)


def left_aligned(x: np.ndarray) -> np.ndarray:
    """Rows with their ids first, in order, and their padding after (right-padded), whichever side encode padded."""
    return np.take_along_axis(x, np.argsort(x == 0, axis=1, kind="stable"), axis=1)


def epoch_batches(
    n: int, batch_size: int, seed: int | None, epoch: int = 0, lengths: np.ndarray | None = None, max_len: int | None = None,
) -> list[np.ndarray]:
    """The row indices of each batch of one epoch, each batch's sorted (read front to back): ceil(n / batch_size) batches.

    Without lengths: in file order (seed None), or cut from a permutation seeded with seed + epoch.
    With lengths (train.bucket_by_length), buckets as tf.data's bucket_by_sequence_length makes them:
    the rows, in file order (seed None: validation) or in the seeded permutation, go each to the bucket
    of its width (bucket_width; max_len: the widest, default the longest row), and each bucket is cut
    into batches of batch_size rows. What is left of the buckets is laid end to end, narrowest first, and
    cut into batches too (each as wide as its widest row's bucket), so there is no tiny batch per bucket
    and as many batches as without buckets; with a seed, the same generator then shuffles the order of
    all batches. Every row once an epoch.
    """
    rng = None if seed is None else np.random.default_rng(seed + epoch)
    order = np.arange(n) if rng is None else rng.permutation(n)
    if lengths is None:
        return [np.sort(order[start : start + batch_size]) for start in range(0, n, batch_size)]
    widest = int(max_len if max_len is not None else max(int(lengths.max(initial=1)), 1))
    widths = bucket_width(lengths[order], widest)
    batches, left = [], []
    for width in np.unique(widths):
        rows = order[widths == width]  # this bucket's rows, in the order they arrive
        whole = len(rows) - len(rows) % batch_size
        batches += [np.sort(rows[start : start + batch_size]) for start in range(0, whole, batch_size)]
        left.append(rows[whole:])
    rest = np.concatenate(left) if left else np.zeros(0, int)
    batches += [np.sort(rest[start : start + batch_size]) for start in range(0, len(rest), batch_size)]
    return batches if rng is None else [batches[i] for i in rng.permutation(len(batches))]


def memmap_dataset(
    x: np.ndarray, y: np.ndarray, batch_size: int, *, epochs: int = 1, seed: int | None = None, next_token: bool = False,
    bucket: bool = False, right_padded: bool = True,
) -> tuple[Any, int]:
    """(tf.data.Dataset, batches per epoch) reading rows of x and y (memory-mapped .npy, or arrays in memory) one batch at a time.

    With a seed, epoch e visits every row once in an order seeded with seed + e (epoch_batches),
    and the dataset holds epochs of them back to back (fit with steps_per_epoch = batches per epoch);
    without, one epoch in file order (validation). Each batch's indices are sorted, so its rows are read
    front to back; its labels are gathered with the same indices. next_token batches are
    next_token_arrays of the rows: (inputs, targets, weights).

    bucket (train.bucket_by_length): rows of one bucket batched together (epoch_batches), each batch
    laid out right-padded (right_padded False: encode padded on the left, left_aligned moves the ids
    first) and cut to its bucket's width (bucket_width of its longest row) instead of max_len.
    """
    import tensorflow as tf

    from tasks.models import next_token_arrays

    n, max_len = x.shape
    lengths = row_lengths(x) if bucket else None
    plan: dict[int, list[np.ndarray]] = {0: epoch_batches(n, batch_size, seed, 0, lengths, max_len)}
    steps = len(plan[0])  # ceil(n / batch_size)

    def rows(step: np.int64) -> np.ndarray:
        epoch, batch = divmod(int(step), steps)
        batches = plan.get(epoch)
        if batches is None:  # a pure function of the epoch: recomputing it (if tf.data ever loads out of order) is only slower
            batches = epoch_batches(n, batch_size, seed, epoch, lengths, max_len)
            plan.clear()  # one epoch's order held at a time
            plan[epoch] = batches
        return batches[batch]

    if next_token:
        def load(step: np.int64) -> tuple[np.ndarray, ...]:
            index = rows(step)
            arrays = next_token_arrays(np.asarray(x[index]))
            if lengths is None:
                return arrays
            width = batch_width(lengths[index].max(), max_len, next_token=True)
            return tuple(np.ascontiguousarray(a[:, :width]) for a in arrays)

        types, shapes = (tf.int32, tf.int32, tf.float32), ([None, max_len - 1 if lengths is None else None],) * 3
    else:
        def load(step: np.int64) -> tuple[np.ndarray, ...]:
            index = rows(step)
            xb = np.asarray(x[index], dtype=np.int32)
            if lengths is not None:
                xb = np.ascontiguousarray((xb if right_padded else left_aligned(xb))[:, : batch_width(lengths[index].max(), max_len)])
            return xb, np.asarray(y[index], dtype=np.int32)

        types, shapes = (tf.int32, tf.int32), ([None, max_len if lengths is None else None], [None])

    def load_tensors(step: Any) -> tuple[Any, ...]:
        tensors = tf.numpy_function(load, [step], types, stateful=False)
        for tensor, shape in zip(tensors, shapes):
            tensor.set_shape(shape)
        return tuple(tensors)

    dataset = tf.data.Dataset.range(steps * (epochs if seed is not None else 1)).map(load_tensors)
    return dataset.prefetch(tf.data.AUTOTUNE), steps


def mean_batch_width(x: np.ndarray, batch_size: int, seed: int, *, next_token: bool = False) -> float:
    """The mean width of one epoch's bucketed train batches (epoch_batches, bucket_width), weighed by their rows: against max_len."""
    n, max_len = x.shape
    lengths = row_lengths(x)
    widths = [batch_width(lengths[b].max(), max_len, next_token) * len(b) for b in epoch_batches(n, batch_size, seed, 0, lengths, max_len)]
    return round(sum(widths) / n, 1) if n else 0.0


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


def average_members(models: list[Any], max_len: int) -> Any:
    """One model whose output is the mean of the members' probabilities (saved and loaded as one .keras file)."""
    import keras

    inputs = keras.Input(shape=(max_len,), dtype="int32", name="token_ids")
    outputs = keras.layers.Average(name="mean_probability")([model(inputs) for model in models])
    return keras.Model(inputs, outputs, name=f"{models[0].name.rsplit('_member', 1)[0]}_ensemble")


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

    if model_cfg.task == "next_token":
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
    return train_cfg.bucket_by_length and (cfg.task == "next_token" or cfg.mask_padding)


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


def member_callbacks(train_cfg: TrainConfig, k: int, checkpoint: Path, on_epoch: EpochHook | None) -> list[Any]:
    """Early stopping on val_loss (best weights restored), the best epoch kept in checkpoint, epoch lines, TensorBoard's events if asked."""
    import keras

    members = train_cfg.members
    hook = partial(_member_epoch, on_epoch, k, members) if on_epoch else None
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=train_cfg.patience, restore_best_weights=True),
        keras.callbacks.ModelCheckpoint(checkpoint, monitor="val_loss", save_best_only=True),
        epoch_report(train_cfg.epochs, hook, f"member {k + 1}/{members}  " if members > 1 else ""),
    ]
    if train_cfg.lr_drop:
        # Before early stopping gives up, the epochs it still waits go on at a smaller step. First in the list,
        # so the epoch line and the history get the rate it adds to the logs.
        callbacks.insert(0, keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=train_cfg.lr_drop, patience=0, min_delta=0, min_lr=1e-6))
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

    def run_record(self) -> dict[str, Any]:
        """Its entry in train.json's member_runs."""
        return {
            "epochs_run": self.epochs_run, "best_epoch": self.best_epoch, "best_val_loss": self.best_val_loss,
            "best_val_accuracy": self.best_val_accuracy, "seconds": self.seconds, "seed": self.seed,
            "validation_rows": self.validation_rows, "file": self.checkpoint.name, "history": self.history,
            "model_changes": self.model_changes,
        }


def fit_member(
    model_cfg: ModelConfig, train_cfg: TrainConfig, data: TrainingData, k: int, out_dir: Path, on_epoch: EpochHook | None = None,
) -> MemberResult:
    """Build member k (seed train.seed + k, its member_model section), fit it, keep its best epoch in its checkpoint."""
    import keras

    from tasks.models import build_model

    started = time.perf_counter()
    members, seed = train_cfg.members, train_cfg.seed + k
    keras.utils.set_random_seed(seed)
    bucket = bucketed(model_cfg, train_cfg, k)
    model = build_model(  # bucketed: rows of any length (max_len None), max_len-padded ones included
        member_model(model_cfg, train_cfg, k), num_tokens=data.encoding["num_words"],
        max_len=None if bucket else data.encoding["max_len"], n_classes=data.n_classes, fused_input=train_cfg.fused_input,
    )
    if members > 1:
        model.name = f"{model.name}_member{k + 1}"
    model.compile(**compile_settings(model_cfg, train_cfg, data.n_classes), jit_compile=train_cfg.jit_compile)
    checkpoint = out_dir / (RunFiles.MODEL.name if members == 1 else f"member_{k + 1}.keras")
    callbacks = member_callbacks(train_cfg, k, checkpoint, on_epoch)
    fitted = model.fit(
        **member_inputs(data, train_cfg, k, next_token=model_cfg.task == "next_token", bucket=bucket),
        epochs=train_cfg.epochs, callbacks=callbacks, verbose=0,
    )
    if not checkpoint.exists():  # val_loss was NaN every epoch: keep the last weights rather than nothing
        model.save(checkpoint)
    history = {name: [float(v) for v in values] for name, values in fitted.history.items()}
    epochs_run = len(history.get("loss", []))
    finite = np.isfinite(history.get("val_loss", [np.nan])).any()
    best_epoch = int(np.nanargmin(history["val_loss"])) + 1 if finite else epochs_run
    return MemberResult(
        model=model, checkpoint=checkpoint, history=history, epochs_run=epochs_run, best_epoch=best_epoch,
        best_val_loss=min(history.get("val_loss", [float("nan")])),
        best_val_accuracy=history.get("val_accuracy", [None])[best_epoch - 1] if epochs_run else None,
        seconds=round(time.perf_counter() - started, 2), seed=seed, validation_rows=data.validation_rows(k),
        model_changes=member_changes(train_cfg, k), jit_compile=bool(getattr(model, "jit_compile", False)),
    )


def ensemble(members: list[MemberResult], max_len: int, path: Path) -> Any:
    """The members averaged (average_members) and saved to path, each from its checkpoint: the weights its early stopping kept."""
    import keras

    import tasks.models  # noqa: F401  (registers the custom layers: members fitted in other processes left this one without them)

    model = average_members([keras.models.load_model(m.checkpoint, compile=False) for m in members], max_len)
    model.save(path)
    return model


def write_text_model(encode_dir: Path, out_dir: Path) -> None:
    """model_text.keras: model.keras with encode's preprocessing in front, from raw strings to probabilities."""
    import keras

    from tasks.export import export_text_model

    # Wrap the checkpoint, the file evaluate and predict load, so both models hold the very same weights.
    export_text_model(
        keras.models.load_model(RunFiles.MODEL.of_step(out_dir), compile=False), Vocabulary.load(RunFiles.VOCABULARY.of_step(encode_dir)),
        RunFiles.TEXT_MODEL.of_step(out_dir),
    )


def write_history(out_dir: Path, member: MemberResult) -> None:
    """history.json and history.csv: the member's curves, one row per epoch in the csv."""
    curves = member.history
    write_json(RunFiles.HISTORY.of_step(out_dir), curves)
    with open(out_dir / "history.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", *curves])
        for i in range(member.epochs_run):
            writer.writerow([i + 1, *(curves[k][i] for k in curves)])


def train_info(
    model_cfg: ModelConfig, train_cfg: TrainConfig, data: TrainingData, members: list[MemberResult], model: Any, seconds: float, summary: str,
    processes: int = 1,
) -> dict[str, Any]:
    """train.json: what was trained, how long it took, and how well its best epochs did on validation."""
    from tasks.fused_rnn import fused_input_used
    from tasks.models import cudnn_eligible

    epochs_run = sum(m.epochs_run for m in members)
    bucket = all(bucketed(model_cfg, train_cfg, k) for k in range(len(members)))
    val_accuracies = [m.best_val_accuracy for m in members if m.best_val_accuracy is not None]
    info = {
        "task": model_cfg.task,
        "members": len(members),
        "epochs_run": epochs_run,
        "best_epoch": members[0].best_epoch if len(members) == 1 else None,
        "stopped_early": any(m.epochs_run < train_cfg.epochs for m in members),
        "params": int(model.count_params()),
        "seconds": round(seconds, 2),
        # Every member trains on as many rows as train holds (member_rows), so this is the rate over all of them.
        "samples_per_second": round(len(data.x_train) * epochs_run / seconds, 1) if seconds else None,
        # in_memory: the arrays held in memory (handed to model.fit whole, or with bucket_by_length gathered batch by batch
        # through tf.data); memmap_tf_data: batches read from the .npy (train.in_memory_max_mb).
        "input": "memmap_tf_data" if data.streamed else "in_memory",
        # Whether batches were padded to their own longest review (bucketed: train.bucket_by_length, where it applies),
        # and how wide the first member's first epoch's batches were on average, against encode's max_len.
        "bucket_by_length": bucket,
        "mean_batch_width": mean_batch_width(data.member_arrays(0)[0], train_cfg.batch_size, train_cfg.seed, next_token=model_cfg.task == "next_token")
        if bucket else data.encoding["max_len"] - (model_cfg.task == "next_token"),
        "max_len": data.encoding["max_len"],
        "deterministic": train_cfg.deterministic,
        "jit_compile": members[0].jit_compile,  # XLA, as Keras resolved train.jit_compile
        "member_processes": processes,  # processes the members were fitted in (train.member_processes)
        "fused_input": fused_input_used(train_cfg),  # tasks/fused_rnn.py's layers ran (train.fused_input, no GPU)
        # With members, each on its own validation rows: the mean of their best epochs' figures.
        "best_val_loss": float(np.mean([m.best_val_loss for m in members])),
        "best_val_accuracy": float(np.mean(val_accuracies)) if val_accuracies else None,
        "cudnn_eligible": all(cudnn_eligible(member_model(model_cfg, train_cfg, k), data.encoding["padding"]) for k in range(len(members))),
        "model_summary": summary,
    }
    if len(members) > 1:
        info["member_runs"] = [m.run_record() for m in members]
    if model_cfg.task == "next_token":
        info["model_text"] = NO_TEXT_MODEL
    return info


def write_outputs(
    model_cfg: ModelConfig, train_cfg: TrainConfig, data: TrainingData, members: list[MemberResult], model: Any, seconds: float, out_dir: Path,
    processes: int = 1,
) -> dict[str, Any]:
    """history.json and history.csv (the first member's: the only one with members 1), model_summary.txt and train.json."""
    from tasks.models import summary_text

    write_history(out_dir, members[0])
    summary = summary_text(model)
    write_text(out_dir / "model_summary.txt", summary + "\n")
    info = train_info(model_cfg, train_cfg, data, members, model, seconds, summary, processes)
    write_json(RunFiles.TRAINING.of_step(out_dir), info)
    return info


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
    With train.members > 1, each member is fitted (seed train.seed + k, validation rows from
    member_rows, its model section changed by train.member_models' entry for it) and kept as
    member_K.keras; model.keras averages their probabilities. The members are fitted in turn here, or
    side by side in train.member_processes processes (tasks/member_pool.py), with the same seeds, rows and callbacks.
    """
    import keras

    keras.utils.set_random_seed(train_cfg.seed)
    data = load_training_data(encode_dir, train_cfg)
    started = time.perf_counter()
    processes = member_processes(train_cfg)
    if processes > 1:
        members = fit_members_in_processes(model_cfg, train_cfg, encode_dir, out_dir, processes, on_epoch)
    else:
        with op_determinism(train_cfg.deterministic):
            members = [fit_member(model_cfg, train_cfg, data, k, out_dir, on_epoch) for k in range(train_cfg.members)]
    seconds = time.perf_counter() - started
    model = members[0].model if len(members) == 1 else ensemble(members, data.encoding["max_len"], RunFiles.MODEL.of_step(out_dir))
    if model_cfg.task != "next_token":
        write_text_model(encode_dir, out_dir)
    info = write_outputs(model_cfg, train_cfg, data, members, model, seconds, out_dir, processes)
    return {key: info[key] for key in RESULT_KEYS}


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
