"""python -m bench.recurrence steps|epochs: the GRU recurrence's cost per time step, variants side by side (issue 31, docs/training-speed.md §9).

steps [--widths 64,224] [--rounds 10] [--variants ...]: tasks/fused_rnn.py's gru_sequence, forward and gradient, on
random inputs of 64 rows, GRU(64), masked, the variants called in turn each round; the best round's ms per call:
  current     tasks/fused_rnn.py's gru_sequence: graph loops, each turn of 8 steps one XLA-compiled function (§12)
  graph       gru_sequence with its steps as graph ops, one a turn (compiled=False, chunk=1: the code before §9):
              the loop back recomputes each step's product and gates from the kept states
  kept        graph, with the forward loop keeping each step's gates ([T, B, 4U]) and the loop back reading them:
              one product a step back instead of two
  xla_loop    graph's two loops each one tf.function(jit_compile=True) (XLA compiles each (T, B) shape)
  xla_step    gru_sequence with each step one XLA-compiled function (chunk=1: §9's code, what FusedGRU ran until §12)
  turnK       gru_sequence with K steps a compiled turn, K = 2, 4, 16, 32 (current is 8)
  products    the loops with their products only (one a step forward, two back): what the arithmetic alone costs
Prints each variant's largest difference from the first one's outputs and gradients, relative to their size.

epochs --encode DIR [--rows N] [--repeats 2] [--variants current,graph]: the default preset's model (fused) fitted
on the first N train rows of an encode step's arrays, bucketed as the train step does, one model per variant from
the same weights, one epoch each in turn: the seconds of each epoch (no validation)
and the process's CPU seconds in it (all threads: less moved by other processes on the cores than the wall clock).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Callable


def xla_loop_sequence(xp: Any, mask: Any, h0: Any, rk: Any, rb: Any) -> tuple[Any, Any]:
    """gru_sequence's loops (the loop back recomputing each step's product and gates), each whole loop one function
    compiled by XLA; their step bodies are gru_sequence's own (tasks.fused_rnn._gru_step_bodies, as graph ops)."""
    import tensorflow as tf

    from tasks.fused_rnn import _gru_step_bodies

    units = rk.shape[0]
    mask = tf.ones_like(xp[..., :1]) if mask is None else mask
    step_forward, step_backward = _gru_step_bodies()

    def forward_step(x, h, m):
        return step_forward(x, h, m, rk, rb)

    def backward_step(x, hp, dh, m):
        return step_backward(x, hp, dh, m, rk, rb)

    def unstacked(*tensors):
        return [tf.TensorArray(t.dtype, size=tf.shape(t)[0], clear_after_read=False).unstack(t) for t in tensors]

    def forward_loop(xp, mask, h0):
        steps = tf.shape(xp)[0]
        xs, ms = unstacked(xp, mask)

        def body(t, h, out):
            h = forward_step(xs.read(t), h, ms.read(t))
            return t + 1, h, out.write(t, h)

        _, h_last, out = tf.while_loop(lambda t, *_: t < steps, body, (0, h0, tf.TensorArray(xp.dtype, size=steps)))
        return out.stack(), h_last

    def backward_loop(xp, mask, h_prev, d_hs, d_last):
        steps = tf.shape(xp)[0]
        xs, ms, hp, dhs = unstacked(xp, mask, h_prev, d_hs)

        def body(t, dh, dx, dinner):
            t = t - 1
            dh, dxt, dit = backward_step(xs.read(t), hp.read(t), dh + dhs.read(t), ms.read(t))
            return t, dh, dx.write(t, dxt), dinner.write(t, dit)

        arrays = (tf.TensorArray(xp.dtype, size=steps), tf.TensorArray(xp.dtype, size=steps))
        _, dh0, dx, dinner = tf.while_loop(lambda t, *_: t > 0, body, (steps, d_last, *arrays))
        d_inner = tf.reshape(dinner.stack(), (-1, 3 * units))
        d_rk = tf.matmul(tf.reshape(h_prev, (-1, units)), d_inner, transpose_a=True)
        return dx.stack(), dh0, d_rk, tf.reduce_sum(d_inner, axis=0)

    forward_loop, backward_loop = tf.function(forward_loop, jit_compile=True), tf.function(backward_loop, jit_compile=True)

    @tf.custom_gradient
    def run(xp, h0, rk_in, rb_in):
        hs, h_last = forward_loop(xp, mask, h0)
        h_prev = tf.concat([h0[None], hs[:-1]], axis=0)
        return (hs, h_last), lambda d_hs, d_last: backward_loop(xp, mask, h_prev, d_hs, d_last)

    return run(xp, h0, rk, rb)


