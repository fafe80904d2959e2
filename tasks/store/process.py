"""Which process wrote a manifest or a scratch folder, and whether it is known to be gone."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks after boot (/proc/PID/stat field 22): tells our pid from a reused one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # the command name (field 2) may hold spaces and ')'
    return fields[19] if len(fields) > 19 else None


def pid_alive(pid: int) -> bool:
    if pid <= 0:  # 0 and negative numbers address process groups, not a process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process, but alive
        return True
    return True


def process_stamp(pid: int | None = None) -> dict[str, Any]:
    """This process (or pid) as a manifest or scratch folder records it: pid, host, start time, boot id."""
    pid = os.getpid() if pid is None else pid
    return {"pid": pid, "host": socket.gethostname(), "started": _process_start(pid), "boot_id": _boot_id()}


class ProcessStamp(BaseModel):
    model_config = ConfigDict(extra="allow")

    pid: int
    host: str
    started: str | None = None
    boot_id: str | None = None

    def gone(self) -> bool:
        """True only when the process is known to be gone: it ran on this host and no live process is it.

        Another host's process cannot be seen from here, so it is never called gone.
        """
        if self.host != socket.gethostname():
            return False
        boot = _boot_id()
        if self.boot_id and boot and self.boot_id != boot:
            return True  # the machine rebooted since
        if not pid_alive(self.pid):
            return True
        started = _process_start(self.pid)
        return bool(self.started and started and started != self.started)  # the pid now belongs to another process


def stamp_gone(data: Any) -> bool:
    try:
        return ProcessStamp.model_validate(data).gone()
    except ValidationError:
        return False  # no readable record of the writer: leave it alone

