"""train: training samples per second per preset on the CPU, train.fused_input off and on side by side, against a roofline.

The archive is ingested once (enough reviews for N in train), encoded once per preset with that
preset's encode section, and each preset's model (tasks.models.build_model) is fitted for a short
fit (--epochs, default 2) on the first N train reviews, with the preset's optimizer and batch size,
no validation and no callbacks but a clock per epoch, then scored on the test split (max_len-padded
rows, as evaluate reads them). Each repeat fits with train.fused_input off (Keras' own GRU/LSTM), then on
(tasks/fused_rnn.py), alternating, same seed and same batches (the train step's: tasks.train.memmap_dataset,
bucketed where tasks.train.bucketed says so), so both see the same load on the machine. Then the roofline
(bench/roofline.py): TensorFlow's matmul rate on this machine, a large square and the presets' shapes, and
each row's training FLOP rate against it. (bucket_by_length off against on was issue 20's comparison:
docs/training-speed.md.)

`python -m bench.suites.train grouping|threads|determinism ...` are the one-off measurements that
chose how (docs/training-speed.md): how rows are grouped (the train step's buckets, tf.data's
bucket_by_sequence_length, sorted chunks), thread counts and XLA, and the cost of train.deterministic.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tasks.config import load_config
from tasks.encode import encode_reviews, load_arrays
from tasks.ingest import ingest_reviews, locate_source
from tasks.models import build_model, cudnn_eligible
from tasks.store import read_json

from bench.measure import fresh_dir, median, relative
from bench.options import BenchOptions

OPTIMIZERS = {"adam": "Adam", "rmsprop": "RMSprop", "sgd": "SGD"}
SHORT_FIT_EPOCHS = 2  # the suite's fit when --epochs is not given (--quick: 1)
SPEED_GOAL = 1.6  # issue 31: the default preset's training samples/s at least this much higher with train.fused_input (issue 20: bucket_by_length)


def _epoch_clock() -> Any:
    import keras

    class EpochClock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.epochs: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.epochs.append(time.perf_counter() - self.started)

    return EpochClock()


def fit_once(cfg: Any, encoding: dict[str, Any], x: Any, y: Any, x_test: Any, y_test: Any, *, bucket: bool, epochs: int,
             device: str = "/CPU:0", jit_compile: bool | str = "auto", fused: bool | None = None) -> dict[str, Any]:
    """One short fit of cfg's model on (x, y) as the train step would batch it (bucket or not); its epoch times and test accuracy."""
    import keras
    import numpy as np
    import tensorflow as tf

    from tasks.evaluate import predict_probabilities
    from tasks.train import compile_settings, mean_batch_width, memmap_dataset

    keras.backend.clear_session()
    keras.utils.set_random_seed(cfg.train.seed)
    clock = _epoch_clock()
    with tf.device(device):
        model = build_model(cfg.model, num_tokens=encoding["num_words"], max_len=None if bucket else encoding["max_len"], n_classes=2,
                            fused_input=cfg.train.fused_input if fused is None else fused)
        model.compile(**compile_settings(cfg.model, cfg.train, 2), jit_compile=jit_compile)
        if bucket:
            data, steps = memmap_dataset(x, y, cfg.train.batch_size, epochs=epochs, seed=cfg.train.seed, bucket=True,
                                         right_padded=encoding["padding"] == "post")
            model.fit(data, steps_per_epoch=steps, epochs=epochs, shuffle=False, verbose=0, callbacks=[clock])
        else:
            model.fit(x, y, batch_size=cfg.train.batch_size, epochs=epochs, shuffle=True, verbose=0, callbacks=[clock])
        probabilities = predict_probabilities(model, x_test)
    return {
        "epoch_s": [round(t, 3) for t in clock.epochs],
        "test_accuracy": round(float((probabilities.argmax(axis=1) == np.asarray(y_test)).mean()), 4),
        "params": int(model.count_params()),
        "mean_batch_width": mean_batch_width(x, cfg.train.batch_size, cfg.train.seed) if bucket else encoding["max_len"],
    }


