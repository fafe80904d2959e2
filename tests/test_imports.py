"""A run whose steps all come from the cache should not pay for libraries only computing needs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("tensorflow", "keras", "sklearn", "matplotlib", "great_expectations")


@pytest.mark.slow
def test_importing_the_flow_loads_no_training_or_plotting_library():
    code = f"import sys, flows.pipeline; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "", f"imported at flow import time: {result.stdout.strip()}"


def test_a_reader_that_stops_early_gets_no_traceback():
    """`rnnflow presets | head -1`: the pipe closes after one line; rnnflow stops quietly."""
    child = subprocess.Popen([sys.executable, "-m", "flows.cli", "presets"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.readline()
    child.stdout.close()
    _, err = child.communicate(timeout=120)
    assert b"Traceback" not in err and b"BrokenPipeError" not in err
    assert child.returncode in (0, 141)
