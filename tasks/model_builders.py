"""The builders of tasks/architectures.py's tasks: a Keras classifier, or a next-character model, from the model section.

A builder gets its input layer and its recurrent layers resolved by the registry (tasks/architectures.py `Parts`),
so it imports nothing from there; call tasks.models.build_model (or architectures.build_model) to build one.
"""

from __future__ import annotations

from typing import Any, Callable

import keras
from keras import layers

from tasks.model_layers import MaxOverSteps, NgramBag, TokenWindow, VocabularyCap

Embed = Callable[[int], Any]  # number of token ids -> the input layer
Recurrent = list[tuple[Callable[..., Any], int, str]]  # per layer, bottom to top: (layer class, units, cell name)


def build_classifier(cfg: Any, embed: Embed, recurrent: Recurrent, *, num_tokens: int, max_len: int | None, n_classes: int) -> keras.Model:
    """model.task classify: one label per text, from the last state or a pooling of every state.

    max_len None: rows of any length (train.bucket_by_length pads each batch to its own longest review);
    such a model reads max_len-padded rows (evaluate, predict, model_text.keras) all the same.
    """
    inputs = keras.Input(shape=(max_len,), dtype="int32", name="token_ids")
    ids, vocabulary = inputs, num_tokens
    if cfg.window:  # one as long as the rows reads whole rows, laid out right-padded all the same (cudnn_eligible counts on it)
        length = cfg.window if max_len is None else min(cfg.window, max_len)
        ids = TokenWindow(length, cfg.window_at, name=f"window_{cfg.window_at}")(inputs)
    steps = ids.shape[1]
    if cfg.num_words and cfg.num_words < num_tokens:
        ids = VocabularyCap(cfg.num_words, name=f"first_{cfg.num_words}_words")(ids)
        num_tokens = cfg.num_words
    x = embed(num_tokens)(ids)
    if cfg.word_dropout:  # drops whole words (a review reads as if they were not there): against memorising the vocabulary
        x = layers.Dropout(cfg.word_dropout, noise_shape=(None, steps, 1), name="word_dropout")(x)
    if cfg.embedding_dropout:  # drops whole vector dimensions at every step
        x = layers.SpatialDropout1D(cfg.embedding_dropout, name="embedding_dropout")(x)
    for depth, (layer, units, cell) in enumerate(recurrent, start=1):
        last = depth == len(recurrent)
        # Defaults kept on purpose (tanh, sigmoid, no recurrent dropout): they are the cuDNN path.
        rnn = layer(units, return_sequences=not last or cfg.pooling != "last", name=f"{cell}_{depth}")
        x = layers.Bidirectional(rnn, name=f"bidirectional_{depth}")(x) if cfg.bidirectional else rnn(x)
        if cfg.dropout:
            x = layers.Dropout(cfg.dropout, name=f"dropout_{depth}")(x)
    if cfg.pooling == "mean":  # the average state over the real (unmasked) steps
        x = layers.GlobalAveragePooling1D(name="mean_over_time")(x)
    elif cfg.pooling == "max":  # the largest value of each unit over the real steps
        x = MaxOverSteps(name="max_over_time")(x)
    if cfg.dense_units:
        x = layers.Dense(cfg.dense_units, activation="relu", name="dense_hidden")(x)
    width, activation, name = (1, "sigmoid", "probability") if n_classes == 2 else (n_classes, "softmax", "probabilities")
    if not cfg.ngrams:
        outputs = layers.Dense(width, activation=activation, name=name)(x)
        return keras.Model(inputs, outputs, name=f"rnnflow_{cfg.cell}")
    # The bag reads the whole encoded row, every id of encode's vocabulary (not model.window or model.num_words):
    # its logits join the recurrent ones before the output's activation.
    bag = NgramBag(cfg.ngrams, cfg.ngram_buckets, vocabulary, units=width, scale=cfg.ngram_rate, drop=cfg.ngram_drop, name=f"bag_of_1_to_{cfg.ngrams}_grams")(inputs)
    logits = layers.Add(name="logits")([layers.Dense(width, name="recurrent_logits")(x), bag])
    outputs = layers.Activation(activation, name=name)(logits)
    return keras.Model(inputs, outputs, name=f"rnnflow_{cfg.cell}_ngrams")


def build_next_token_model(cfg: Any, embed: Embed, recurrent: Recurrent, *, num_tokens: int) -> keras.Model:
    """model.task next_token, many to many: at every step, a softmax over the vocabulary for the token that comes next.

    Any sequence length (the steps are None): training feeds max_len - 1 steps, generating one more
    step at a time. The recurrent layers return every step; the configuration has ruled out
    bidirectional layers (they would read the answer) and pooling. Padding is weighted out of the
    loss by train's sample weights, whether or not model.mask_padding masks it inside.
    """
    inputs = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    x = embed(num_tokens)(inputs)
    if cfg.word_dropout:  # here whole characters: the model learns to read on over a missing one
        x = layers.Dropout(cfg.word_dropout, noise_shape=(None, None, 1), name="word_dropout")(x)
    if cfg.embedding_dropout:
        x = layers.SpatialDropout1D(cfg.embedding_dropout, name="embedding_dropout")(x)
    for depth, (layer, units, cell) in enumerate(recurrent, start=1):
        # Defaults kept on purpose (tanh, sigmoid, no recurrent dropout): they are the cuDNN path.
        x = layer(units, return_sequences=True, name=f"{cell}_{depth}")(x)
        if cfg.dropout:
            x = layers.Dropout(cfg.dropout, name=f"dropout_{depth}")(x)
    if cfg.dense_units:
        x = layers.Dense(cfg.dense_units, activation="relu", name="dense_hidden")(x)
    # Dense acts on the last axis, so on every step alike (what TimeDistributed(Dense) would do).
    outputs = layers.Dense(num_tokens, activation="softmax", name="next_token")(x)
    return keras.Model(inputs, outputs, name=f"rnnflow_{cfg.cell}_next_token")
