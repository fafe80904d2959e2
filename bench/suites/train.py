"""train: training samples per second on the CPU, per preset, over one epoch of N reviews.

The archive is ingested once (enough reviews for N in train), encoded once per preset with
that preset's encode section, and each preset's model (tasks.models.build_model) is fitted
for one epoch on the first N train reviews, with the preset's optimizer and batch size, no
validation and no callbacks but a clock per batch. The first batch carries graph tracing,
so a steady rate without it is reported as well.
"""

from __future__ import annotations

import math
import time
from typing import Any


from tasks.config import load_config
from tasks.encode import encode_reviews, load_arrays
from tasks.ingest import ingest_reviews, locate_source
from tasks.models import build_model, cudnn_eligible
from tasks.store import read_json

from bench.measure import fresh_dir, median, relative
from bench.options import BenchOptions

OPTIMIZERS = ("adam", "rmsprop", "sgd")


def _batch_clock() -> Any:
    import keras

    class BatchClock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.started = time.perf_counter()
            self.first_batch_end = None

        def on_train_batch_end(self, batch, logs=None):
            if self.first_batch_end is None:
                self.first_batch_end = time.perf_counter()

        def on_train_end(self, logs=None):
            self.ended = time.perf_counter()

    return BatchClock()


def run(opts: BenchOptions) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    work = fresh_dir(opts.work_dir / "train")
    n = opts.train_reviews
    base = load_config("default", overrides=[f"data.path={opts.archive}"])
    # Enough reviews per split that the train split (after carving validation) holds n.
    per_split = math.ceil(n / (1 - base.data.val_fraction)) + 1
    data_cfg = base.data.model_copy(update={"max_reviews": per_split})
    ingest_dir = fresh_dir(work / "ingest")
    ingest_reviews(data_cfg, locate_source(data_cfg), ingest_dir)

    gpus = tf.config.list_physical_devices("GPU")
    devices = ["/CPU:0"] + (["/GPU:0"] if gpus else [])
    rows = []
    for preset in opts.train_presets:
        cfg = load_config(preset)
        encode_dir = fresh_dir(work / f"encode-{preset}")
        encode_reviews(cfg.encode, ingest_dir, encode_dir)
        encoding = read_json(encode_dir / "encode.json")
        x, y = load_arrays(encode_dir, "train", mmap=False)
        x, y = x[:n], y[:n]
        for device in devices:
            epoch_times, steady_rates, params = [], [], None
            for _ in range(opts.repeats):
                keras.backend.clear_session()
                keras.utils.set_random_seed(cfg.train.seed)
                with tf.device(device):
                    model = build_model(cfg.model, num_tokens=encoding["num_words"], max_len=encoding["max_len"], n_classes=2)
                    optimizer = getattr(keras.optimizers, {"adam": "Adam", "rmsprop": "RMSprop", "sgd": "SGD"}[cfg.train.optimizer])
                    model.compile(optimizer=optimizer(learning_rate=cfg.train.learning_rate), loss="binary_crossentropy", metrics=["accuracy"])
                    clock = _batch_clock()
                    model.fit(x, y, batch_size=cfg.train.batch_size, epochs=1, shuffle=True, verbose=0, callbacks=[clock])
                params = int(model.count_params())
                epoch = clock.ended - clock.started
                after_first = clock.ended - clock.first_batch_end
                epoch_times.append(round(epoch, 3))
                rest = len(y) - min(cfg.train.batch_size, len(y))
                steady_rates.append(round(rest / after_first, 1) if rest and after_first > 0 else None)
            mid = median(epoch_times)
            rows.append({
                "name": preset,
                "device": "CPU" if "CPU" in device else "GPU",
                "command": f"in-process: tasks.models.build_model(preset {preset}) + model.fit, 1 epoch on {len(y)} train reviews "
                           f"of {relative(opts.archive)}" + (f" (tf.device {device})" if gpus else ""),
                "model": {"cell": cfg.model.stack_cells or cfg.model.cell, "units": cfg.model.stack_units or cfg.model.units,
                          "input": cfg.model.input, "bidirectional": cfg.model.bidirectional, "params": params},
                "num_words": encoding["num_words"], "max_len": encoding["max_len"], "batch_size": cfg.train.batch_size,
                "optimizer": cfg.train.optimizer,
                "cudnn_eligible": cudnn_eligible(cfg.model, cfg.encode.padding),
                "n": len(y),
                "timings_s": epoch_times,
                "median_s": mid,
                "samples_per_s": round(len(y) / mid, 1) if mid else None,
                "steady_samples_per_s": median(steady_rates),
            })
    gpu_note = (f"GPU: measured on {len(gpus)} device(s) visible to TensorFlow." if gpus
                else "GPU: not measured: no GPU lent to this session (TensorFlow sees none).")
    return {
        "description": "Training samples/s per preset on the CPU over one epoch; cuDNN eligibility from tasks.models.cudnn_eligible.",
        "rows": rows,
        "summary": {"gpu": gpu_note, "train_reviews": n, "devices": [("CPU" if "CPU" in d else "GPU") for d in devices]},
        "goals": [],
        "notes": [
            "samples_per_s = reviews / epoch seconds (tracing included); steady_samples_per_s leaves out the first batch, "
            "which carries graph tracing.",
            "cudnn_eligible says whether the preset's recurrent layers could use the fused cuDNN kernel on a GPU "
            "(LSTM/GRU, and post-padding when padding is masked); it does not matter on the CPU.",
        ],
    }
