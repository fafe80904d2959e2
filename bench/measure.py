"""How the suites measure: child processes with their peak memory, medians, growth exponents, commands."""

from __future__ import annotations

import contextlib
import math
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

from tasks.store import read_json

from bench.options import BenchOptions

ROOT = Path(os.path.abspath(Path(__file__).parent.parent))  # every child runs here, so commands are exact from here
T = TypeVar("T")


class BenchError(RuntimeError):
    """A measurement that could not be taken: the message says which command and why."""


def relative(path: str | Path) -> str:
    """path as seen from the repository root, where every command runs (abspath, not resolve: .venv/bin/python is a link)."""
    return os.path.relpath(os.path.abspath(path), ROOT)


def python_argv(*args: str) -> list[str]:
    return [relative(sys.executable), *args]


def rnnflow_argv() -> list[str]:
    """The installed `rnnflow` next to this interpreter, as a user runs it; `python -m flows.cli` without one."""
    script = Path(os.path.abspath(sys.executable)).parent / "rnnflow"
    return [relative(script)] if script.exists() else python_argv("-m", "flows.cli")


@dataclass
class ChildRun:
    argv: list[str]
    returncode: int
    wall_s: float
    peak_rss_mib: float  # the largest resident set of the child or any descendant it waited for
    stdout: str
    stderr_tail: str
    started_epoch: float = 0.0  # time.time() at launch, to place the child's log timestamps
    stderr_path: Path | None = None

    @property
    def command(self) -> str:
        return shlex.join(self.argv)

    @property
    def last_line(self) -> str:
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        return lines[-1] if lines else ""


def run_child(argv: Sequence[str], log_dir: Path, name: str, *, check: bool = True, env: dict[str, str] | None = None) -> ChildRun:
    """Run argv from the repository root; its wall time and peak RSS, stdout and stderr kept in log_dir/name.*.

    bench.launch runs it and reads os.wait4's rusage for that one child (Linux reports the child's
    own peak or its waited-for descendants', whichever is larger), so runs do not mix as
    getrusage(RUSAGE_CHILDREN) would, and the bench's own size does not leak into the figure.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path, rss_path = log_dir / f"{name}.out", log_dir / f"{name}.err", log_dir / f"{name}.rss"
    rss_path.unlink(missing_ok=True)
    # Through bench.launch, a small process: the peak it reads is the command's own, not this process's.
    launched = [sys.executable, "-m", "bench.launch", str(rss_path), *argv]
    with open(out_path, "w") as out, open(err_path, "w") as err:
        started_epoch, started = time.time(), time.perf_counter()
        process = subprocess.Popen(launched, cwd=ROOT, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        returncode = process.wait()
        wall = time.perf_counter() - started
    stdout = out_path.read_text(errors="replace")
    stderr_tail = "\n".join(err_path.read_text(errors="replace").splitlines()[-15:])
    peak_kib = int(rss_path.read_text()) if rss_path.is_file() else 0
    run = ChildRun(list(argv), returncode, round(wall, 3), round(peak_kib / 1024, 1), stdout, stderr_tail,
                   started_epoch, err_path)
    if check and run.returncode != 0:
        raise BenchError(f"{run.command} exited {run.returncode} (log: {relative(err_path)}):\n{stderr_tail}")
    return run


@contextlib.contextmanager
def running_prefect_server() -> Iterator[dict[str, str]]:
    """Prefect's own server, started once and kept running: yields the environment of a child that uses it.

    What scheduled runs find (a server the deployment reports to), so the child starts none of its own.
    """
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start(timeout=180)
    try:
        yield {**os.environ, "PREFECT_API_URL": server.api_url}
    finally:
        server.stop()


_LOG_TIME = re.compile(r"^(\d\d):(\d\d):(\d\d\.\d+) \| \w+ +\| (.*)$")


def prefect_timeline(run: ChildRun) -> dict[str, float] | None:
    """Where an `rnnflow run` spent its start-up, from its log's timestamps (Prefect logs local wall-clock time).

    before_server_s: launch to "Starting temporary server" (interpreter, imports, configuration);
    server_start_s: from there to "Beginning flow run". None when the log lacks either line
    (a run against a running server, PREFECT_API_URL, starts none).
    """
    if run.stderr_path is None or not run.stderr_path.is_file():
        return None
    launch = datetime.fromtimestamp(run.started_epoch)
    launch_s = launch.hour * 3600 + launch.minute * 60 + launch.second + launch.microsecond / 1e6
    marks: dict[str, float] = {}
    for line in run.stderr_path.read_text(errors="replace").splitlines():
        match = _LOG_TIME.match(line)
        if not match:
            continue
        hours, minutes, seconds, message = match.groups()
        at = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        at += 86400 if at < launch_s - 1 else 0  # past midnight
        if "Starting temporary server" in message:
            marks.setdefault("server", at)
        elif "Beginning flow run" in message:
            marks.setdefault("flow", at)
    if "server" not in marks or "flow" not in marks:
        return None
    return {"before_server_s": round(marks["server"] - launch_s, 2), "server_start_s": round(marks["flow"] - marks["server"], 2)}


def timed(work: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = work()
    return result, time.perf_counter() - started


def median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 4) if present else None


def growth_exponent(sizes: Sequence[float], values: Sequence[float | None]) -> float | None:
    """The least-squares slope of log(value) on log(size): 1 is linear, 0 flat, 2 quadratic."""
    points = [(math.log(s), math.log(v)) for s, v in zip(sizes, values) if v is not None and v > 0 and s > 0]
    if len(points) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return None
    return round(sum((x - mean_x) * (y - mean_y) for x, y in points) / spread, 3)


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def rnnflow_run_argv(opts: BenchOptions, preset: str, artifacts_root: Path, *, epochs: int | None = None) -> list[str]:
    """`rnnflow run` on the benchmark archive, with the --max-reviews and --epochs options passed through."""
    argv = [*rnnflow_argv(), "run", "--preset", preset, "--set", f"data.path={relative(opts.archive)}"]
    if opts.max_reviews:
        argv += ["--set", f"data.max_reviews={opts.max_reviews}"]
    epochs = epochs if epochs is not None else opts.epochs
    if epochs:
        argv += ["--set", f"train.epochs={epochs}"]
    return argv + ["--artifacts", relative(artifacts_root)]


def run_manifest(run: ChildRun) -> dict[str, Any]:
    """The manifest of the run folder `rnnflow run` printed on its last line."""
    folder = ROOT / run.last_line.strip()
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        raise BenchError(f"{run.command} printed {run.last_line!r} last, not a run folder with a manifest.json.")
    return read_json(manifest)


def step_seconds(manifest: dict[str, Any]) -> dict[str, float]:
    return {name: float(step.get("seconds") or 0.0) for name, step in manifest.get("steps", {}).items()}


def step_statuses(manifest: dict[str, Any]) -> dict[str, str]:
    return {name: step.get("status", "?") for name, step in manifest.get("steps", {}).items()}


def test_accuracy(manifest: dict[str, Any]) -> float | None:
    return (manifest.get("steps", {}).get("evaluate", {}).get("summary") or {}).get("accuracy")


def goal(name: str, target: str, observed: float | None, met: bool | None, basis: str, note: str = "") -> dict[str, Any]:
    """One of the issue's goals as the summary shows it: met, missed, or not measured (met None)."""
    return {"goal": name, "target": target, "observed": observed, "met": met, "basis": basis, **({"note": note} if note else {})}
