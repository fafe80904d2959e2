"""Train: a recurrent classifier (or next-character model) on the encoded arrays, early stopping on validation loss, best model kept."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import numpy as np

from tasks.architectures import TASKS
from tasks.caching import CacheSlot, produce_step, step_task
from tasks.config import ModelConfig, TrainConfig, member_model
from tasks.determinism import op_determinism
from tasks.encode import Vocabulary
from tasks.length_buckets import BUCKET_STEP, bucket_width, epoch_batches, mean_batch_width, memmap_dataset  # noqa: F401  (tests, bench/)
from tasks.member_fit import (  # noqa: F401  (compile_settings, member_callbacks, member_inputs, member_rows: tests and bench/ import them from here)
    EpochHook, MemberResult, TrainingData, bucketed, compile_settings, fit_member, load_training_data, member_callbacks, member_inputs, member_rows,
)
from tasks.member_pool import fit_members_in_processes, member_processes
from tasks.store import RunFiles, StepOutput, write_json, write_text

# Keras (and TensorFlow under it) is imported inside the functions that use it, not here: the flow imports this
# module for its task, and a run whose train step comes from the cache should not pay seconds of
# TensorFlow start-up for nothing.

# Why train.json says there is no model_text.keras for a next_token run.
NO_TEXT_MODEL = "not exported: a next_token model continues texts (rnnflow generate) rather than labelling them"

# What train_model returns (train_task's step result): these keys of train.json.
RESULT_KEYS = ("epochs_run", "best_epoch", "params", "seconds", "best_val_accuracy", "cudnn_eligible")


def average_members(models: list[Any], max_len: int) -> Any:
    """One model whose output is the mean of the members' probabilities (saved and loaded as one .keras file).

    Its rows are max_len wide, or of any width when every member's are (train.bucket_by_length): then it
    predicts in length buckets too (tasks/length_buckets.py::predict_in_buckets).
    """
    import keras

    width = None if all(model.inputs[0].shape[1] is None for model in models) else max_len
    inputs = keras.Input(shape=(width,), dtype="int32", name="token_ids")
    outputs = keras.layers.Average(name="mean_probability")([model(inputs) for model in models])
    return keras.Model(inputs, outputs, name=f"{models[0].name.rsplit('_member', 1)[0]}_ensemble")


def ensemble(members: list[MemberResult], max_len: int, path: Path) -> Any:
    """The members averaged (average_members) and saved to path, each from its checkpoint: the weights its early stopping kept."""
    import keras

    import tasks.models  # noqa: F401  (registers the custom layers: members fitted in other processes left this one without them)

    model = average_members([keras.models.load_model(m.checkpoint, compile=False) for m in members], max_len)
    model.save(path)
    return model


def write_text_model(encode_dir: Path, out_dir: Path) -> None:
    """model_text.keras: model.keras with encode's preprocessing in front, from raw strings to probabilities."""
    import keras

    from tasks.export import export_text_model

    # Wrap the checkpoint, the file evaluate and predict load, so both models hold the very same weights.
    export_text_model(
        keras.models.load_model(RunFiles.MODEL.of_step(out_dir), compile=False), Vocabulary.load(RunFiles.VOCABULARY.of_step(encode_dir)),
        RunFiles.TEXT_MODEL.of_step(out_dir),
    )


def write_history(out_dir: Path, member: MemberResult) -> None:
    """history.json and history.csv: the member's curves, one row per epoch in the csv."""
    curves = member.history
    write_json(RunFiles.HISTORY.of_step(out_dir), curves)
    with open(out_dir / "history.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", *curves])
        for i in range(member.epochs_run):
            writer.writerow([i + 1, *(curves[k][i] for k in curves)])


def train_info(
    model_cfg: ModelConfig, train_cfg: TrainConfig, data: TrainingData, members: list[MemberResult], model: Any, seconds: float, summary: str,
    processes: int = 1,
) -> dict[str, Any]:
    """train.json: what was trained, how long it took, and how well its best epochs did on validation."""
    from tasks.fused_rnn import fused_input_used
    from tasks.models import cudnn_eligible

    epochs_run = sum(m.epochs_run for m in members)
    bucket = all(bucketed(model_cfg, train_cfg, k) for k in range(len(members)))
    per_step = TASKS[model_cfg.task].per_step  # next_token: max_len - 1 steps per row
    val_accuracies = [m.best_val_accuracy for m in members if m.best_val_accuracy is not None]
    info = {
        "task": model_cfg.task,
        "members": len(members),
        "epochs_run": epochs_run,
        "best_epoch": members[0].best_epoch if len(members) == 1 else None,
        "monitor": train_cfg.monitor,  # what chose each kept epoch: the lowest val_loss or the highest val_accuracy
        "stopped_early": any(m.epochs_run < train_cfg.epochs for m in members),
        "params": int(model.count_params()),
        "seconds": round(seconds, 2),
        # Every member trains on as many rows as train holds (member_rows), so this is the rate over all of them.
        "samples_per_second": round(len(data.x_train) * epochs_run / seconds, 1) if seconds else None,
        # in_memory: the arrays held in memory (handed to model.fit whole, or with bucket_by_length gathered batch by batch
        # through tf.data); memmap_tf_data: batches read from the .npy (train.in_memory_max_mb).
        "input": "memmap_tf_data" if data.streamed else "in_memory",
        # Whether batches were padded to their own longest review (bucketed: train.bucket_by_length, where it applies),
        # and how wide the first member's first epoch's batches were on average, against encode's max_len.
        "bucket_by_length": bucket,
        "mean_batch_width": mean_batch_width(data.member_arrays(0)[0], train_cfg.batch_size, train_cfg.seed, next_token=per_step)
        if bucket else data.encoding["max_len"] - per_step,
        "max_len": data.encoding["max_len"],
        "deterministic": train_cfg.deterministic,
        "jit_compile": members[0].jit_compile,  # XLA, as Keras resolved train.jit_compile
        "member_processes": processes,  # processes the members were fitted in (train.member_processes)
        "fused_input": fused_input_used(train_cfg),  # tasks/fused_rnn.py's layers ran (train.fused_input, no GPU)
        # With members, each on its own validation rows: the mean of their best epochs' figures.
        "best_val_loss": float(np.mean([m.best_val_loss for m in members])),
        "best_val_accuracy": float(np.mean(val_accuracies)) if val_accuracies else None,
        "cudnn_eligible": all(cudnn_eligible(member_model(model_cfg, train_cfg, k), data.encoding["padding"]) for k in range(len(members))),
        "model_summary": summary,
    }
    if any(m.bag_start for m in members):  # model.ngram_start, each member's: logistic with the C its val rows chose
        info["bag_starts"] = [m.bag_start for m in members]
    if train_cfg.refit:  # the model saved was fitted again on each member's val rows too: what rows, how many epochs
        info["refit"] = [m.refit for m in members]
    if len(members) > 1:
        info["member_runs"] = [m.run_record() for m in members]
    if not TASKS[model_cfg.task].text_model:
        info["model_text"] = NO_TEXT_MODEL
    return info


