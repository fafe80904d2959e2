"""Prefect's temporary server for `rnnflow run` when no PREFECT_API_URL is set: one that dies with its run
and keeps no database behind. Process plumbing, not the flow: flows/pipeline.py stays wiring only."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


class PrefectServerError(RuntimeError):
    """Prefect's temporary server did not come up: one sentence with the way out."""



def _death_signal_hook() -> Any:
    """A preexec_fn asking the kernel for SIGTERM when the parent dies; prctl is looked up here, in the parent,
    so the forked child calls it without taking the dynamic loader's lock."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def die_with_parent() -> None:  # pragma: no cover - runs in the forked child before exec
        prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG

    return die_with_parent


@functools.cache
def temporary_server_class() -> type:
    """Prefect's SubprocessASGIServer, started so that it cannot outlive rnnflow and keeps no database behind.

    Why this way: Prefect 3.8 starts its temporary server with a bare subprocess.Popen and stops it
    from an atexit hook, which `kill -9` skips. Of the options (a watchdog inside Prefect's child,
    a server of rnnflow's own, Prefect's own class with one change) the last keeps Prefect's start-up
    logic (port choice and retry, health wait, timeout, atexit stop) and changes only how the child
    is spawned: on Linux with PR_SET_PDEATHSIG, so the kernel sends it SIGTERM when its parent dies.
    The signal follows the thread that forked the child, so rnnflow starts the server itself, from
    the main thread, before the flow; Prefect's code then finds it under its default key and reuses it.
    """
    import prefect
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    class TemporaryServer(SubprocessASGIServer):
        database_url: str | None = None

        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            # Prefect 3.8's own command and environment (prefect/server/api/server.py), plus the two changes.
            env = {
                **os.environ,
                "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1",
                **get_current_settings().to_environment_variables(exclude_unset=True),
            }
            if self.database_url:
                env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = self.database_url
            return subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent), "--factory",
                 "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
                 "--log-level", "error", "--lifespan", "on"],
                env=env,
                preexec_fn=_death_signal_hook(),
            )

    return TemporaryServer


def _remove_stale_databases(parent: Path) -> None:
    """Per-run database folders of rnnflow processes that died without cleaning up (kill -9)."""
    for folder in parent.glob("rnnflow-prefect-*"):
        try:
            pid = int(folder.name.split("-")[2])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not Path(f"/proc/{pid}").exists() and Path("/proc/self").exists():
            shutil.rmtree(folder, ignore_errors=True)


def empty_database_path(prefect_version: str) -> Path:
    """Where the migrated, empty database for Prefect prefect_version is kept: one file per version in the user's
    cache folder ($XDG_CACHE_HOME or ~/.cache), shared by every artifacts root, so each new root (every test's)
    does not migrate its own."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "rnnflow" / f"prefect-server-{prefect_version}.db"


def start_temporary_server() -> str | None:
    """Start Prefect's temporary server for this process when no Prefect API is configured; its URL, or None.

    Its database is a copy of an empty one, per run, deleted at exit, unless the user configured
    one: Prefect's default (~/.prefect/prefect.db) grew by every run for good, yet a temporary
    server shows no UI and dies with its run, and rnnflow's own record of each run is its manifest
    (Prefect's task cache is files under the artifacts root, not the database). The empty database,
    migrated once per Prefect version, is kept in the user's cache folder: migrating a new one took
    Prefect up to two minutes on a busy 2-core machine, copying it takes milliseconds.
    """
    import prefect
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, get_current_settings

    if PREFECT_API_URL.value():
        return None
    existing = SubprocessASGIServer._instances.get(None)
    if existing is not None and existing.running:  # started already in this process (a test harness, an earlier call)
        return existing.api_url
    if existing is not None and not isinstance(existing, temporary_server_class()):
        SubprocessASGIServer._instances.pop(None)  # one of Prefect's that never started: ours replaces it
    server = temporary_server_class()()
    template = empty_database_path(prefect.__version__)
    fresh = None
    if "PREFECT_SERVER_DATABASE_CONNECTION_URL" not in get_current_settings().to_environment_variables(exclude_unset=True):
        scratch = Path(tempfile.gettempdir())
        _remove_stale_databases(scratch)
        folder = Path(tempfile.mkdtemp(prefix=f"rnnflow-prefect-{os.getpid()}-", dir=scratch))
        # Registered before the server starts, so it runs after Prefect's own atexit stop of the server.
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        database = folder / "prefect.db"
        if template.is_file():
            shutil.copyfile(template, database)
        else:
            fresh = database
        server.database_url = f"sqlite+aiosqlite:///{database}"
    timeout = PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()
    try:
        server.start()
    except RuntimeError as error:
        if "Timed out" not in str(error):
            raise
        code = server.server_process.poll() if server.server_process else None
        server.stop()  # Prefect leaves the late child running until exit
        if code is not None:
            raise PrefectServerError(
                f"Prefect's temporary server exited with code {code} before it answered: start one with `prefect server start` "
                "and set PREFECT_API_URL=http://127.0.0.1:4200/api to see why."
            ) from None
        raise PrefectServerError(
            f"Prefect's temporary server did not start within {timeout} s (the machine is busy): start one with "
            "`prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api, or raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS."
        ) from None
    if fresh is not None:  # keep the migrated, still empty database for the next runs (SQLite's backup: consistent while in use)
        with contextlib.suppress(OSError, sqlite3.Error):
            template.parent.mkdir(parents=True, exist_ok=True)
            partial = template.with_name(f".{template.name}.{os.getpid()}.tmp")
            with contextlib.closing(sqlite3.connect(fresh)) as source, contextlib.closing(sqlite3.connect(partial)) as copy:
                source.backup(copy)
            os.replace(partial, template)
    return server.api_url
