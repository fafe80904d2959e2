"""train.bucket_by_length and the streamed input: which rows make each batch, and the tf.data dataset that reads them.

A batch holds rows of one length bucket, padded only to that bucket's width (not to encode.max_len); the same
plan read from memory-mapped .npy files batch by batch is the streamed input (train.in_memory_max_mb). A model
trained so predicts in the same buckets (predict_in_buckets): evaluate, predict, score and serve.
"""

from __future__ import annotations

from typing import Any

import numpy as np

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


def predict_in_buckets(model: Any, x: np.ndarray, batch_size: int = 512) -> Any:
    """model.predict(x)'s outputs (a list for a model of several outputs), computed a length bucket at a time.

    For a model that reads rows of any width (built for train.bucket_by_length: it masks padding), the steps
    past a batch's longest row change nothing, so the rows are batched as validation batches them (epoch_batches
    without a seed: by bucket, in file order), laid out right-padded and cut to their bucket's width, and each
    output row goes back to its row's place: the same figures as the max_len-wide rows, for the steps the rows
    have (on IMDb about half of them).
    """
    n, max_len = x.shape
    if n == 0:
        return model.predict(x, batch_size=batch_size, verbose=0)
    lengths = row_lengths(x)
    outputs: list[np.ndarray] = []
    for index in epoch_batches(n, batch_size, None, 0, lengths, max_len):
        rows = left_aligned(np.asarray(x[index], dtype=np.int32))[:, : batch_width(lengths[index].max(), max_len)]
        got = model.predict_on_batch(rows)
        several = isinstance(got, (list, tuple))
        for k, part in enumerate(got if several else [got]):
            part = np.asarray(part)
            if len(outputs) <= k:
                outputs.append(np.empty((n, *part.shape[1:]), dtype=part.dtype))
            outputs[k][index] = part
    return outputs if several else outputs[0]


def mean_batch_width(x: np.ndarray, batch_size: int, seed: int, *, next_token: bool = False) -> float:
    """The mean width of one epoch's bucketed train batches (epoch_batches, bucket_width), weighed by their rows: against max_len."""
    n, max_len = x.shape
    lengths = row_lengths(x)
    widths = [batch_width(lengths[b].max(), max_len, next_token) * len(b) for b in epoch_batches(n, batch_size, seed, 0, lengths, max_len)]
    return round(sum(widths) / n, 1) if n else 0.0
