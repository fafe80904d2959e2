"""The base of every configuration section (data, validate, ..., score, serve, track): one set of rules for all.

Its own module so that sections kept beside the code they configure (tasks/score_config.py, tasks/baseline_config.py,
tasks/config_reporting.py, tasks/data_config.py) share it with tasks/config.py, which imports them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    # allow_inf_nan=False: an infinite or NaN float (YAML's .inf / .nan) is never a meaningful setting;
    # it trained NaN models (train.learning_rate) or made a promotion floor impossible to pass. It covers
    # floats inside containers too (promote.floors), and every section inherits it.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# Keys that change how hard a step tries, not what it produces: left out of the section a cache key covers.
NOT_IN_KEY: dict[str, set[str]] = {"data": {"retries", "retry_delay_seconds"}}


def section_dump(name: str, section: Section) -> dict[str, Any]:
    """A section as plain data, the part of the configuration a step's cache key and record cover."""
    return section.model_dump(mode="json", exclude=NOT_IN_KEY.get(name))
