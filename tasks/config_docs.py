"""The configuration's documentation, written from tasks/config.py's pydantic fields: their descriptions are its one source.

`python -m tasks.config_docs` rewrites docs/configuration.md (every key) and the README's key table (the keys in
README_KEYS); `python -m tasks.config_docs --check` says which is out of date (tests/test_config_docs.py runs it).
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from tasks.config import RunConfig, load_config

REPO = Path(__file__).resolve().parent.parent
FULL_DOC = REPO / "docs" / "configuration.md"
README = REPO / "README.md"
BEGIN, END = "<!-- keys:begin (python -m tasks.config_docs writes this table) -->", "<!-- keys:end -->"

# The keys a first hour needs, in the README's order; every other key is in docs/configuration.md.
README_KEYS = (
    "data.source", "data.path", "data.test_path", "data.text_column", "data.label_column", "data.max_reviews",
    "encode.tokenizer", "encode.num_words", "encode.max_len",
    "model.cell", "model.units", "model.bidirectional", "model.pooling",
    "train.epochs", "train.batch_size", "train.members", "train.fused_input", "train.tensorboard",
    "promote.metric", "promote.model", "promote.beat_baseline", "track.mlflow_uri", "notify.webhook", "score.on_drift",
)


@dataclass(frozen=True)
class Key:
    name: str  # section.key
    kind: str  # the values it takes, in words
    default: str
    preset: str  # the default preset's value, "" where it is the default
    meaning: str


def _kind(annotation: Any) -> str:
    """The values a field takes, as a reader wants them: `a`, `b` for a choice, "number or null", "list"."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " / ".join(f"`{json.dumps(a)}`" if not isinstance(a, str) else f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _kind(a) for a in args)
    if origin is typing.Annotated:
        return _kind(args[0])
    if origin in (list, tuple):
        return "list"
    if origin is dict:
        return "map"
    return {int: "integer", float: "number", bool: "true / false", str: "text", SecretStr: "URL (never recorded)"}.get(annotation, str(annotation))


def _shown(value: Any) -> str:
    return "null" if value is None else f"`{json.dumps(value, ensure_ascii=False)}`" if not isinstance(value, str) else f"`{value}`"


def keys() -> list[Key]:
    """Every key of the configuration, section by section, in declaration order."""
    defaults, preset = RunConfig().as_dict(), load_config("default").as_dict()
    found = []
    for section, field in RunConfig.model_fields.items():
        name = field.alias or section
        if not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            continue
        for key, inner in field.annotation.model_fields.items():
            default, chosen = defaults[name][key], preset[name][key]
            found.append(Key(f"{name}.{key}", _kind(inner.annotation), _shown(default), "" if chosen == default else _shown(chosen),
                             (inner.description or "").replace("|", "\\|")))
    return found


def undocumented() -> list[str]:
    return [key.name for key in keys() if not key.meaning]


def full_doc() -> str:
    lines = [
        "# Configuration keys",
        "",
        "Written by `python -m tasks.config_docs` from the field descriptions in `tasks/config.py`; edit those, not this",
        "page (tests/test_config_docs.py fails when it is out of date). A run's configuration is the defaults, then a preset",
        "(`default` unless `--preset` or `--config` is given) or a YAML file of these sections, then `--set section.key=value`;",
        "`rnnflow config` prints the result and each run's `manifest.json` keeps it. Unknown keys, keys given twice and",
        "non-finite floats are refused. \"default preset\": the value `tasks/presets/default.yaml` gives, where it differs.",
    ]
    section = None
    for key in keys():
        head = key.name.split(".")[0]
        if head != section:
            section = head
            lines += ["", f"## {section}", "", "| key | values | default | default preset | meaning |", "| --- | --- | --- | --- | --- |"]
        lines.append(f"| `{key.name}` | {key.kind} | {key.default} | {key.preset} | {key.meaning} |")
    return "\n".join(lines) + "\n"


def readme_table() -> str:
    """The README's table: README_KEYS with their default ("→ X": the default preset's value) and meaning."""
    by_name = {key.name: key for key in keys()}
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]
    for name in README_KEYS:
        key = by_name[name]
        rows.append(f"| `{name}` | {key.default}{f' → {key.preset}' if key.preset else ''} | {key.meaning} |")
    return "\n".join(rows)


def readme_with_table(readme: str) -> str:
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{readme_table()}\n{END}{tail}"


def stale() -> list[str]:
    """The files out of date with tasks/config.py: what --check reports."""
    out = []
    if not FULL_DOC.exists() or FULL_DOC.read_text(encoding="utf-8") != full_doc():
        out.append(str(FULL_DOC.relative_to(REPO)))
    readme = README.read_text(encoding="utf-8")
    if readme_with_table(readme) != readme:
        out.append(str(README.relative_to(REPO)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.config_docs", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 naming the files out of date")
    args = parser.parse_args(argv)
    if args.check:
        out = stale()
        if out:
            print(f"{' and '.join(out)} {'is' if len(out) == 1 else 'are'} out of date with tasks/config.py's descriptions: "
                  "run `python -m tasks.config_docs` to rewrite them.")
        return 1 if out else 0
    FULL_DOC.write_text(full_doc(), encoding="utf-8")
    README.write_text(readme_with_table(README.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"wrote {FULL_DOC.relative_to(REPO)} ({len(keys())} keys) and README.md's table ({len(README_KEYS)} keys)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
