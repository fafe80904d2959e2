"""train.member_processes: the members of an ensemble fitted side by side, each in a process of its own.

A GRU(64) over batches of 64 reviews is a long chain of small matrix products: one TensorFlow process
keeps about 1.4 of 2 cores busy (docs/training-speed.md §5). Two processes with one thread each
fitted two members in 28 s where one process fitting them in turn took 46 s. Each child loads encode's
arrays itself, fits the members it is handed with fit_member (the same seeds, rows and callbacks as
in turn) and writes member_K.keras into the step's folder; its log lines and epoch ends come back
through a queue, so the run's log and the Prefect progress artifact read as they do in one process.

concurrent.futures' process pool rather than a hand-made one: it hands out members as processes free
up and carries a child's exception back whole. Children are spawned (a fork of a process that has
started TensorFlow's threads can hang) and each one watches its parent: a run killed with its
children still fitting leaves no orphan training on.
"""

from __future__ import annotations

import itertools
import logging
import logging.handlers
import multiprocessing
import os
import queue as queue_module
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.architectures import recurrent_stack
from tasks.config import ModelConfig, TrainConfig, member_model
from tasks.determinism import op_determinism
from tasks.logs import step_logger
from tasks.member_fit import EpochHook, MemberResult, fit_member, load_training_data

if TYPE_CHECKING:
    from collections.abc import Iterator