def _row(preset: str, p: dict[str, Any], device: str, bucket: bool, fused: bool, done: list[dict[str, Any]], epochs: int,
         opts: BenchOptions, gpus: bool) -> dict[str, Any]:
    """One bench row: a preset's fits with train.fused_input off or on, their median steady epoch and test accuracy."""
    cfg, encoding, n = p["cfg"], p["encoding"], len(p["y"])
    steady = median(_steady(r["epoch_s"]) for r in done)
    return {
        "name": preset, "device": "CPU" if "CPU" in device else "GPU",
        "bucket_by_length": "on" if bucket else "n/a (padding not masked)", "fused_input": "on" if fused else "off",
        "command": f"in-process: bench.suites.train.fit_once(preset {preset}, bucket={bucket}, fused={fused}), {epochs} epoch(s) on {n} "
                   f"train reviews of {relative(opts.archive)}, then predict on {len(p['y_test'])} test reviews" + (f" (tf.device {device})" if gpus else ""),
        "model": {"cell": cfg.model.stack_cells or cfg.model.cell, "units": cfg.model.stack_units or cfg.model.units,
                  "input": cfg.model.input, "bidirectional": cfg.model.bidirectional, "params": done[0]["params"]},
        "num_words": encoding["num_words"], "max_len": encoding["max_len"], "batch_size": cfg.train.batch_size, "optimizer": cfg.train.optimizer,
        "cudnn_eligible": cudnn_eligible(cfg.model, cfg.encode.padding), "n": n, "n_test": len(p["y_test"]), "epochs": epochs,
        "mean_batch_width": done[0]["mean_batch_width"], "epoch_s": [r["epoch_s"] for r in done],
        "first_epoch_s": median(r["epoch_s"][0] for r in done), "median_s": steady,
        "samples_per_s": round(n / steady, 1) if steady else None,
        "test_accuracy": median(r["test_accuracy"] for r in done), "test_accuracies": [r["test_accuracy"] for r in done],
    }


def _steady(epoch_s: list[float]) -> float:
    """The epochs after the first (which carries graph tracing), or the first when there is one."""
    return statistics.median(epoch_s[1:] or epoch_s)


def prepare(archive: Path, work: Path, presets: tuple[str, ...], n: int) -> dict[str, dict[str, Any]]:
    """Ingest once (enough reviews per split for n train rows), then each preset's encode: its arrays, n train rows and the test split."""
    base = load_config("default", overrides=[f"data.path={archive}"])
    per_split = math.ceil(n / (1 - base.data.val_fraction)) + 1
    data_cfg = base.data.model_copy(update={"max_reviews": per_split})
    ingest_dir = fresh_dir(work / "ingest")
    ingest_reviews(data_cfg, locate_source(data_cfg), ingest_dir)
    prepared = {}
    for preset in presets:
        cfg = load_config(preset)
        encode_dir = fresh_dir(work / f"encode-{preset}")
        encode_reviews(cfg.encode, ingest_dir, encode_dir)
        x, y = load_arrays(encode_dir, "train", mmap=False)
        x_test, y_test = load_arrays(encode_dir, "test", mmap=False)
        prepared[preset] = {"cfg": cfg, "encoding": read_json(encode_dir / "encode.json"), "x": x[:n], "y": y[:n],
                            "x_test": x_test, "y_test": y_test, "encode_dir": encode_dir}
    return prepared


