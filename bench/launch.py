"""python -m bench.launch RSS_FILE COMMAND...: run COMMAND and write its peak resident memory (KiB) to RSS_FILE.

Linux keeps a process's peak RSS across exec, so a child forked by a large process (the bench,
after a suite that generated a corpus or imported TensorFlow) reports at least the parent's size.
This launcher is small when it forks, so the peak wait4 reports for its child is the child's own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def main() -> int:
    rss_file, argv = sys.argv[1], sys.argv[2:]
    process = subprocess.Popen(argv)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    Path(rss_file).write_text(str(usage.ru_maxrss))
    return process.returncode


if __name__ == "__main__":
    sys.exit(main())
