"""Model builders: a Keras recurrent classifier from the model section of the configuration."""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from tasks.config import ModelConfig

_CELLS = {"simple_rnn": layers.SimpleRNN, "lstm": layers.LSTM, "gru": layers.GRU}


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
    mask_ok = not cfg.mask_padding or padding == "post"
    return cells_ok and mask_ok


def build_model(cfg: ModelConfig, *, num_tokens: int, max_len: int, n_classes: int) -> keras.Model:
    inputs = keras.Input(shape=(max_len,), dtype="int32", name="token_ids")
    if cfg.input == "embedding":
        x = layers.Embedding(num_tokens, cfg.embedding_dim, mask_zero=cfg.mask_padding, name="embedding")(inputs)
    else:
        x = OneHotTokens(num_tokens, mask_zero=cfg.mask_padding, name="one_hot")(inputs)
    if cfg.word_dropout:  # drops whole words (a review reads as if they were not there): against memorising the vocabulary
        x = layers.Dropout(cfg.word_dropout, noise_shape=(None, max_len, 1), name="word_dropout")(x)
    if cfg.embedding_dropout:  # drops whole vector dimensions at every step
        x = layers.SpatialDropout1D(cfg.embedding_dropout, name="embedding_dropout")(x)
    stack = recurrent_stack(cfg)
    for depth, (cell, units) in enumerate(stack, start=1):
        last = depth == len(stack)
        # Defaults kept on purpose (tanh, sigmoid, no recurrent dropout): they are the cuDNN path.
        rnn = _CELLS[cell](units, return_sequences=not last or cfg.pooling != "last", name=f"{cell}_{depth}")
        x = layers.Bidirectional(rnn, name=f"bidirectional_{depth}")(x) if cfg.bidirectional else rnn(x)
        if cfg.dropout:
            x = layers.Dropout(cfg.dropout, name=f"dropout_{depth}")(x)
    if cfg.pooling == "mean":  # the average state over the real (unmasked) steps
        x = layers.GlobalAveragePooling1D(name="mean_over_time")(x)
    elif cfg.pooling == "max":
        x = layers.GlobalMaxPooling1D(name="max_over_time")(x)
    if cfg.dense_units:
        x = layers.Dense(cfg.dense_units, activation="relu", name="dense_hidden")(x)
    if n_classes == 2:
        outputs = layers.Dense(1, activation="sigmoid", name="probability")(x)
    else:
        outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"rnnflow_{cfg.cell}")


def summary_text(model: keras.Model) -> str:
    lines: list[str] = []
    model.summary(print_fn=lambda line, **_: lines.append(line), line_length=100)
    return "\n".join(lines)