def run(opts: BenchOptions) -> dict[str, Any]:
    import tensorflow as tf

    from tasks.train import bucketed

    work = fresh_dir(opts.work_dir / "train")
    epochs = opts.epochs or SHORT_FIT_EPOCHS
    prepared = prepare(opts.archive, work, opts.train_presets, opts.train_reviews)
    gpus = tf.config.list_physical_devices("GPU")
    devices = ["/CPU:0"] + (["/GPU:0"] if gpus else [])
    rows, speedups = [], {}
    for preset, p in prepared.items():
        cfg, encoding = p["cfg"], p["encoding"]
        bucket = bucketed(cfg.model, cfg.train, 0)
        modes = (False, True)  # train.fused_input off (Keras' layers), on
        for device in devices:
            runs: dict[bool, list[dict[str, Any]]] = {mode: [] for mode in modes}
            for _ in range(opts.repeats):
                for mode in modes:  # off, on, off, on, ...: both under the same load
                    runs[mode].append(fit_once(cfg, encoding, p["x"], p["y"], p["x_test"], p["y_test"], bucket=bucket, epochs=epochs,
                                               device=device, fused=mode))
            by_mode = {mode: _row(preset, p, device, bucket, mode, runs[mode], epochs, opts, bool(gpus)) for mode in modes}
            on, off = by_mode[True], by_mode[False]
            on["speedup"] = round(on["samples_per_s"] / off["samples_per_s"], 2) if on["samples_per_s"] and off["samples_per_s"] else None
            speedups[(preset, on["device"])] = (on["speedup"], on, off)
            rows += [off, on]
    from bench.roofline import roofline

    roof = roofline(rows, {preset: (p["cfg"].model, p["encoding"]["num_words"]) for preset, p in prepared.items()})
    gpu_note = (f"GPU: measured on {len(gpus)} device(s) visible to TensorFlow." if gpus
                else "GPU: not measured: no GPU lent to this session (TensorFlow sees none).")
    goals = []
    if ("default", "CPU") in speedups:
        ratio, on, off = speedups[("default", "CPU")]
        goals.append({
            "goal": "default preset's train step ≥ 1.6× faster", "target": f"≥ {SPEED_GOAL}×", "observed": ratio,
            "met": None if ratio is None else ratio >= SPEED_GOAL,
            "basis": f"median steady epoch, train.fused_input on against off (issue 31), {on['n']:,} train reviews, {epochs} epoch(s); "
                     f"test accuracy on {on['test_accuracy']} / off {off['test_accuracy']} after this short fit "
                     "(the issue judges accuracy on the whole preset: docs/training-speed.md)",
            "note": None,
        })
    return {
        "description": "Training samples/s per preset on the CPU, train.fused_input off and on, against the machine's matmul rate; "
                       "cuDNN eligibility from tasks.models.cudnn_eligible.",
        "rows": rows,
        "summary": {"gpu": gpu_note, "train_reviews": opts.train_reviews, "epochs": epochs, "roofline": roof,
                    "devices": [("CPU" if "CPU" in d else "GPU") for d in devices],
                    "speedups": {f"{preset} ({device})": ratio for (preset, device), (ratio, _, _) in speedups.items()}},
        "goals": goals,
        "notes": [
            "median epoch s: the median epoch after the first (the first carries graph tracing; first epoch s shows it); "
            "samples/s = train reviews / median epoch s. With --epochs 1 (--quick) the first epoch is all there is.",
            "fused_input off: Keras' GRU/LSTM (the input product inside every step of the loop); on: tasks/fused_rnn.py (one input "
            "product per batch, GRU's gradient written out). Batches bucketed by length where the train step buckets them (mean batch "
            "width, against max_len). Test accuracy after this short fit on the test reviews, max_len-padded, as evaluate reads them.",
            "roofline: train GFLOP/s = samples/s x the matrix-multiply FLOPs of one sample (bench/roofline.py: recurrent products "
            "forward and backward over the mean batch width); of peak = that / TensorFlow's matmul rate on a large square product.",
            "cudnn_eligible says whether the preset's recurrent layers could use the fused cuDNN kernel on a GPU "
            "(LSTM/GRU, and post-padding when padding is masked); it does not matter on the CPU.",
        ],
    }


# --------------------------------------------------------------------------- one-off measurements (docs/training-speed.md)