def cpu_cores() -> int:
    """The cores this process may run on (its affinity, which a container or taskset narrows), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def member_processes(train_cfg: TrainConfig) -> int:
    """How many processes fit train_cfg's members: 1 (in this process, in turn) unless there are members to share out.

    auto: one per core, at most one per member; 1 where a GPU is visible (one device, which one
    process keeps busy) or where this process may not start others (a daemon: a Dask worker's, say).
    A number is taken as asked, at most one per member, save in a daemon process, which cannot have children.
    """
    asked = train_cfg.member_processes
    if train_cfg.members == 1 or asked == 1:
        return 1
    if multiprocessing.current_process().daemon:
        if asked != "auto":
            step_logger().warning(
                "train.member_processes %d: this process is a daemon (a Dask worker's?), which cannot start processes: "
                "the members train one after another here", asked,
            )
        return 1
    if asked == "auto":
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            return 1
        asked = cpu_cores()
    return max(1, min(asked, train_cfg.members))


# Set in each child by _start_child: where its log records and epoch ends go.
_to_parent: Any = None
_loaded: dict[str, Any] = {}  # a child's training data, loaded for its first member and kept for the next


def _watch_parent(parent: int) -> None:
    """End this child when the process that started it is gone (killed): its members have no one to return to."""
    while True:
        time.sleep(2)
        if os.getppid() != parent:
            os._exit(3)


def _start_child(to_parent: Any, threads: int, parent: int) -> None:
    """A child's start: TensorFlow's threads (before its first op), log records to the parent, the watch on the parent."""
    global _to_parent
    _to_parent = to_parent
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="rnnflow-watch-parent").start()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    logger = logging.getLogger("rnnflow")  # step_logger's logger outside a Prefect run: a child's is that one
    logger.handlers = [logging.handlers.QueueHandler(to_parent)]
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _epoch_done(done: int, total: int, logs: dict[str, float]) -> None:
    """A child's on_epoch: only the epoch's figures go back; the parent counts epochs across all children."""
    _to_parent.put(logs)


def _fit_in_child(model: dict[str, Any], train: dict[str, Any], encode_dir: Path, k: int, out_dir: Path) -> MemberResult:
    """Member k, fitted in this child as train_model fits it in turn; its model stays here (the parent reads its checkpoint)."""
    model_cfg, train_cfg = ModelConfig(**model), TrainConfig(**train)
    if str(encode_dir) not in _loaded:
        _loaded.clear()
        _loaded[str(encode_dir)] = load_training_data(encode_dir, train_cfg)
    with op_determinism(train_cfg.deterministic):
        result = fit_member(model_cfg, train_cfg, _loaded[str(encode_dir)], k, out_dir, _epoch_done)
    result.model = None
    return result


def _relay(item: Any, on_epoch: EpochHook | None, ticks: Iterator[int], total: int) -> None:
    """One message from a child: a log record, logged here (in the task's run), or an epoch's figures, counted for on_epoch."""
    if isinstance(item, logging.LogRecord):
        step_logger().log(item.levelno, "%s", item.getMessage())
    elif on_epoch is not None:
        on_epoch(next(ticks), total, item)


def _result(futures: dict[int, Future], k: int) -> MemberResult:
    """Member k's result, or its error: the child's own, or one sentence when the child itself died."""
    try:
        return futures[k].result()
    except BrokenProcessPool as error:
        raise RuntimeError(
            f"the process fitting member {k + 1} of {len(futures)} ended before it finished (killed, or out of memory?): "
            "set train.member_processes 1 to fit the members one after another in this process, or free memory and rerun"
        ) from error


def first_the_costliest(model_cfg: ModelConfig, train_cfg: TrainConfig) -> list[int]:
    """The members (from 0), those whose recurrence reads the most handed out first, ties in member order.

    The pool hands out members as processes free up: a long member handed out last runs alone on its share of the
    threads while the other processes sit idle (a BiGRU(128) over whole IMDb reviews, 200 s an epoch, handed out
    behind four GRU(64)s over 400 words, 30 s an epoch, fitted alone for 12 of a run's 21 minutes). Reading the most,
    per epoch: its steps (model.window; whole rows first) times its recurrent units, both ways for a bidirectional one.
    """
    def cost(k: int) -> float:
        cfg = member_model(model_cfg, train_cfg, k)
        units = sum(size for _, size in recurrent_stack(cfg))
        return (cfg.window or float("inf")) * units * (2 if cfg.bidirectional else 1)
    return sorted(range(train_cfg.members), key=lambda k: -cost(k))


def fit_members_in_processes(
    model_cfg: ModelConfig, train_cfg: TrainConfig, encode_dir: Path, out_dir: Path, processes: int, on_epoch: EpochHook | None = None,
) -> list[MemberResult]:
    """Every member fitted in a pool of `processes` children (cpu_cores() // processes threads each), the costliest
    members handed out first (first_the_costliest); the results in member order."""
    context = multiprocessing.get_context("spawn")
    to_parent = context.Queue()
    threads = max(1, cpu_cores() // processes)
    members, total = train_cfg.members, train_cfg.members * train_cfg.epochs
    ticks = itertools.count(1)  # epochs ended so far, any member's
    step_logger().info("train: %d members in %d processes, %d thread(s) each (train.member_processes)", members, processes, threads)
    pool = ProcessPoolExecutor(processes, mp_context=context, initializer=_start_child, initargs=(to_parent, threads, os.getpid()))
    finished = False
    try:
        sections = (model_cfg.model_dump(mode="json"), train_cfg.model_dump(mode="json"))
        futures: dict[int, Future] = {k: pool.submit(_fit_in_child, *sections, encode_dir, k, out_dir)
                                      for k in first_the_costliest(model_cfg, train_cfg)}
        while not all(f.done() for f in futures.values()):
            try:
                _relay(to_parent.get(timeout=0.25), on_epoch, ticks, total)
            except queue_module.Empty:
                pass
            failed = next((k for k, f in futures.items() if f.done() and f.exception() is not None), None)
            if failed is not None:  # its error now, not after the members still fitting
                _result(futures, failed)
        results = [_result(futures, k) for k in range(members)]
        finished = True
        return results
    finally:
        if not finished:  # a member failed, or this process was interrupted: the others stop now, not after their fits
            for process in list(getattr(pool, "_processes", {}).values()):  # the pool has no public way to stop a running call
                process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        while True:  # lines a child logged just before its member ended
            try:
                _relay(to_parent.get_nowait(), on_epoch, ticks, total)
            except (queue_module.Empty, OSError, ValueError):
                break
        to_parent.close()
