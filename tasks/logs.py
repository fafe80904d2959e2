"""Where step code logs, and how an error becomes the one line a manifest and the CLI show."""

from __future__ import annotations

import logging
from typing import Any


def step_logger() -> logging.Logger | logging.LoggerAdapter:
    """Prefect's run logger inside a flow or task run (so lines reach the UI), the "rnnflow" logger outside one."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("rnnflow")


def one_line(error: BaseException | Any) -> str:
    """The first line of an error's message (its class name when it has none)."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