def _subset(archive: str, work: Path, reviews: int, preset: str = "default") -> dict[str, Any]:
    """One ingest + encode of `reviews` reviews per split (kept in work/, reused when there), with val carved out as the train step does."""
    import numpy as np

    from tasks.train import TrainingData

    cfg = load_config(preset, overrides=[f"data.path={archive}", f"data.max_reviews={reviews}"])
    ingest_dir, encode_dir = work / f"ingest-{reviews}", work / f"encode-{preset}-{reviews}"
    if not (ingest_dir / "ingest.json").exists():
        fresh_dir(ingest_dir)
        ingest_reviews(cfg.data, locate_source(cfg.data), ingest_dir)
    if not (encode_dir / "encode.json").exists():
        fresh_dir(encode_dir)
        encode_reviews(cfg.encode, ingest_dir, encode_dir)
    encoding = read_json(encode_dir / "encode.json")
    arrays = {split: load_arrays(encode_dir, split, mmap=False) for split in ("train", "val", "test")}
    data = TrainingData(*arrays["train"], *arrays["val"], encoding, 2, streamed=False)
    return {"cfg": cfg, "data": data, "x_test": arrays["test"][0], "y_test": arrays["test"][1], "encode_dir": encode_dir,
            "lengths": np.count_nonzero(arrays["train"][0], axis=1)}


def _tf_data_buckets(x: Any, y: Any, batch_size: int, seed: int, max_len: int) -> Any:
    """The alternative grouping: tf.data's bucket_by_sequence_length over a seeded shuffle of the rows (right-padded rows)."""
    import numpy as np
    import tensorflow as tf

    from tasks.train import BUCKET_STEP

    lengths = np.count_nonzero(x, axis=1).astype(np.int32)
    boundaries = list(range(BUCKET_STEP + 1, max_len + 1, BUCKET_STEP)) + [max_len + 1]
    rows = tf.data.Dataset.from_tensor_slices((x, y, lengths))
    rows = rows.shuffle(len(y), seed=seed, reshuffle_each_iteration=True).map(lambda row, label, n: (row[:n], label))
    batched = rows.bucket_by_sequence_length(
        element_length_func=lambda row, label: tf.shape(row)[0], bucket_boundaries=boundaries,
        bucket_batch_sizes=[batch_size] * (len(boundaries) + 1), pad_to_bucket_boundary=True,
    )
    return batched.prefetch(tf.data.AUTOTUNE)  # Keras iterates it afresh each epoch: a new shuffle each time


CHUNK_BATCHES = 32  # the chunks variant: rows sorted by length inside chunks of this many batches


def _sorted_chunks(x: Any, y: Any, batch_size: int, seed: int) -> Any:
    """The alternative measured first: each epoch a permutation (seed + epoch) cut into chunks of CHUNK_BATCHES batches,
    each chunk sorted by length and cut into batches, all batches shuffled; each padded to bucket_width of its longest row."""
    import numpy as np
    import tensorflow as tf

    from tasks.train import bucket_width

    lengths, max_len = np.count_nonzero(x, axis=1), x.shape[1]
    epochs = iter(range(10**6))

    def batches():
        rng = np.random.default_rng(seed + next(epochs))
        order, chunk, planned = rng.permutation(len(y)), batch_size * CHUNK_BATCHES, []
        for first in range(0, len(y), chunk):
            rows = order[first : first + chunk]
            rows = rows[np.argsort(lengths[rows], kind="stable")]
            planned += [np.sort(rows[s : s + batch_size]) for s in range(0, len(rows), batch_size)]
        for i in rng.permutation(len(planned)):
            index = planned[i]
            yield x[index][:, : bucket_width(lengths[index].max(), max_len)], y[index]

    spec = (tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None], tf.int32))
    return tf.data.Dataset.from_generator(batches, output_signature=spec).prefetch(tf.data.AUTOTUNE)


