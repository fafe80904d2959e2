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
import socket
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tasks.errors import RnnflowError


class PrefectServerError(RnnflowError, RuntimeError):
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


def uvicorn_process(port: int, database_url: str | None) -> subprocess.Popen[Any]:
    """Prefect 3.8's temporary server child (its command and environment, prefect/server/api/server.py), with two
    changes: on Linux it gets SIGTERM when its parent dies (_death_signal_hook), and its database is database_url."""
    import prefect
    from prefect.settings import get_current_settings

    env = {
        **os.environ,
        "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1",
        **get_current_settings().to_environment_variables(exclude_unset=True),
    }
    if database_url:
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database_url
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent), "--factory",
         "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "error", "--lifespan", "on"],
        env=env,
        preexec_fn=_death_signal_hook(),
    )


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
    from prefect.server.api.server import SubprocessASGIServer

    class TemporaryServer(SubprocessASGIServer):
        database_url: str | None = None
        spawned: subprocess.Popen[Any] | None = None  # the child spawn_temporary_server started on this port

        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            if self.spawned is not None:  # started early, booting while the command imported the flow
                process, self.spawned = self.spawned, None
                if process.poll() is None:
                    return process
            return uvicorn_process(self.port, self.database_url)

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


def _per_run_database() -> tuple[str | None, Path | None]:
    """The database URL for a temporary server (None: the user configured one), and the path of a fresh one to keep as
    the empty template once the server has migrated it (None: copied from the template)."""
    import prefect
    from prefect.settings import get_current_settings

    if "PREFECT_SERVER_DATABASE_CONNECTION_URL" in get_current_settings().to_environment_variables(exclude_unset=True):
        return None, None
    scratch = Path(tempfile.gettempdir())
    _remove_stale_databases(scratch)
    folder = Path(tempfile.mkdtemp(prefix=f"rnnflow-prefect-{os.getpid()}-", dir=scratch))
    # Registered before the server starts, so it runs after Prefect's own atexit stop of the server.
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    database, template = folder / "prefect.db", empty_database_path(prefect.__version__)
    copied = template.is_file()
    if copied:
        shutil.copyfile(template, database)
    return f"sqlite+aiosqlite:///{database}", None if copied else database


# spawn_temporary_server's child until start_temporary_server adopts it: port, process, database_url, fresh.
_early: dict[str, Any] = {}


def spawn_temporary_server() -> None:
    """Start the temporary server's process without waiting for it, when no Prefect API is configured, so that it boots
    (about 7 s on 2 cores) while the command imports the flow; start_temporary_server then adopts it and waits. From
    the main thread, as the death signal asks (temporary_server_class)."""
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value() or _early or _running_in_this_process():
        return
    database_url, fresh = _per_run_database()
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))  # a free port; one taken meanwhile makes the child exit 3, and Prefect picks another
        port = sock.getsockname()[1]
    process = uvicorn_process(port, database_url)
    atexit.register(_stop_unadopted, process)  # runs after Prefect's stop of an adopted one, which leaves nothing to do
    _early.update(port=port, process=process, database_url=database_url, fresh=fresh)


def _running_in_this_process() -> bool:
    """Whether this process already runs a temporary server (an earlier command in it, a test harness): one that
    start_temporary_server will use, so a spawned one would boot only to be stopped."""
    server_module = sys.modules.get("prefect.server.api.server")
    existing = server_module.SubprocessASGIServer._instances.get(None) if server_module else None
    return bool(existing is not None and existing.running)


def _stop_unadopted(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)


