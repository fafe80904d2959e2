"""Training progress: a line within each epoch on a terminal, and the Prefect progress artifact advanced each epoch.

The line: samples done, samples per second, loss, on a terminal only.

One line on stderr, rewritten in place (carriage return) at most twice a second, and wiped at the epoch's end so
the epoch's log line prints clean. Nothing when stderr is not a terminal (a pipe, a file, a Prefect worker's
log), in a child process (train's member processes, Dask workers) or while another fit in this process already
shows one (a sweep's points in threads): the epoch lines stay the record; this is only something that moves.

The artifact (prefect_epoch_progress): its Prefect API calls go to one background thread, so training never waits
on them. Prefect's temporary server answers 503 while its SQLite database is locked, and Prefect's client then
retries after 2, 4, 8, 16 and 32 s: called on the training thread, one update after an epoch had held the train
step for up to a minute (docs/training-speed.md §8).
"""

from __future__ import annotations

import contextvars
import logging
import multiprocessing
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TextIO

INTERVAL_SECONDS = 0.5
_claim = threading.Lock()  # held by the one fit that shows its line


def wanted(stream: TextIO | None = None) -> bool:
    """Whether a progress line belongs on stream (default stderr): a terminal, in the main process."""
    stream = stream or sys.stderr
    try:
        terminal = stream.isatty()
    except (AttributeError, ValueError):
        terminal = False
    return terminal and multiprocessing.parent_process() is None


def line(samples: int, total: int | None, seconds: float, loss: float | None) -> str:
    """'12,800/20,000 samples  1,530 samples/s  loss 0.4123'"""
    done = f"{samples:,}/{total:,}" if total else f"{samples:,}"
    rate = f"  {samples / seconds:,.0f} samples/s" if seconds > 0 else ""
    shown_loss = f"  loss {loss:.4f}" if isinstance(loss, (int, float)) else ""
    return f"{done} samples{rate}{shown_loss}"


class ProgressLine:
    """The line itself, apart from Keras: begin, batch (as each batch ends), end_epoch, finish."""

    def __init__(self, stream: TextIO, batch_size: int, prefix: str = "", clock: Callable[[], float] = time.monotonic):
        self.stream, self.batch_size, self.prefix, self.clock = stream, batch_size, prefix, clock
        self.owner, self.width, self.started, self.shown_at, self.epoch = False, 0, 0.0, 0.0, ""

    def begin(self) -> None:
        self.owner = _claim.acquire(blocking=False)

    def begin_epoch(self, epoch: int, epochs: int | None) -> None:
        self.started = self.shown_at = self.clock()
        self.epoch = f"{self.prefix}epoch {epoch + 1}/{epochs}  "

    def batch(self, batch: int, steps: int | None, loss: float | None) -> None:
        now = self.clock()
        if not self.owner or now - self.shown_at < INTERVAL_SECONDS:
            return
        self.shown_at = now
        total = steps * self.batch_size if steps else None
        samples = min((batch + 1) * self.batch_size, total) if total else (batch + 1) * self.batch_size
        self._write(self.epoch + line(samples, total, now - self.started, loss))

    def end_epoch(self) -> None:
        self._write("")

    def finish(self) -> None:
        self._write("")
        if self.owner:
            self.owner = False
            _claim.release()

    def _write(self, text: str) -> None:
        if not self.owner or (not text and not self.width):
            return
        try:
            self.stream.write("\r" + text.ljust(self.width) + ("" if text else "\r"))
            self.stream.flush()
        except (OSError, ValueError):  # the terminal went away: training goes on
            return
        self.width = len(text)


def batch_progress(batch_size: int, prefix: str = "", stream: TextIO | None = None) -> list[Any]:
    """[a Keras callback showing the line] when wanted(stream), else []: add it to a fit's callbacks."""
    if not wanted(stream):
        return []
    import keras

    progress = ProgressLine(stream or sys.stderr, batch_size, prefix)

    class BatchProgress(keras.callbacks.Callback):
        def on_train_begin(self, logs: dict | None = None) -> None:
            progress.begin()

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            progress.begin_epoch(epoch, self.params.get("epochs"))

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            progress.batch(batch, self.params.get("steps"), (logs or {}).get("loss"))

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            progress.end_epoch()

        def on_train_end(self, logs: dict | None = None) -> None:
            progress.finish()

    return [BatchProgress()]


_sender: ThreadPoolExecutor | None = None  # the one thread that makes progress artifacts' API calls, started on first use
_sender_lock = threading.Lock()


def _background() -> ThreadPoolExecutor:
    global _sender
    with _sender_lock:
        if _sender is None:
            _sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rnnflow-progress")
        return _sender


class ArtifactProgress:
    """An epoch hook (epoch, epochs, logs) that hands each epoch's progress to a background thread, latest value first.

    create() makes the artifact and returns its id; update(id, percent) moves it. Both run on the background
    thread, in the context of the thread that made this (Prefect's task run, which the artifact belongs to).
    A value not yet sent when a newer one comes is replaced, not queued; a failed call is logged at debug
    level and never reaches training: the artifact is a display, the epoch lines and train.json the record.
    """

    def __init__(self, create: Callable[[], Any], update: Callable[[Any, float], None]):
        self.create, self.update = create, update
        self.artifact_id: Any = None
        self.pending: float | None = None  # the latest percent not yet sent
        self.lock = threading.Lock()
        self.context = contextvars.copy_context()
        self._submit(self._create)

    def __call__(self, epoch: int, epochs: int, logs: dict[str, float] | None = None) -> None:
        with self.lock:
            queued = self.pending is not None
            self.pending = 100.0 * epoch / epochs
        if not queued:
            self._submit(self._send)

    def _submit(self, call: Callable[[], None]) -> None:
        _background().submit(self.context.copy().run, call)

    def _create(self) -> None:
        try:
            self.artifact_id = self.create()
        except Exception:  # noqa: BLE001 - a display: training goes on without it
            logging.getLogger(__name__).debug("progress artifact not created", exc_info=True)

    def _send(self) -> None:
        with self.lock:
            percent, self.pending = self.pending, None
        if self.artifact_id is None or percent is None:
            return
        try:
            self.update(self.artifact_id, percent)
        except Exception:  # noqa: BLE001
            logging.getLogger(__name__).debug("progress artifact not updated", exc_info=True)


def prefect_epoch_progress() -> ArtifactProgress | None:
    """Inside a Prefect task run: a progress artifact ("rnnflow-training", the run's Artifacts tab) advanced each epoch
    from the background thread (ArtifactProgress); outside one, None."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact
    from prefect.context import TaskRunContext

    if not TaskRunContext.get():
        return None
    return ArtifactProgress(
        lambda: create_progress_artifact(progress=0.0, key="rnnflow-training", description="Training epochs done (%)"),
        lambda artifact_id, percent: update_progress_artifact(artifact_id=artifact_id, progress=percent),
    )
