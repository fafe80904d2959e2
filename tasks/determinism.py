"""train.deterministic: TensorFlow's op determinism, switched on for the trainings that ask for it (moved out of tasks/train.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_DETERMINISM_LOCK = threading.Lock()
_determinism_users = [0, False]  # trainings inside op_determinism(True) now; whether determinism was on before the first


@contextmanager
def op_determinism(on: bool) -> Iterator[None]:
    """train.deterministic: TensorFlow's op determinism on inside the block, then as it was.

    With seeds set (keras.utils.set_random_seed), a retrained run then repeats its figures to the last
    digit on one machine. The switch is the process's: sweep points training side by side in threads
    share it, so it stays on while any of them needs it (counted) and goes back off after the last.
    """
    if not on:
        yield
        return
    from tensorflow.python.framework import config as tf_config

    with _DETERMINISM_LOCK:
        if _determinism_users[0] == 0:
            _determinism_users[1] = tf_config.is_op_determinism_enabled()
            tf_config.enable_op_determinism()
        _determinism_users[0] += 1
    try:
        yield
    finally:
        with _DETERMINISM_LOCK:
            _determinism_users[0] -= 1
            if _determinism_users[0] == 0 and not _determinism_users[1]:
                tf_config.disable_op_determinism()
