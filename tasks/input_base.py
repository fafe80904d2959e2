"""What the input's checks share, local file or URL: ingest's errors and the test that a local path is a regular file.

tasks/input_files.py (the checks before Prefect starts) and tasks/remote_input.py (URL inputs) both import this
module; input_files asks remote_input about URLs, so neither imports the other both ways. Light on purpose.
"""

from __future__ import annotations

import stat
from pathlib import Path

from tasks.errors import RnnflowError


class IngestError(RnnflowError, ValueError):
    """Input the user must fix; the message names the file and the way out."""

    retryable = False


class DownloadError(IngestError):
    """The network failed us: worth another try after a pause."""

    retryable = True


def file_kind(path: Path) -> str:
    """What a path that is neither a regular file nor a folder is, in words ("a character device")."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return "unreadable"
    for test, name in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a special file"


def existing_file(path: str, key: str, what: str) -> Path:
    """path, resolved, if it is a regular file; else an IngestError saying to pass `what` with --set key=PATH."""
    local = Path(path).expanduser()
    if not local.exists():
        raise IngestError(f"Input {local} does not exist: pass {what} with --set {key}=PATH.")
    if local.is_dir():
        raise IngestError(f"Input {local} is a folder, not a file: pass {what} with --set {key}=PATH.")
    if not local.is_file():
        raise IngestError(f"Input {local} is {file_kind(local)}, not a regular file: pass {what} with --set {key}=PATH.")
    return local.resolve()