def kept_gates_sequence(xp: Any, mask: Any, h0: Any, rk: Any, rb: Any) -> tuple[Any, Any]:
    """Tried in §9, not kept: gru_sequence with the forward loop keeping each step's gates (z, r, n, the product's
    candidate part, [T, B, 4U]) for the loop back, which then runs one product a step instead of recomputing two."""
    import tensorflow as tf

    units = rk.shape[0]
    mask = tf.ones_like(xp[..., :1]) if mask is None else mask

    @tf.custom_gradient
    def run(xp, h0, rk, rb):
        steps = tf.shape(xp)[0]
        xs, ms = (tf.TensorArray(xp.dtype, size=steps, clear_after_read=False).unstack(t) for t in (xp, mask))

        def forward(t, h, out, kept):
            x = xs.read(t)
            inner = tf.matmul(h, rk) + rb
            zr = tf.sigmoid(x[:, : 2 * units] + inner[:, : 2 * units])
            inner_h = inner[:, 2 * units :]
            n = tf.tanh(x[:, 2 * units :] + zr[:, units:] * inner_h)
            h = h + ms.read(t) * (1.0 - zr[:, :units]) * (n - h)
            return t + 1, h, out.write(t, h), kept.write(t, tf.concat([zr, n, inner_h], axis=1))

        arrays = (tf.TensorArray(xp.dtype, size=steps), tf.TensorArray(xp.dtype, size=steps, clear_after_read=False))
        _, h_last, out, kept = tf.while_loop(lambda t, *_: t < steps, forward, (0, h0, *arrays))
        hs = out.stack()
        h_prev = tf.concat([h0[None], hs[:-1]], axis=0)

        def grad(d_hs, d_last):
            hp_ta, dh_ta = (tf.TensorArray(xp.dtype, size=steps, clear_after_read=False).unstack(t) for t in (h_prev, d_hs))

            def backward(t, dh, dx, dinner):
                t = t - 1
                gates, hp = kept.read(t), hp_ta.read(t)
                zr, n, inner_h = gates[:, : 2 * units], gates[:, 2 * units : 3 * units], gates[:, 3 * units :]
                z, r = zr[:, :units], zr[:, units:]
                dh = dh + dh_ta.read(t)
                dhn = ms.read(t) * dh
                da_n = dhn * (1.0 - z) * (1.0 - n * n)
                da_zr = tf.concat([dhn * (hp - n), da_n * inner_h], axis=1) * zr * (1.0 - zr)
                d_inner = tf.concat([da_zr, da_n * r], axis=1)
                dh = dh - dhn * (1.0 - z) + tf.matmul(d_inner, rk, transpose_b=True)
                return t, dh, dx.write(t, tf.concat([da_zr, da_n], axis=1)), dinner.write(t, d_inner)

            arrays = (tf.TensorArray(xp.dtype, size=steps), tf.TensorArray(xp.dtype, size=steps))
            _, dh0, dx, dinner = tf.while_loop(lambda t, *_: t > 0, backward, (steps, d_last, *arrays))
            d_inner = tf.reshape(dinner.stack(), (-1, 3 * units))
            d_rk = tf.matmul(tf.reshape(h_prev, (-1, units)), d_inner, transpose_a=True)
            return dx.stack(), dh0, d_rk, tf.reduce_sum(d_inner, axis=0)

        return (hs, h_last), grad

    return run(xp, h0, rk, rb)


def products_only(xp: Any, mask: Any, h0: Any, rk: Any, rb: Any) -> tuple[Any, Any]:
    """The two loops with only their products: h @ rk a step forward, two products a step back."""
    import tensorflow as tf

    units, steps = rk.shape[0], tf.shape(xp)[0]

    @tf.custom_gradient
    def run(xp, h0, rk, rb):
        def forward(t, h, out):
            h = tf.matmul(h, rk)[:, :units]
            return t + 1, h, out.write(t, h)

        _, h_last, out = tf.while_loop(lambda t, *_: t < steps, forward, (0, h0, tf.TensorArray(xp.dtype, size=steps)))

        def grad(d_hs, d_last):
            def backward(t, dh, dx):
                product = tf.matmul(dh, rk)
                return t - 1, tf.matmul(product, rk, transpose_b=True), dx.write(t - 1, product)

            _, dh0, dx = tf.while_loop(lambda t, *_: t > 0, backward, (steps, d_last, tf.TensorArray(xp.dtype, size=steps)))
            return dx.stack(), dh0, tf.zeros_like(rk), tf.zeros_like(rb)

        return (out.stack(), h_last), grad

    return run(xp, h0, rk, rb)


def variants() -> dict[str, Callable[..., Any]]:
    from tasks.fused_rnn import gru_sequence

    # FusedGRU passes its turn (compiled=, chunk=): each variant but current is what it is whatever the layer asks.
    def turn(k: int) -> Callable[..., Any]:
        return lambda *a, **_: gru_sequence(*a, compiled=True, chunk=k)

    return {
        "current": gru_sequence, "graph": lambda *a, **_: gru_sequence(*a, compiled=False, chunk=1),
        "kept": lambda *a, **_: kept_gates_sequence(*a), "xla_loop": lambda *a, **_: xla_loop_sequence(*a),
        "xla_step": turn(1), **{f"turn{k}": turn(k) for k in (2, 4, 16, 32)},
        "products": lambda *a, **_: products_only(*a),
    }


