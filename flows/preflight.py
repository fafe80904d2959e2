"""The checks a command that runs the flow makes before Prefect or TensorFlow start: the configuration's input files,
with ingest's own sentences, in a fraction of a second, before a run folder exists.

run and sweep call check_before_flow; a new command that starts the flow calls it the same way. Light on purpose:
importing this module loads neither Prefect nor TensorFlow (tests/test_preflight.py checks).
"""

from __future__ import annotations

from flows.cli_parser import UsageError
from tasks.config import RunConfig
from tasks.input_files import IngestError, check_input


def check_before_flow(config: RunConfig, start_from: str | None = None) -> None:
    """What can be known wrong before the flow starts: data.path and data.test_path exist, a table's format and
    header (the named columns). UsageError with one sentence (exit 2) otherwise. start_from: a run that reuses
    ingest from a recorded run (--from a later step) reads no input, so nothing is checked."""
    if start_from not in (None, "ingest"):
        return
    try:
        check_input(config.data)
    except IngestError as error:
        raise UsageError(str(error)) from None
