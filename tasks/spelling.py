"""'did you mean': the closest known name to a mistyped one (a configuration key, a preset, a column, a step)."""

from __future__ import annotations

import difflib
from typing import Iterable

from pydantic import BaseModel


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to a mistyped name, or None when none is close (difflib's ratio below 0.6)."""
    close = difflib.get_close_matches(str(name), [str(c) for c in candidates], n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """' (did you mean 'X'?)' for the closest candidate to a mistyped name, '' when none is close."""
    close = closest(name, candidates)
    return f" (did you mean {close!r}?)" if close else ""


def key_suggestion(model: type[BaseModel], loc: tuple) -> str:
    """did_you_mean for an unknown key at loc (pydantic's error location, e.g. ('data', 'pathh')), among the keys of
    its section (the key's own name compared, not the section's that they all share): " (did you mean 'data.path'?)"."""
    keys = {key.rsplit(".", 1)[-1]: key for key in sibling_keys(model, loc)}
    close = closest(str(loc[-1]), keys)
    return f" (did you mean {keys[close]!r}?)" if close else ""


def sibling_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The dotted keys that an unknown key at loc sits among: the other keys of its section, or the top-level ones,
    each spelt as a user writes it (field aliases)."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) or next((f for f in model.model_fields.values() if f.alias == part), None)
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    prefix = ".".join(str(part).removesuffix("_") for part in loc[:-1])
    return [f"{prefix}.{field.alias or name}" if prefix else (field.alias or name) for name, field in model.model_fields.items()]