def steps(widths: list[int], rounds: int, names: list[str], batch: int = 64, units: int = 64) -> None:
    import numpy as np
    import tensorflow as tf

    table = variants()
    spec = [tf.TensorSpec([None, None, 3 * units]), tf.TensorSpec([None, None, 1]), tf.TensorSpec([None, units]),
            tf.TensorSpec([units, 3 * units]), tf.TensorSpec([3 * units]), tf.TensorSpec([None, None, units])]

    def traced(sequence):
        @tf.function(input_signature=spec)
        def call(xp, m, h0, rk, rb, w):
            with tf.GradientTape() as tape:
                tape.watch([xp, h0, rk, rb])
                hs, h_last = sequence(xp, m, h0, rk, rb)
                loss = tf.reduce_sum(hs * w) + tf.reduce_sum(h_last)
            return (hs, h_last), tape.gradient(loss, [xp, h0, rk, rb])
        return call

    calls = {name: traced(table[name]) for name in names}
    rng = np.random.default_rng(0)
    for width in widths:
        lengths = rng.integers(1, width + 1, size=batch)
        lengths[0] = width
        args = [rng.normal(size=(width, batch, 3 * units)), (np.arange(width)[:, None] < lengths)[:, :, None],
                0.1 * rng.normal(size=(batch, units)), 0.2 * rng.normal(size=(units, 3 * units)), 0.1 * rng.normal(size=3 * units),
                rng.normal(size=(width, batch, units))]
        args = [tf.constant(np.asarray(a, dtype="float32")) for a in args]
        results, best = {}, {}
        for name, call in calls.items():
            started = time.perf_counter()
            results[name] = [t.numpy() for t in tf.nest.flatten(call(*args))]
            print(f"T={width} {name}: first call (tracing, compiling) {time.perf_counter() - started:.2f} s", flush=True)
        for _ in range(rounds):
            for name, call in calls.items():
                started = time.perf_counter()
                for _ in range(5):
                    call(*args)
                best[name] = min(best.get(name, float("inf")), 1000 * (time.perf_counter() - started) / 5)
        first = results[names[0]]
        for name in names:
            diff = max(float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) or 1.0)) for a, b in zip(results[name], first))
            print(f"T={width} {name:10s} {best[name]:8.2f} ms a call  {1000 * best[name] / width:6.1f} us a step  "
                  f"(largest difference from {names[0]}, relative: {diff:.1e})", flush=True)


def epochs(encode: str, rows: int, repeats: int, names: list[str]) -> None:
    from pathlib import Path

    import keras

    import tasks.fused_rnn as fused_rnn
    from tasks.config import load_config
    from tasks.encode import load_arrays
    from tasks.length_buckets import memmap_dataset
    from tasks.models import build_model
    from tasks.train import compile_settings

    cfg = load_config("default")
    x, y = load_arrays(Path(encode), "train")
    x, y = x[:rows], y[:rows]
    table, models, weights = variants(), {}, None
    for name in names:
        fused_rnn.gru_sequence = table[name]  # read when the train function is traced, in the warm-up fit below
        keras.utils.set_random_seed(cfg.train.seed)
        model = build_model(cfg.model, num_tokens=int(x.max()) + 1, max_len=None, n_classes=2, fused_input=True)
        model.compile(**compile_settings(cfg.model, cfg.train, 2))
        weights = weights or model.get_weights()
        model.set_weights(weights)
        warm, warm_steps = memmap_dataset(x[:640], y[:640], cfg.train.batch_size, epochs=1, seed=0, bucket=True)
        model.fit(warm, steps_per_epoch=warm_steps, epochs=1, verbose=0)
        models[name] = model
    fused_rnn.gru_sequence = table["current"]
    for repeat in range(repeats):
        for name, model in models.items():
            data, steps_per_epoch = memmap_dataset(x, y, cfg.train.batch_size, epochs=1, seed=cfg.train.seed + repeat, bucket=True)
            started, cpu = time.perf_counter(), time.process_time()
            history = model.fit(data, steps_per_epoch=steps_per_epoch, epochs=1, verbose=0)
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
            print(f"repeat {repeat + 1} {name:10s} epoch of {len(x):,} rows: {seconds:6.2f} s  {len(x) / seconds:7.1f} samples/s  CPU {cpu:6.2f} s  "
                  f"loss {history.history['loss'][0]:.4f}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("steps", "epochs"))
    parser.add_argument("--widths", default="64,224")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--variants", default=None, help="comma-separated; steps: current,graph,kept,xla_loop,xla_step,products; epochs: any but products")
    parser.add_argument("--encode", help="an encode step's folder (epochs)")
    parser.add_argument("--rows", type=int, default=8000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    if args.mode == "steps":
        names = (args.variants or "current,graph,kept,xla_loop,products").split(",")
        steps([int(w) for w in args.widths.split(",")], args.rounds, names)
    else:
        if not args.encode:
            sys.exit("epochs needs --encode DIR (an encode step's folder: X_train.npy, y_train.npy)")
        epochs(args.encode, args.rows, args.repeats, (args.variants or "current,graph").split(","))


if __name__ == "__main__":
    main()
