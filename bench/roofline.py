"""The roofline of the train bench: this machine's sustained matrix-multiply rate, and a preset's training FLOPs per sample.

A recurrent step is matrix products ([batch, features] x [features, gates * units] for the input, [batch, units] x
[units, gates * units] for the state) and elementwise gates; the products are nearly all the arithmetic. The rate a
CPU sustains depends on the product's shape: the small per-step products run far below one large square product,
which is why train.fused_input takes the input's products out of the loop (tasks/fused_rnn.py).
"""

from __future__ import annotations

import time
from typing import Any

GATES = {"gru": 3, "lstm": 4, "simple_rnn": 1}
LARGE_SQUARE = 2048


def matmul_rate(m: int, k: int, n: int, seconds: float = 1.0) -> float:
    """GFLOP/s of TensorFlow's matmul [m, k] x [k, n] (float32), sustained over about `seconds` after a warm-up."""
    import tensorflow as tf

    a, b = tf.random.normal((m, k)), tf.random.normal((k, n))
    repeats = tf.constant(max(1, int(2e8 // (2 * m * k * n)) or 1))

    @tf.function
    def many(a, b, repeats):  # several products per call: the rate of the kernel, not of Python's call overhead
        total = tf.zeros((m, n))
        for _ in tf.range(repeats):
            total += tf.matmul(a, b)
        return total

    many(a, b, repeats).numpy()
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        many(a, b, repeats).numpy()
        calls += 1
    elapsed = time.perf_counter() - started
    return round(2.0 * m * k * n * int(repeats) * calls / elapsed / 1e9, 2)


def model_shapes(model_cfg: Any, batch_size: int, steps: int) -> list[tuple[str, int, int, int]]:
    """(name, m, k, n) of the products the preset's first recurrent layer runs: per step, and the input's over a whole batch."""
    from tasks.models import recurrent_stack

    cell, units = recurrent_stack(model_cfg)[0]
    features = model_cfg.embedding_dim if model_cfg.input == "embedding" else (model_cfg.num_words or 0)
    gates = GATES[cell] * units
    return [
        (f"one step's state product [{batch_size}, {units}] x [{units}, {gates}]", batch_size, units, gates),
        (f"one step's input product [{batch_size}, {features}] x [{features}, {gates}]", batch_size, features, gates),
        (f"the batch's input product [{batch_size * steps}, {features}] x [{features}, {gates}]", batch_size * steps, features, gates),
    ]


def train_flops_per_sample(model_cfg: Any, num_tokens: int, steps: float) -> float:
    """Matrix-multiply FLOPs of one training sample: each recurrent layer's products over `steps` steps, forward and the
    two products of the backward pass (3x the forward), the one-hot input's too; embeddings (a gather) and gates not counted."""
    from tasks.models import recurrent_stack

    features = model_cfg.embedding_dim if model_cfg.input == "embedding" else (model_cfg.num_words or num_tokens)
    directions = 2 if model_cfg.bidirectional else 1
    total = 0.0
    for cell, units in recurrent_stack(model_cfg):
        total += directions * steps * 2 * GATES[cell] * units * (features + units)
        features = units * directions
    return 3 * total


def roofline(rows: list[dict[str, Any]], models: dict[str, Any], seconds: float = 1.0) -> dict[str, Any]:
    """The matmul rates (a large square and each preset's shapes) and each row's training GFLOP/s against the square's rate."""
    square = matmul_rate(LARGE_SQUARE, LARGE_SQUARE, LARGE_SQUARE, seconds)
    shapes: dict[str, float] = {f"large square [{LARGE_SQUARE}, {LARGE_SQUARE}] x [{LARGE_SQUARE}, {LARGE_SQUARE}]": square}
    for row in rows:
        cfg, num_tokens = models[row["name"]]
        steps = float(min(row["mean_batch_width"], cfg.window or row["mean_batch_width"]))
        for name, m, k, n in model_shapes(cfg, row["batch_size"], int(steps)):
            if name not in shapes:
                shapes[name] = matmul_rate(m, k, n, seconds)
        flops = train_flops_per_sample(cfg, num_tokens, steps)
        row["train_mflop_per_sample"] = round(flops / 1e6, 1)
        row["train_gflop_s"] = round(flops * row["samples_per_s"] / 1e9, 2) if row.get("samples_per_s") else None
        row["of_matmul_peak"] = round(row["train_gflop_s"] / square, 4) if row["train_gflop_s"] else None
    return {"matmul_gflop_s": shapes, "peak_gflop_s": square}
