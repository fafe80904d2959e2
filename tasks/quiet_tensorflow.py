"""TensorFlow's C++ start-up lines, silenced in every process that imports it (the CLI's, train's member processes,
Dask workers): tasks/__init__.py calls install(), so any process that imports rnnflow's steps has it.

TF_CPP_MIN_LOG_LEVEL hides TensorFlow's C++ log once absl's logging is set up, but the lines written before that
("WARNING: All log messages before absl::InitializeLog() ...", oneDNN, CUDA drivers; twice, as two libraries
load) ignore it. So the first `import tensorflow` runs with file descriptor 2 sent to a temporary file, and
what it wrote is then passed on, less the log lines below TF_CPP_MIN_LOG_LEVEL. Set TF_CPP_MIN_LOG_LEVEL=0 to
see them all.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile
from typing import Any

# rnnflow's default, for a user who set none: errors that matter reach Python as exceptions; the C++ ERROR
# lines left ("failed call to cuInit" on a machine with no GPU, oneDNN's "DT_BOOL only on AVX-512") are noise.
DEFAULT_LEVEL = "3"
_PRE_INIT_NOTICE = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
# absl's prefix: a severity letter, MMDD, time, thread id, file:line]
_LOG_LINE = re.compile(rb"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^ \]]+:\d+\] ")
_LEVELS = {b"I": 0, b"W": 1, b"E": 2, b"F": 3}


def set_defaults() -> None:
    """TensorFlow's C++ log level, unless the user set one: before TensorFlow is first imported, in any process."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", DEFAULT_LEVEL)


def min_level() -> int:
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


def kept_lines(captured: bytes, level: int) -> bytes:
    """captured, without the start-up notice and absl log lines below level (a fatal line always stays)."""
    if level <= 0:
        return captured
    kept = []
    for line in captured.splitlines(keepends=True):
        found = _LOG_LINE.match(line)
        if line.rstrip(b"\r\n") == _PRE_INIT_NOTICE or (found and _LEVELS[found.group(1)] < min(level, 3)):
            continue
        kept.append(line)
    return b"".join(kept)


class _QuietLoader(importlib.abc.Loader):
    """Runs tensorflow's package module with fd 2 captured; the module keeps its own loader afterwards."""

    def __init__(self, loader: Any):
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        module.__loader__ = module.__spec__.loader = self.loader
        sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _QuietTensorFlowImport)]  # once
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, AttributeError, ValueError):  # no stderr to capture
            self.loader.exec_module(module)
            return
        with tempfile.TemporaryFile() as capture:
            os.dup2(capture.fileno(), 2)
            try:
                self.loader.exec_module(module)
            finally:
                try:
                    sys.stderr.flush()
                except (OSError, ValueError):
                    pass
                os.dup2(saved, 2)
                os.close(saved)
                capture.seek(0)
                shown = kept_lines(capture.read(), min_level())
                if shown:
                    os.write(2, shown)


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` the usual way and hands its module to _QuietLoader (a lookup alone, importlib.util.find_spec,
    imports nothing: the finder stays until the module runs)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name != "tensorflow":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def install() -> None:
    """TF_CPP_MIN_LOG_LEVEL's default, and the quiet first import of tensorflow (unless it is already imported)."""
    set_defaults()
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())
