"""The Prefect progress artifact's calls run off the training thread (tasks/progress.py::ArtifactProgress)."""

import contextvars
import threading
import time

from tasks.progress import ArtifactProgress

RUN = contextvars.ContextVar("RUN", default=None)


def test_a_slow_prefect_api_never_holds_the_epoch_hook_and_the_latest_value_wins():
    release, sent, seen_run = threading.Event(), [], []

    def create():
        seen_run.append(RUN.get())  # the artifact belongs to the task run that made the hook
        return "artifact-1"

    def update(artifact_id, percent):
        release.wait(5)  # the server is locked: the call hangs until released
        sent.append((artifact_id, percent))

    RUN.set("task-run-7")
    hook = ArtifactProgress(create, update)
    started = time.perf_counter()
    for epoch in range(1, 5):
        hook(epoch, 10, {})
    assert time.perf_counter() - started < 0.5
    release.set()
    deadline = time.monotonic() + 5
    while (not sent or sent[-1][1] != 40.0) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen_run == ["task-run-7"]
    assert sent[-1] == ("artifact-1", 40.0)
    assert len(sent) <= 2  # values that waited were replaced by the newest, not queued


def test_a_failing_prefect_api_does_not_reach_training():
    def broken(*args):
        raise RuntimeError("503 Service Unavailable")

    hook = ArtifactProgress(lambda: "artifact-1", broken)
    hook(1, 2, {})
    hook(2, 2, {})
    failed_create = ArtifactProgress(broken, broken)
    failed_create(1, 1, {})