def start_temporary_server() -> str | None:
    """Start Prefect's temporary server for this process when no Prefect API is configured (or adopt the one
    spawn_temporary_server started), wait until it answers, and return its URL; None with an API configured.

    Its database is a copy of an empty one, per run, deleted at exit, unless the user configured
    one: Prefect's default (~/.prefect/prefect.db) grew by every run for good, yet a temporary
    server shows no UI and dies with its run, and rnnflow's own record of each run is its manifest
    (Prefect's task cache is files under the artifacts root, not the database). The empty database,
    migrated once per Prefect version, is kept in the user's cache folder: migrating a new one took
    Prefect up to two minutes on a busy 2-core machine, copying it takes milliseconds.
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    if PREFECT_API_URL.value():  # checked first: importing Prefect's server code alone costs a busy machine seconds
        return None
    import prefect
    from prefect.server.api.server import SubprocessASGIServer

    early = dict(_early)
    _early.clear()
    existing = SubprocessASGIServer._instances.get(None)
    if existing is not None and existing.running:  # started already in this process (a test harness, an earlier call)
        if early:
            _stop_unadopted(early["process"])
        return existing.api_url
    if existing is not None and not isinstance(existing, temporary_server_class()):
        SubprocessASGIServer._instances.pop(None)  # one of Prefect's that never started: ours replaces it
    server = temporary_server_class()()
    if early:
        server.port, server.spawned, server.database_url, fresh = early["port"], early["process"], early["database_url"], early["fresh"]
    else:
        server.database_url, fresh = _per_run_database()
    template = empty_database_path(prefect.__version__)
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


# --------------------------------------------------------------------------- what `rnnflow serve` needs, checked first

API_CHECK_SECONDS = 5  # how long serve waits for the Prefect API to answer its health check
MAX_INTERVAL_SECONDS = 100 * 365 * 86400  # a longer --interval is a typo (and past ~3e9 days, timedelta overflows)


def schedule_problem(cron: str | None, interval: float | None) -> str | None:
    """Why a serve schedule cannot run (one sentence), or None: the cron checked by Prefect's own CronSchedule
    (croniter underneath), the interval as a positive, finite number of seconds Prefect's IntervalSchedule takes."""
    import datetime
    import math

    from pydantic import ValidationError
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

    if cron is not None:
        example = 'five fields, minute hour day-of-month month day-of-week, e.g. "0 3 * * *" for 03:00 every night'
        try:
            CronSchedule(cron=cron)
        except ValidationError:
            return f"--cron {cron!r} is not a cron schedule Prefect can run: give {example}."
        if not _cron_fires(cron):
            return f"--cron {cron!r} never fires (no such date): give {example}."
        return None
    if interval is None or not math.isfinite(interval) or interval <= 0:
        return f"--interval must be a positive number of seconds, e.g. 86400 for once a day, not {interval:g}."
    if interval > MAX_INTERVAL_SECONDS:
        return f"--interval {interval:g} is more than a century: give at most {MAX_INTERVAL_SECONDS:,} seconds (86400 is once a day)."
    IntervalSchedule(interval=datetime.timedelta(seconds=interval))  # what serve will build: refused here if Prefect would
    return None


def _cron_fires(cron: str) -> bool:
    """Whether a valid cron string has a next time at all ("0 3 31 2 *", February 31st, has none)."""
    try:
        from prefect._vendor.croniter import CroniterBadDateError, croniter
    except ImportError:  # Prefect moved its vendored copy: CronSchedule's own check above stands
        return True
    import datetime

    try:
        croniter(cron, datetime.datetime.now()).get_next(datetime.datetime)
    except CroniterBadDateError:
        return False
    return True


def api_problem(api_url: str) -> str | None:
    """Why the Prefect API at api_url cannot hold a schedule (one sentence naming it and how to start one), or None
    when its health check answers within API_CHECK_SECONDS (no retries: a server that is up answers at once)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_REQUEST_TIMEOUT, PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url, PREFECT_API_REQUEST_TIMEOUT: API_CHECK_SECONDS, PREFECT_CLIENT_MAX_RETRIES: 0}):
        try:
            with get_client(sync_client=True) as client:
                error = client.api_healthcheck()
        except Exception as raised:  # noqa: BLE001 - a URL httpx cannot even use
            error = raised
    if error is None:
        return None
    reason = " ".join(str(error).split())[:160] or type(error).__name__
    return (
        f"No Prefect server answered at PREFECT_API_URL={api_url} within {API_CHECK_SECONDS} s ({type(error).__name__}: {reason}): "
        "start one with 'make ui' (or .venv/bin/prefect server start) and export PREFECT_API_URL=http://127.0.0.1:4200/api, or fix the URL."
    )
