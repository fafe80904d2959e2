"""A run whose steps all come from the cache should not pay for libraries only computing needs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("tensorflow", "keras", "sklearn", "matplotlib", "great_expectations")


def test_importing_the_flow_loads_no_training_or_plotting_library():
    code = f"import sys, flows.pipeline; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "", f"imported at flow import time: {result.stdout.strip()}"
