"""What every command of the command line shares: its exit codes, the checked artifacts root, Prefect made ready.

A module of its own so that commands kept beside their flow (flows/score.py: cmd_score) and flows/cli.py import
it without importing each other.
"""

from __future__ import annotations

import argparse

from flows.cli_parser import UsageError
from tasks.store import ArtifactsRootError, ArtifactStore

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def checked_store(args: argparse.Namespace, writing: bool = False) -> ArtifactStore:
    """The --artifacts root, checked first: a file is refused for every command, an unwritable folder for writers."""
    try:
        store = ArtifactStore(args.artifacts)
        store.check_writable() if writing else store.check_folder()
    except ArtifactsRootError as error:
        raise UsageError(str(error)) from None
    return store


def prepare_prefect() -> None:
    """For the commands that run a flow (run, step, sweep, score), once their arguments are checked."""
    from flows.prefect_server import spawn_temporary_server, start_temporary_server

    spawn_temporary_server()  # its process boots while the flow's modules import (flows.pipeline: Prefect's task machinery)
    from flows.pipeline import quiet_expected_tracebacks

    quiet_expected_tracebacks()  # rnnflow's own sentence is printed last; the tracebacks go to the run's run.log
    # With no Prefect API configured, start the temporary server here rather than let Prefect do it
    # mid-flow: this way it dies with this process even on kill -9, a slow start is one sentence, and
    # its database is a per-run copy, not Prefect's default ~/.prefect/prefect.db.
    start_temporary_server()