def refit_chosen(train_cfg: TrainConfig, model_cfg: ModelConfig, data: TrainingData) -> bool:
    """train.refit as set, or for auto: on where encode read characters (tokenizer char, as auto takes it for Korean, Japanese
    and Chinese reviews), whose models read about as well as their bag's regression, which still gains from every row
    (docs/experiments.md, stop 45: +0.8 points on Korean reviews' nested validation, -0.3 on IMDb's words); off for
    model.task next_token and streamed arrays, which a refit cannot take."""
    possible = not (data.streamed or TASKS[model_cfg.task].per_step)
    if train_cfg.refit == "auto":
        return possible and data.encoding.get("tokenizer") == "char"
    if train_cfg.refit and not possible:
        raise ValueError("train.refit fits a classifier again on train and val held in memory: leave it off for model.task next_token "
                         "and for train arrays over train.in_memory_max_mb")
    return train_cfg.refit


def write_outputs(
    model_cfg: ModelConfig, train_cfg: TrainConfig, data: TrainingData, members: list[MemberResult], model: Any, seconds: float, out_dir: Path,
    processes: int = 1,
) -> dict[str, Any]:
    """history.json and history.csv (the first member's: the only one with members 1), model_summary.txt and train.json."""
    from tasks.models import summary_text

    write_history(out_dir, members[0])
    summary = summary_text(model)
    write_text(out_dir / "model_summary.txt", summary + "\n")
    info = train_info(model_cfg, train_cfg, data, members, model, seconds, summary, processes)
    write_json(RunFiles.TRAINING.of_step(out_dir), info)
    return info


def train_model(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    encode_dir: Path,
    out_dir: Path,
    on_epoch: EpochHook | None = None,
) -> dict[str, Any]:
    """Fit, keep the best epoch as model.keras, and export it with its preprocessing as model_text.keras.

    model.task next_token fits every step's next token instead of the label (next_token_arrays:
    padding steps weigh 0), with the same early stopping and checkpoint; it has no model_text.keras.
    With train.members > 1, each member is fitted (seed train.seed + k, validation rows from
    member_rows, its model section changed by train.member_models' entry for it) and kept as
    member_K.keras; model.keras averages their probabilities. The members are fitted in turn here, or
    side by side in train.member_processes processes (tasks/member_pool.py), with the same seeds, rows and callbacks.
    """
    import keras

    keras.utils.set_random_seed(train_cfg.seed)
    data = load_training_data(encode_dir, train_cfg)
    train_cfg = train_cfg.model_copy(update={"refit": refit_chosen(train_cfg, model_cfg, data)})
    started = time.perf_counter()
    processes = member_processes(train_cfg)
    if processes > 1:
        members = fit_members_in_processes(model_cfg, train_cfg, encode_dir, out_dir, processes, on_epoch)
    else:
        with op_determinism(train_cfg.deterministic):
            members = [fit_member(model_cfg, train_cfg, data, k, out_dir, on_epoch) for k in range(train_cfg.members)]
    seconds = time.perf_counter() - started
    model = members[0].model if len(members) == 1 else ensemble(members, data.encoding["max_len"], RunFiles.MODEL.of_step(out_dir))
    if TASKS[model_cfg.task].text_model:
        write_text_model(encode_dir, out_dir)
    info = write_outputs(model_cfg, train_cfg, data, members, model, seconds, out_dir, processes)
    return {key: info[key] for key in RESULT_KEYS}


def _progress_hook() -> EpochHook | None:
    """A Prefect progress artifact that advances each epoch (the run's Artifacts tab), its API calls off the training thread."""
    from tasks.progress import prefect_epoch_progress

    return prefect_epoch_progress()


@step_task("train")
def train_task(model: ModelConfig, train: TrainConfig, *, encode: StepOutput, slot: CacheSlot) -> StepOutput:
    hook = _progress_hook()
    return produce_step(slot, lambda out: train_model(model, train, encode.path, out, hook))