def grouping(args: argparse.Namespace) -> list[dict[str, Any]]:
    """bucket_by_length off; on (buckets: the train step's epoch_batches); tf.data's own bucket_by_sequence_length over a
    seeded shuffle; and seeded shuffles inside length-sorted chunks (the first thing tried); per seed. Validation is the train
    step's, bucketed for all but off."""
    import keras
    import numpy as np

    from tasks.evaluate import predict_probabilities
    from tasks.models import build_model
    from tasks.train import compile_settings, member_callbacks, member_inputs

    subset = _subset(args.archive, Path(args.work), args.reviews)
    cfg, data = subset["cfg"], subset["data"]
    max_len = data.encoding["max_len"]
    results = []
    for seed in args.seeds:
        train_cfg = cfg.train.model_copy(update={"seed": seed, "epochs": args.epochs})
        for variant in args.variants:
            keras.backend.clear_session()
            keras.utils.set_random_seed(seed)
            bucket = variant != "off"
            model = build_model(cfg.model, num_tokens=data.encoding["num_words"], max_len=None if bucket else max_len, n_classes=2)
            model.compile(**compile_settings(cfg.model, train_cfg, 2))
            inputs = member_inputs(data, train_cfg, 0, next_token=False, bucket=bucket)
            if variant == "tf_data":
                inputs["x"] = _tf_data_buckets(data.x_train, data.y_train, train_cfg.batch_size, seed, max_len)
            elif variant == "chunks":
                inputs["x"] = _sorted_chunks(data.x_train, data.y_train, train_cfg.batch_size, seed)
            if variant in ("tf_data", "chunks"):  # Keras reads each epoch's batches afresh from these
                inputs.pop("steps_per_epoch")
            callbacks = member_callbacks(train_cfg, 0, Path(args.work) / f"grouping-{variant}-{seed}.keras", None)
            started = time.perf_counter()
            fitted = model.fit(**inputs, epochs=args.epochs, callbacks=callbacks, verbose=0)
            seconds = time.perf_counter() - started
            history = fitted.history
            accuracy = float((predict_probabilities(model, subset["x_test"]).argmax(axis=1) == subset["y_test"]).mean())
            epochs_run = len(history["loss"])
            result = {"variant": variant, "seed": seed, "epochs_run": epochs_run, "train_s": round(seconds, 1),
                      "samples_per_s": round(len(data.y_train) * epochs_run / seconds, 1),
                      "best_val_loss": round(min(history["val_loss"]), 4), "best_epoch": int(np.argmin(history["val_loss"])) + 1,
                      "test_accuracy": round(accuracy, 4)}
            print(json.dumps(result), flush=True)
            results.append(result)
    return results


_THREAD_CHILD = """
import json, os, sys, time
intra, inter, jit, cell, reviews, work, archive, bucket, rows, epochs = sys.argv[1:11]
import tensorflow as tf
if int(intra): tf.config.threading.set_intra_op_parallelism_threads(int(intra))
if int(inter): tf.config.threading.set_inter_op_parallelism_threads(int(inter))
from bench.suites.train import _subset, fit_once
from pathlib import Path
subset = _subset(archive, Path(work), int(reviews))
cfg = subset["cfg"].model_copy(update={"model": subset["cfg"].model.model_copy(update={"cell": cell})})
data = subset["data"]
n = min(len(data.y_train), int(rows))
r = fit_once(cfg, data.encoding, data.x_train[:n], data.y_train[:n], subset["x_test"][:500], subset["y_test"][:500],
             bucket=bucket == "1", epochs=int(epochs), jit_compile=jit == "1")
print("RESULT " + json.dumps({"n": n, **r}))
"""


