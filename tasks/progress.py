"""A progress line within each training epoch, on a terminal only: samples done, samples per second, loss.

One line on stderr, rewritten in place (carriage return) at most twice a second, and wiped at the epoch's end so
the epoch's log line prints clean. Nothing when stderr is not a terminal (a pipe, a file, a Prefect worker's
log), in a child process (train's member processes, Dask workers) or while another fit in this process already
shows one (a sweep's points in threads): the epoch lines stay the record; this is only something that moves.
"""

from __future__ import annotations

import multiprocessing
import sys
import threading
import time
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
