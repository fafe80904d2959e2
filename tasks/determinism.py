"""train.deterministic: TensorFlow's op determinism, switched on for the trainings that ask for it (moved out of tasks/train.py)."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

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


_own_seeds = threading.local()  # .rng: the generator keras_seeds gave this thread, while its block runs


class _ThreadSeeds:
    """Stands in for the `random` module where Keras draws its default seeds (keras.src.random.seed_generator's
    make_default_seed: every initializer and layer built without a seed): this thread's generator inside keras_seeds,
    the global one elsewhere."""

    def __getattr__(self, name: str) -> Any:
        own = getattr(_own_seeds, "rng", None)
        return getattr(random if own is None else own, name)


@contextmanager
def keras_seeds(seed: int) -> Iterator[None]:
    """Keras' default seeds inside the block drawn from a generator of this thread's own, seeded with `seed`.

    keras.utils.set_random_seed seeds Python's global `random`, and Keras draws each initializer's seed from it as
    the layers are built; any other thread of the process that draws from it meanwhile gave the model other weights
    (the keepalive pings of the websocket Prefect's events client holds open take their payload from
    random.getrandbits), so a fit in the flow's process was not the fit a member process or a retrained run made
    (tests/test_members.py). random.Random(seed) gives the same draws the global generator gives after
    random.seed(seed), so a build with no other thread drawing is what it was before.
    Keras has no public hook for this: the module's `random` is swapped once for _ThreadSeeds, which leaves every
    other thread on the global generator.
    """
    from keras.src.random import seed_generator

    if not isinstance(seed_generator.python_random, _ThreadSeeds):
        seed_generator.python_random = _ThreadSeeds()
    before = getattr(_own_seeds, "rng", None)
    _own_seeds.rng = random.Random(seed)
    try:
        yield
    finally:
        _own_seeds.rng = before
