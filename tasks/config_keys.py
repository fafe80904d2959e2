"""Which configuration keys a step's cache key leaves out (moved out of tasks/config.py, which re-exports them)."""

from __future__ import annotations

from typing import Any

# Keys that decide how fast a step runs, not what it is asked to make (like a thread count, they may change the
# order of floating-point sums): a step's cache key leaves them out (key_config), so fitting the members in more
# or fewer processes reuses the model they made.
SPEED_ONLY_KEYS = {"train": frozenset({"member_processes"})}


def key_config(section: dict[str, Any]) -> dict[str, Any]:
    """A step's configuration as its cache key sees it: section (keyed by section name, as the train and report
    steps get theirs) without SPEED_ONLY_KEYS."""
    return {
        name: {k: v for k, v in value.items() if k not in SPEED_ONLY_KEYS[name]} if name in SPEED_ONLY_KEYS and isinstance(value, dict) else value
        for name, value in section.items()
    }
