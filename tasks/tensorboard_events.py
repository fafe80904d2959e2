"""train.tensorboard: Keras' TensorBoard events in the train step's folder, for the team that looks there.

keras.callbacks.TensorBoard writes through tf.summary, and TensorFlow 2.21, which no longer installs the tensorboard
package, keeps only stubs there: tf.summary.scalar raises TBNotInstalledError without it. So writing the events needs
the package as much as reading them does: the `tensorboard` extra (`uv sync --extra tensorboard`, or
`pip install 'rnnflow[tensorboard]'`; the dev group has it too, for the tests). Then
`tensorboard --logdir artifacts/runs/RUN/train/tensorboard`. Without it, train.tensorboard stops the train step
before any epoch, with one sentence that says so (check_tensorboard).

Layout, under the train step's folder:

    tensorboard/train/, tensorboard/validation/                  one model (train.members 1)
    tensorboard/member_K/train/, tensorboard/member_K/validation/  member K of train.members > 1

Each member's events are written by the process that fits it (in turn here, or in its own child with
train.member_processes), into a folder of its own: TensorBoard lists the members as runs side by side.
Per-epoch scalars (epoch_loss, epoch_accuracy and epoch_learning_rate under train/ and validation/, and Keras'
evaluation_*_vs_iterations) plus the model's graph, a few kB a member: weight histograms and profiles cost time
and space a nightly run does not need.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from tasks.config import ConfigError, TrainConfig

TENSORBOARD_DIR = "tensorboard"  # inside the train step's folder


def tensorboard_dir(out_dir: Path, members: int, k: int) -> Path:
    """Where member k (from 0) of `members` writes its events."""
    root = Path(out_dir) / TENSORBOARD_DIR
    return root if members == 1 else root / f"member_{k + 1}"


def check_tensorboard(train_cfg: TrainConfig) -> None:
    """Raise ConfigError when train.tensorboard is on and the tensorboard package is missing (cheap: imports nothing)."""
    if train_cfg.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(
            "train.tensorboard needs the tensorboard package, which is not installed: "
            "run `uv sync --extra tensorboard` (or pip install 'rnnflow[tensorboard]'), or set train.tensorboard false."
        )


def tensorboard_callbacks(train_cfg: TrainConfig, k: int, out_dir: Path) -> list[Any]:
    """[keras.callbacks.TensorBoard] writing member k's events under out_dir with train.tensorboard, else []."""
    if not train_cfg.tensorboard:
        return []
    check_tensorboard(train_cfg)
    import keras

    log_dir = tensorboard_dir(out_dir, train_cfg.members, k)
    return [keras.callbacks.TensorBoard(log_dir=str(log_dir), histogram_freq=0, write_graph=True, update_freq="epoch", profile_batch=0)]
