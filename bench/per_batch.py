"""python -m bench.per_batch widths|graph|profile 0/1|spe: where a train batch's time goes (issue 31, docs/training-speed.md §7, §8).

widths: the default preset's model fitted on batches of 64 synthetic rows 32, 64, 128 and 256 tokens wide (the train
step's memmap_dataset, bucketed), train.fused_input on then off; a line fitted through ms per batch against width
gives the cost per batch (intercept) and per time step (slope). A batch is timed from one batch's end to the next
(a callback's clock, the first 5 left out), so fit's own start (about 0.7 s a call) is not spread over the batches:
the first version divided each fit's whole time by its 40 batches and so put about 18 ms of it in every batch.
graph: Keras' train function called on one fixed batch (no tf.data, no callbacks) at widths 1, 8, 32 and 128, with
Adam and with SGD: the fixed part inside the graph, and the optimizer's share of it.
profile 1 (or 0): cProfile of 150 batches 32 wide, fused (or not). spe: steps_per_execution 1 against 16 on 300
batches 32 wide.
"""
import cProfile
import io
import pstats
import sys
import time

import keras
import numpy as np

from tasks.config import load_config
from tasks.models import build_model
from tasks.train import compile_settings, memmap_dataset
cfg = load_config("default")
rng = np.random.default_rng(0)
def data(width, n=64 * 40):
    x = np.zeros((n, 400), np.int32)
    x[:, :width] = rng.integers(3, 3000, size=(n, width))
    return x, rng.integers(0, 2, n).astype(np.int32)
class BatchClock(keras.callbacks.Callback):
    """perf_counter at each train batch's end."""

    def on_train_begin(self, logs=None):
        self.ends = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())


def steady_ms(model, x, y):
    """Median ms between consecutive train batches' ends (the first 5 batches left out)."""
    ds, steps = memmap_dataset(x, y, 64, epochs=1, seed=1, bucket=True)
    clock = BatchClock()
    model.fit(ds, steps_per_epoch=steps, epochs=1, shuffle=False, verbose=0, callbacks=[clock])
    return 1000 * float(np.median(np.diff(clock.ends)[5:]))


def call_ms(function, iterator, calls):
    """ms per call of Keras' train function on iterator, after one warm-up call."""
    function(iterator)
    started = time.perf_counter()
    for _ in range(calls):
        function(iterator)
    return 1000 * (time.perf_counter() - started) / calls


def fit(model, x, y, epochs=1, spe=None):
    ds, steps = memmap_dataset(x, y, 64, epochs=epochs, seed=1, bucket=True)
    t = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=epochs, shuffle=False, verbose=0)
    return (time.perf_counter() - t) / (steps * epochs)
mode = sys.argv[1] if __name__ == "__main__" and len(sys.argv) > 1 else ""  # nothing runs on import
if mode == "widths":
    for fused in (True, False):
        keras.utils.set_random_seed(1)
        m = build_model(cfg.model, num_tokens=3000, max_len=None, n_classes=2, fused_input=fused)
        m.compile(**compile_settings(cfg.model, cfg.train, 2))
        for w in (32, 64, 128, 256): fit(m, *data(w, 64 * 4))  # trace each width
        res = {}
        for w in (32, 64, 128, 256):
            res[w] = min(steady_ms(m, *data(w)) for _ in range(2))
        ws = np.array(list(res)); ts = np.array(list(res.values()))
        b, a = np.polyfit(ws, ts, 1)
        print("fused" if fused else "keras", {k: round(v, 1) for k, v in res.items()}, "ms/batch; fit: %.1f ms per batch + %.3f ms per step" % (a, b), flush=True)
elif mode == "graph":
    import tensorflow as tf

    lines = {}
    for optimizer in ("adam", "sgd"):
        keras.utils.set_random_seed(1)
        m = build_model(cfg.model, num_tokens=3000, max_len=None, n_classes=2, fused_input=True)
        settings = compile_settings(cfg.model, cfg.train, 2)
        if optimizer == "sgd":
            settings["optimizer"] = keras.optimizers.SGD(0.01)
        m.compile(**settings)
        m.make_train_function()
        res = {}
        for w in (1, 8, 32, 128):
            x, y = data(w, 64)
            batch = iter(tf.data.Dataset.from_tensors((x[:, :w], y)).repeat())
            res[w] = min(call_ms(m.train_function, batch, 30 if w < 100 else 10) for _ in range(3))
        b, a = np.polyfit(list(res), list(res.values()), 1)
        print(optimizer, {k: round(v, 2) for k, v in res.items()}, "ms per train call; fit: %.2f ms per call + %.3f ms per step" % (a, b), flush=True)
elif mode == "profile":
    fused = sys.argv[2] == "1"
    keras.utils.set_random_seed(1)
    m = build_model(cfg.model, num_tokens=3000, max_len=None, n_classes=2, fused_input=fused)
    m.compile(**compile_settings(cfg.model, cfg.train, 2))
    x, y = data(32, 64 * 150)
    fit(m, x[:640], y[:640])
    pr = cProfile.Profile(); pr.enable()
    per = fit(m, x, y)
    pr.disable()
    print("ms/batch", per * 1000)
    s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(25); print(s.getvalue()[:6000])
if mode == "spe":
    x, y = data(32, 64 * 300)
    models = {}
    for spe in (1, 16):
        keras.utils.set_random_seed(1)
        m = build_model(cfg.model, num_tokens=3000, max_len=None, n_classes=2, fused_input=True)
        m.compile(**compile_settings(cfg.model, cfg.train, 2), steps_per_execution=spe)
        fit(m, x[:64 * 32], y[:64 * 32]); models[spe] = m
    for r in range(2):
        for spe, m in models.items():
            print("steps_per_execution", spe, "ms/batch %.2f" % (1000 * fit(m, x, y)), flush=True)
    # retracing over bucket widths
    m = models[1]
    for w in (32, 64, 96, 128, 160, 192, 224, 256, 288, 320):
        fit(m, *data(w, 128))
    print("train_function traces after 11 widths:", m.train_function.experimental_get_tracing_count() if hasattr(m.train_function, "experimental_get_tracing_count") else "n/a")