def threads(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each (intra, inter, jit) setting in its own process (thread counts are fixed at TensorFlow's start): --epochs epochs of
    --rows train rows of the default preset's encode (the model's cell changed to each of --cells), alternating the order."""
    _subset(args.archive, Path(args.work), args.reviews)  # once, before the children reuse it
    settings = [(intra, inter, jit) for jit in args.jit for intra, inter in args.threads]
    results = []
    for repeat in range(args.repeats):
        for cell in args.cells:
            for intra, inter, jit in (settings if repeat % 2 == 0 else settings[::-1]):
                argv = [sys.executable, "-c", _THREAD_CHILD, str(intra), str(inter), str(int(jit)), cell, str(args.reviews), args.work,
                        args.archive, str(int(args.bucket)), str(args.rows), str(args.epochs)]
                done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
                line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
                if line is None:
                    print(done.stderr[-2000:], file=sys.stderr)
                    continue
                r = json.loads(line[len("RESULT "):])
                result = {"cell": cell, "intra": intra, "inter": inter, "jit_compile": jit, "bucket": args.bucket, "repeat": repeat,
                          "rows": r["n"], "fit_s": round(sum(r["epoch_s"]), 2), "first_epoch_s": r["epoch_s"][0],
                          "steady_epoch_s": round(_steady(r["epoch_s"]), 3),
                          "samples_per_s": round(r["n"] / _steady(r["epoch_s"]), 1), "epoch_s": r["epoch_s"]}
                print(json.dumps(result), flush=True)
                results.append(result)
    return results


def determinism(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The same short fit twice with train.deterministic off, twice on (train_model + evaluate_model each time): figures and seconds."""
    import tempfile

    from tasks.evaluate import evaluate_model

    from tasks.train import train_model

    subset = _subset(args.archive, Path(args.work), args.reviews)
    cfg, encode_dir = subset["cfg"], subset["encode_dir"]

    results = []
    for repeat in range(args.repeats):
        for deterministic in (False, True):
            out = Path(tempfile.mkdtemp(dir=args.work))
            (out / "train").mkdir()
            (out / "evaluate").mkdir()
            train_cfg = cfg.train.model_copy(update={"epochs": args.epochs, "deterministic": deterministic})
            train_model(cfg.model, train_cfg, encode_dir, out / "train")
            evaluate_model(encode_dir, out / "train", out / "evaluate")
            test = read_json(out / "evaluate" / "metrics.json")["test"]
            info = read_json(out / "train" / "train.json")
            result = {"deterministic": deterministic, "repeat": repeat, "train_s": info["seconds"], "epochs_run": info["epochs_run"],
                      "best_val_loss": info["best_val_loss"], "test": {k: test[k] for k in ("accuracy", "loss", "roc_auc")}}
            print(json.dumps(result), flush=True)
            results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.suites.train", description="One-off training-speed measurements (docs/training-speed.md).")
    parser.add_argument("what", choices=("grouping", "threads", "determinism"))
    parser.add_argument("--archive", default="../shared/data/aclImdb_v1_labeled.tar.gz")
    parser.add_argument("--work", default="artifacts/bench/work/training-speed", help="ingest and encode kept here between calls")
    parser.add_argument("--reviews", type=int, default=5000, help="data.max_reviews: reviews per split")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1337])
    parser.add_argument("--variants", nargs="+", default=["off", "buckets", "tf_data"], choices=("off", "buckets", "tf_data", "chunks"))
    parser.add_argument("--cells", nargs="+", default=["gru", "lstm"])
    parser.add_argument("--threads", type=lambda s: tuple(int(v) for v in s.split(",")), nargs="+",
                        default=[(0, 0), (1, 1), (2, 1), (1, 2), (2, 2), (4, 2)], help="intra,inter pairs; 0 = TensorFlow's default")
    parser.add_argument("--jit", type=lambda s: s == "on", nargs="+", default=[False, True], help="off and/or on")
    parser.add_argument("--bucket", type=int, default=1, help="threads: with bucket_by_length (1) or without (0)")
    parser.add_argument("--rows", type=int, default=2560, help="threads: train rows of the fixed workload")
    parser.add_argument("--out", help="also write the results here as JSON")
    args = parser.parse_args(argv)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    results = {"grouping": grouping, "threads": threads, "determinism": determinism}[args.what](args)
    if args.out:
        Path(args.out).write_text(json.dumps({"command": " ".join(sys.argv), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
