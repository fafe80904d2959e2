"""Model builders: a Keras recurrent classifier, or a next-character model, from the model section of the configuration."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import keras
import numpy as np
from keras import layers

from tasks.config import ModelConfig
from tasks.fused_rnn import recurrent_layer

SUMMARY_WIDTH = 100  # characters per line of the model summary in train.json and the report
_SUMMARY_LOCK = threading.Lock()  # $COLUMNS is the process's: sweep points train in threads side by side

@keras.saving.register_keras_serializable(package="rnnflow")
class OneHotTokens(layers.Layer):
    """Token ids -> one-hot vectors, made batch by batch inside the model.

    The seeds materialised the one-hot tensor up front (25,000 x 100 x 500 floats, gigabytes);
    here only one batch exists at a time. Id 0 is padding and is masked when asked.
    """

    def __init__(self, num_tokens: int, mask_zero: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        self.num_tokens = num_tokens
        self.mask_zero = mask_zero

    def call(self, inputs):
        return keras.ops.one_hot(inputs, self.num_tokens, dtype=self.compute_dtype)

    def compute_mask(self, inputs, mask=None):
        return keras.ops.not_equal(inputs, 0) if self.mask_zero else None

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.num_tokens)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_tokens": self.num_tokens, "mask_zero": self.mask_zero}


@keras.saving.register_keras_serializable(package="rnnflow")
class MaxOverSteps(layers.Layer):
    """The maximum over the real steps of each sequence.

    Keras' GlobalMaxPooling1D ignores the mask (and warns), so padded steps, whose recurrent
    outputs are zeros, would take part in the maximum; here they are left out. A row with no
    real step gives zeros.
    """

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            return keras.ops.max(inputs, axis=1)
        real = keras.ops.expand_dims(keras.ops.cast(mask, "bool"), -1)
        lowest = keras.ops.cast(-1e9, inputs.dtype)
        top = keras.ops.max(keras.ops.where(real, inputs, lowest), axis=1)
        return keras.ops.where(keras.ops.any(real, axis=1), top, keras.ops.zeros_like(top))

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


@keras.saving.register_keras_serializable(package="rnnflow")
class TokenWindow(layers.Layer):
    """The last (or first) `length` tokens of each row's text, right-padded: how one member reads a long review.

    Rows come from encode either right-padded (text, then zeros) or left-padded (zeros, then text);
    a row's text is its nonzero ids, one run. The window is cut from that run, so a 900-token row and
    a 120-token row both give their own last (or first) tokens, and padding stays at the right, the
    layout cuDNN's masked kernels accept.
    """

    def __init__(self, length: int, at: str = "end", **kwargs: Any):
        super().__init__(**kwargs)
        if at not in ("end", "start"):
            raise ValueError(f"TokenWindow at must be end or start, not {at!r}")
        self.length = length
        self.at = at

    def call(self, inputs):
        ops = keras.ops
        steps = ops.shape(inputs)[1]
        # As long as the window, or as the rows when they are shorter (batches padded to their own longest
        # review, train.bucket_by_length): the steps past the rows' width could only be padding.
        width = min(steps, self.length) if isinstance(steps, int) else ops.minimum(steps, self.length)
        real = ops.cast(ops.not_equal(inputs, 0), "int32")
        size = ops.sum(real, axis=1, keepdims=True)
        # The text's first position: 0 when right-padded, the number of zeros before it when left-padded.
        index = ops.arange(steps, dtype="int32")[None, :]
        begin = ops.min(ops.where(real > 0, index, steps), axis=1, keepdims=True)
        skip = ops.maximum(size - self.length, 0) if self.at == "end" else ops.zeros_like(size)
        offsets = ops.arange(width, dtype="int32")[None, :]
        positions = begin + skip + offsets
        taken = ops.take_along_axis(inputs, ops.minimum(positions, steps - 1), axis=1)
        return ops.where(offsets < ops.minimum(size, self.length), taken, ops.zeros_like(taken))

    def compute_output_shape(self, input_shape):
        steps = input_shape[1]  # rows of any length: a window of any length up to self.length
        return (input_shape[0], None if steps is None else min(steps, self.length))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "length": self.length, "at": self.at}


@keras.saving.register_keras_serializable(package="rnnflow")
class VocabularyCap(layers.Layer):
    """Ids from num_words up read as out-of-vocabulary: the model sees the num_words most frequent tokens only.

    encode numbers tokens by frequency (ties alphabetically), so a vocabulary of N is the first N ids
    of a larger one: this gives exactly the rows an encode with num_words N would, from one encode
    that members with different vocabularies share. oov is encode's out-of-vocabulary id (tasks.encode.OOV).
    """

    def __init__(self, num_words: int, oov: int = 2, **kwargs: Any):
        super().__init__(**kwargs)
        self.num_words = num_words
        self.oov = oov

    def call(self, inputs):
        return keras.ops.where(inputs >= self.num_words, keras.ops.full_like(inputs, self.oov), inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_words": self.num_words, "oov": self.oov}


def recurrent_stack(cfg: ModelConfig) -> list[tuple[str, int]]:
    """(cell, units) per recurrent layer, bottom to top."""
    if cfg.stack_cells:
        units = cfg.stack_units or [cfg.units] * len(cfg.stack_cells)
        if len(units) != len(cfg.stack_cells):
            raise ValueError("model.stack_units must give one number per entry of model.stack_cells")
        return list(zip(cfg.stack_cells, units))
    return [(cfg.cell, cfg.units)] * cfg.layers


def cudnn_eligible(cfg: ModelConfig, padding: str) -> bool:
    """Whether every recurrent layer can run on the fused cuDNN kernel on a GPU.

    Keras picks cuDNN for LSTM/GRU only with tanh/sigmoid, no recurrent dropout, unroll off,
    biases on, GRU reset_after, and (with masking) right-padded sequences. Our builder keeps
    the first four always; cell and padding are the configuration's choice.
    """
    cells_ok = all(cell in ("lstm", "gru") for cell, _ in recurrent_stack(cfg))
    # next_token rows are laid out right-padded whatever encode.padding says (next_token_arrays), and so are windows.
    mask_ok = not cfg.mask_padding or padding == "post" or cfg.task == "next_token" or bool(cfg.window)
    return cells_ok and mask_ok


def build_model(cfg: ModelConfig, *, num_tokens: int, max_len: int | None, n_classes: int, fused_input: bool = True) -> keras.Model:
    """The classifier (model.task classify), or for next_token a model of every next token (see build_next_token_model).

    max_len None: rows of any length (train.bucket_by_length pads each batch to its own longest review);
    such a model reads max_len-padded rows (evaluate, predict, model_text.keras) all the same.
    fused_input (train.fused_input): GRU and LSTM layers that project their inputs outside the loop (tasks/fused_rnn.py).
    """
    if cfg.task == "next_token":
        return build_next_token_model(cfg, num_tokens=num_tokens, fused_input=fused_input)
    inputs = keras.Input(shape=(max_len,), dtype="int32", name="token_ids")
    ids = inputs
    if cfg.window:  # one as long as the rows reads whole rows, laid out right-padded all the same (cudnn_eligible counts on it)
        length = cfg.window if max_len is None else min(cfg.window, max_len)
        ids = TokenWindow(length, cfg.window_at, name=f"window_{cfg.window_at}")(inputs)
    steps = ids.shape[1]
    if cfg.num_words and cfg.num_words < num_tokens:
        ids = VocabularyCap(cfg.num_words, name=f"first_{cfg.num_words}_words")(ids)
        num_tokens = cfg.num_words
    if cfg.input == "embedding":
        x = layers.Embedding(num_tokens, cfg.embedding_dim, mask_zero=cfg.mask_padding, name="embedding")(ids)
    else:
        x = OneHotTokens(num_tokens, mask_zero=cfg.mask_padding, name="one_hot")(ids)
    if cfg.word_dropout:  # drops whole words (a review reads as if they were not there): against memorising the vocabulary
        x = layers.Dropout(cfg.word_dropout, noise_shape=(None, steps, 1), name="word_dropout")(x)
    if cfg.embedding_dropout:  # drops whole vector dimensions at every step
        x = layers.SpatialDropout1D(cfg.embedding_dropout, name="embedding_dropout")(x)
    stack = recurrent_stack(cfg)
    for depth, (cell, units) in enumerate(stack, start=1):
        last = depth == len(stack)
        # Defaults kept on purpose (tanh, sigmoid, no recurrent dropout): they are the cuDNN path.
        rnn = recurrent_layer(cell, fused_input)(units, return_sequences=not last or cfg.pooling != "last", name=f"{cell}_{depth}")
        x = layers.Bidirectional(rnn, name=f"bidirectional_{depth}")(x) if cfg.bidirectional else rnn(x)
        if cfg.dropout:
            x = layers.Dropout(cfg.dropout, name=f"dropout_{depth}")(x)
    if cfg.pooling == "mean":  # the average state over the real (unmasked) steps
        x = layers.GlobalAveragePooling1D(name="mean_over_time")(x)
    elif cfg.pooling == "max":  # the largest value of each unit over the real steps
        x = MaxOverSteps(name="max_over_time")(x)
    if cfg.dense_units:
        x = layers.Dense(cfg.dense_units, activation="relu", name="dense_hidden")(x)
    if n_classes == 2:
        outputs = layers.Dense(1, activation="sigmoid", name="probability")(x)
    else:
        outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"rnnflow_{cfg.cell}")


def build_next_token_model(cfg: ModelConfig, *, num_tokens: int, fused_input: bool = True) -> keras.Model:
    """Many to many: at every step, a softmax over the vocabulary for the token that comes next.

    Any sequence length (the steps are None): training feeds max_len - 1 steps, generating one more
    step at a time. The recurrent layers return every step; the configuration has ruled out
    bidirectional layers (they would read the answer) and pooling. Padding is weighted out of the
    loss by train.py's sample weights, whether or not model.mask_padding masks it inside.
    """
    inputs = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    if cfg.input == "embedding":
        x = layers.Embedding(num_tokens, cfg.embedding_dim, mask_zero=cfg.mask_padding, name="embedding")(inputs)
    else:
        x = OneHotTokens(num_tokens, mask_zero=cfg.mask_padding, name="one_hot")(inputs)
    if cfg.word_dropout:  # here whole characters: the model learns to read on over a missing one
        x = layers.Dropout(cfg.word_dropout, noise_shape=(None, None, 1), name="word_dropout")(x)
    if cfg.embedding_dropout:
        x = layers.SpatialDropout1D(cfg.embedding_dropout, name="embedding_dropout")(x)
    for depth, (cell, units) in enumerate(recurrent_stack(cfg), start=1):
        # Defaults kept on purpose (tanh, sigmoid, no recurrent dropout): they are the cuDNN path.
        x = recurrent_layer(cell, fused_input)(units, return_sequences=True, name=f"{cell}_{depth}")(x)
        if cfg.dropout:
            x = layers.Dropout(cfg.dropout, name=f"dropout_{depth}")(x)
    if cfg.dense_units:
        x = layers.Dense(cfg.dense_units, activation="relu", name="dense_hidden")(x)
    # Dense acts on the last axis, so on every step alike (what TimeDistributed(Dense) would do).
    outputs = layers.Dense(num_tokens, activation="softmax", name="next_token")(x)
    return keras.Model(inputs, outputs, name=f"rnnflow_{cfg.cell}_next_token")


def next_token_arrays(x: np.ndarray, pad: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs, targets, weights) for next-token training from encode's padded rows.

    Each row is first laid out left-aligned (pre-padded rows moved left), so its steps read
    start id, tokens, padding: right padding, the layout cuDNN's masked kernels accept. The target
    at a step is the row's next id. A step counts (weight 1) when its input is a real token;
    padding steps weigh 0. So the first padding id after a text is a target: the model learns
    where texts end, which is how generating knows when to stop.
    """
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"next_token needs at least 2 ids per row (encode.max_len >= 2), got rows of shape {x.shape[1:]}")
    order = np.argsort(x == pad, axis=1, kind="stable")  # real ids first, in their order; padding after
    aligned = np.take_along_axis(x, order, axis=1)
    inputs, targets = aligned[:, :-1], aligned[:, 1:]
    return inputs.astype("int32"), targets.astype("int32"), (inputs != pad).astype("float32")


@contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    """$name set to value inside the block, then put back as it was (unset if it was)."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def summary_text(model: keras.Model) -> str:
    """model.summary() as text, whole: an ensemble's members with their layers, no column cut off.

    Keras draws the table with rich, whose console is as wide as $COLUMNS, 80 without a terminal
    (a scheduled run): the table's last column was cropped. Set for the call, then restored; one call
    at a time, or two threads could restore each other's value.
    """
    lines: list[str] = []
    with _SUMMARY_LOCK, _environment("COLUMNS", str(SUMMARY_WIDTH)):
        model.summary(print_fn=lambda line, **_: lines.append(line), line_length=SUMMARY_WIDTH, expand_nested=True)
    return "\n".join(lines)
