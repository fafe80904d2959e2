"""What a benchmark ran on: CPU, cores, memory, load, library versions, date."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tasks.store import environment_versions


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except (OSError, ValueError):
        pass
    return None


def describe_machine() -> dict[str, Any]:
    """The machine and software a suite ran on, and how busy the machine was when it started."""
    versions = environment_versions()  # python, platform, tensorflow, keras, prefect, ..., git commit
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": _memory_gib(),
        # Other jobs share this machine at times: the load says how far to trust the timings.
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "prefect_server": os.environ.get("PREFECT_API_URL") or "temporary (each rnnflow run starts its own)",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **versions,
    }
