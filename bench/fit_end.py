"""python -m bench.fit_end [--log FILE] RNNFLOW-RUN-ARGS...: the train step's clock between its last epoch line and its end.

Runs `rnnflow run RNNFLOW-RUN-ARGS` in this process with timestamps written to --log (default fit_end.log): each epoch's
end (a callback after the epoch line's), on_train_end, model.fit's return, fit_member's return, write_text_model's
start and end (the string-in export). From each epoch's end until the next epoch begins, and from the last one until
the export is written, it samples the training thread's stack every 0.5 s into the same log: whatever holds training
there (docs/training-speed.md §9 used it on the pause of §8) shows with its stack.

Example (the run of §8, ingest to baseline cached in $A from an earlier run):
  .venv/bin/python -m bench.fit_end --log /tmp/fit_end.log run --preset default --set train.seed=7 \\
      --set data.path=/work/shared/data/aclImdb_v1_labeled.tar.gz --artifacts $A --refresh train
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from typing import Any, Callable


class Watch:
    """The log, and the sampler thread: it samples the thread in self.watched while self.watched is set."""

    def __init__(self, path: str):
        self.log = open(path, "w", encoding="utf-8")
        self.watched: int | None = None
        threading.Thread(target=self._sample, daemon=True, name="fit-end-watch").start()

    def mark(self, what: str) -> None:
        now = time.time()
        self.log.write(f"{time.strftime('%H:%M:%S', time.localtime(now))}.{int(now * 1000) % 1000:03d}  {what}\n")
        self.log.flush()

    def _sample(self) -> None:
        while True:
            time.sleep(0.5)
            frame = sys._current_frames().get(self.watched) if self.watched is not None else None
            if frame is not None:
                stack = traceback.extract_stack(frame)[-12:]
                self.mark("training thread:\n" + "".join(f"      {f.filename.split('site-packages/')[-1]}:{f.lineno} {f.name}\n" for f in stack))


def wrap(owner: Any, name: str, before: Callable[[], None] | None = None, after: Callable[[], None] | None = None) -> None:
    """owner.name with before() and after() around each call."""
    original = getattr(owner, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if before:
            before()
        result = original(*args, **kwargs)
        if after:
            after()
        return result

    setattr(owner, name, wrapped)


def main(argv: list[str]) -> int:
    log = "fit_end.log"
    if argv[:1] == ["--log"]:
        log, argv = argv[1], argv[2:]
    watch = Watch(log)
    import keras

    import tasks.member_fit as member_fit
    import tasks.train as train

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            watch.watched = None

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            watch.mark(f"epoch {epoch + 1} end (after the epoch line)")
            watch.watched = threading.get_ident()

        def on_train_end(self, logs: dict | None = None) -> None:
            watch.mark("on_train_end (the last callback's)")

    callbacks = member_fit.member_callbacks
    member_fit.member_callbacks = lambda *args, **kwargs: callbacks(*args, **kwargs) + [Clock()]
    wrap(keras.Model, "fit", after=lambda: watch.mark("model.fit returned"))
    wrap(train, "fit_member", after=lambda: watch.mark("fit_member returned"))

    def exported() -> None:
        watch.mark("write_text_model end")
        watch.watched = None

    wrap(train, "write_text_model", before=lambda: watch.mark("write_text_model start"), after=exported)
    from flows.cli import main as rnnflow

    return rnnflow(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
