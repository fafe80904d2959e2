"""Models: build one from the model section (tasks/architectures.py's registry), lay out next-token rows, print a summary.

Importing this module registers rnnflow's own layers (tasks/model_layers.py, tasks/fused_rnn.py), so a saved
model that holds them loads: evaluate, predict and export import it before loading one.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import keras
import numpy as np

import tasks.fused_rnn  # noqa: F401  (registers FusedGRU and FusedLSTM)
from tasks.architectures import build_model, cudnn_eligible, recurrent_stack  # noqa: F401  (imported from here by train, tests, bench/)
from tasks.model_layers import MaxOverSteps, OneHotTokens, TokenWindow, VocabularyCap  # noqa: F401  (registered; imported from here)

SUMMARY_WIDTH = 100  # characters per line of the model summary in train.json and the report
_SUMMARY_LOCK = threading.Lock()  # $COLUMNS is the process's: sweep points train in threads side by side


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
