"""python -m bench.gpu [--archive PATH] [--presets default best] [--artifacts DIR] [--set KEY=VALUE ...]: the GPU check of issue 31.

On a machine where TensorFlow sees an NVIDIA GPU: for each preset, first whether its recurrent layers run cuDNN's
kernels there (one train step of the preset's model traced on the GPU, its graph searched for CudnnRNN ops: Keras'
GRU/LSTM use them when cudnn_eligible; train.fused_input's layers hand the call to Keras' layer on a GPU), then the
whole `rnnflow run --preset P` on the archive, printing wall seconds, training samples/s, epochs and test accuracy.

Without a GPU it says so and runs the CPU fallback on a small subset (data.max_reviews 200, train.epochs 1, unless
--set says otherwise): the same steps, so the script is known to run before a GPU machine is lent. Exit 0 when every
run finished (and, with a GPU, every cuDNN-eligible preset used cuDNN's kernels), else 1.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CPU_FALLBACK = ["data.max_reviews=200", "train.epochs=1"]


def recurrent_op_types(model_cfg: Any, num_tokens: int = 50, steps: int = 12) -> set[str]:
    """The op types of one traced train step (forward and gradient) of model_cfg's classifier on a batch of 4 right-padded rows."""
    import numpy as np
    import tensorflow as tf

    from tasks.models import build_model

    model = build_model(model_cfg, num_tokens=num_tokens, max_len=None, n_classes=2)
    x = np.random.default_rng(0).integers(1, num_tokens, size=(4, steps)).astype("int32")
    x[1, steps // 2 :] = 0

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(model(x, training=True))
        return tape.gradient(loss, model.trainable_weights)

    graph_def = step.get_concrete_function(tf.TensorSpec([None, None], tf.int32)).graph.as_graph_def()
    # The loop bodies and branches are functions of the graph's library, each with its own nodes.
    types = {node.op for node in graph_def.node}
    for function in graph_def.library.function:
        types |= {node.op for node in function.node_def}
    return types


def uses_cudnn(model_cfg: Any) -> bool:
    """Whether the model's train step holds cuDNN's recurrent kernels (CudnnRNN*), traced on the first GPU."""
    import tensorflow as tf

    with tf.device("/GPU:0"):
        return any(t.startswith("CudnnRNN") for t in recurrent_op_types(model_cfg))


def run_preset(preset: str, archive: str, artifacts: Path, overrides: list[str]) -> dict[str, Any]:
    """`rnnflow run --preset preset` in a process of its own; its wall seconds and train.json / metrics.json figures."""
    from tasks.store import read_json

    runs = artifacts / "runs"
    before = set(runs.iterdir()) if runs.exists() else set()
    command = [sys.executable, "-m", "flows.cli", "run", "--preset", preset, "--set", f"data.path={archive}", "--artifacts", str(artifacts)]
    for item in overrides:
        command += ["--set", item]
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    new = sorted(set(runs.iterdir()) - before) if runs.exists() else []
    if finished.returncode != 0 or not new:
        print(finished.stdout[-2000:], finished.stderr[-2000:], sep="\n", file=sys.stderr)
        return {"preset": preset, "ok": False, "wall_s": round(wall, 1), "command": " ".join(command)}
    run_dir = new[-1]
    train, metrics = read_json(run_dir / "train" / "train.json"), read_json(run_dir / "evaluate" / "metrics.json")
    return {
        "preset": preset, "ok": True, "wall_s": round(wall, 1), "train_s": train["seconds"], "samples_per_s": train["samples_per_second"],
        "epochs_run": train["epochs_run"], "fused_input": train.get("fused_input"), "jit_compile": train.get("jit_compile"),
        "test_accuracy": metrics["test"]["accuracy"], "run": str(run_dir), "command": " ".join(command),
    }


def main(argv: list[str] | None = None) -> int:
    import tensorflow as tf

    from tasks.config import load_config

    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", default="/work/shared/data/aclImdb_v1_labeled.tar.gz")
    parser.add_argument("--presets", nargs="+", default=["default", "best"])
    parser.add_argument("--artifacts", default="artifacts/bench/gpu")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="passed to every run")
    args = parser.parse_args(argv)
    gpus = tf.config.list_physical_devices("GPU")
    overrides = args.overrides if gpus else [*CPU_FALLBACK, *args.overrides]
    if gpus:
        print(f"GPU: {len(gpus)} device(s): {', '.join(d.name for d in gpus)}")
    else:
        print(f"no GPU visible to TensorFlow: CPU fallback on a small subset ({', '.join(overrides)}); cuDNN not checked")
    ok = True
    for preset in args.presets:
        cfg = load_config(preset, overrides=[f"data.path={args.archive}", *overrides])
        if gpus:
            from tasks.models import cudnn_eligible

            eligible, used = cudnn_eligible(cfg.model, cfg.encode.padding), uses_cudnn(cfg.model)
            print(f"{preset}: cuDNN eligible {eligible}, cuDNN kernels in the train step: {used}")
            ok &= used or not eligible
        result = run_preset(preset, args.archive, Path(args.artifacts), overrides)
        ok &= result["ok"]
        print(" ".join(f"{k} {v}" for k, v in result.items()), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
