"""A step's output as the store hands it on (StepOutput), and a cache entry's _entry.json as read back: validated,
since another process, another machine or a person may have written it."""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any

from pydantic import BaseModel, field_validator

from tasks.store.files import fingerprint, safe_relative_name

# A bucket entry's files live under a folder of their writer's own, cache/<step>/<key>/<version>/ (tasks/store/bucket.py).
VERSION_PATTERN = re.compile(r"v-[0-9a-f]{16}")


def new_version() -> str:
    """A writer's own folder for an entry's files in the bucket: never written by anyone else."""
    return f"v-{secrets.token_hex(8)}"


class StepOutput(BaseModel):
    """The small typed pointer one step hands the next: where its files are and what they hold."""

    step: str
    key: str
    dir: str
    files: dict[str, str]  # relative path -> sha256
    summary: dict[str, Any] = {}
    reused: bool = False  # found complete in the bucket (or another writer's won) and not used as computed: recorded as cached
    made_by: str | None = None  # the run whose execution computed it (entries made before this was kept: None)
    objects: str | None = None  # (remote) the entry's version folder in the bucket; None on a local root

    @field_validator("files")
    @classmethod
    def _names_inside(cls, files: dict[str, str]) -> dict[str, str]:
        for name in files:  # a name from someone else's _entry.json becomes a path this process writes
            if not safe_relative_name(name):
                raise ValueError(f"{name!r} is not a file name inside the entry")
        return files

    @field_validator("objects")
    @classmethod
    def _a_version(cls, objects: str | None) -> str | None:
        if objects is not None and not VERSION_PATTERN.fullmatch(objects):
            raise ValueError(f"{objects!r} is not an entry version")
        return objects

    @property
    def path(self) -> Path:
        return Path(self.dir)

    def file(self, name: str) -> Path:
        return Path(self.dir) / name

    @property
    def content_fingerprint(self) -> str:
        """What downstream cache keys hang on: the bytes this step produced."""
        return fingerprint(sorted(self.files.items()))


def parse_entry(data: bytes | str | None, step: str, key: str) -> StepOutput | None:
    """An _entry.json's StepOutput, if it is one and is the entry of this step and key; None for anything else."""
    if data is None:
        return None
    try:
        output = StepOutput.model_validate_json(data)
    except ValueError:  # not JSON, not an object, fields of the wrong type, unsafe names
        return None
    return output if (output.step, output.key) == (step, key) else None
