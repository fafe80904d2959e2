"""YAML read strictly: a mapping that names one key twice is an error, not the last value silently kept.

PyYAML keeps the last of two equal keys and drops the first without a word, so a file that sets
train.epochs twice silently trained with the second value. tasks/config.py reads presets, --config
files and --set values through these.
"""

from __future__ import annotations

from typing import Any

import yaml

from tasks.errors import RnnflowError


class DuplicateKeyError(RnnflowError):
    """A YAML mapping names one key twice: key is its dotted path, lines where it appears (1-based)."""

    def __init__(self, key: str, lines: tuple[int, int]):
        super().__init__(key)
        self.key, self.lines = key, lines


_YAML_MERGE_TAG = "tag:yaml.org,2002:merge"


def _check_unique_keys(node: yaml.Node, path: list[str], visited: set[int]) -> None:
    """Raise DuplicateKeyError for the first mapping under node that names a key twice."""
    if id(node) in visited:  # an alias points back at a node already walked (or at itself)
        return
    visited.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first_line: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else None
            if key is not None and key_node.tag != _YAML_MERGE_TAG:
                line = key_node.start_mark.line + 1
                # The tag as well as the text: 1 (a number) and "1" (a string) are two keys.
                if (key_node.tag, key) in first_line:
                    raise DuplicateKeyError(".".join([*path, key]), (first_line[(key_node.tag, key)], line))
                first_line[(key_node.tag, key)] = line
            _check_unique_keys(value_node, [*path, key if key is not None else "?"], visited)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _check_unique_keys(item, [*path, str(index)], visited)


def safe_load_unique(text: str) -> Any:
    """yaml.safe_load, except that a mapping naming a key twice raises DuplicateKeyError.

    PyYAML keeps the last of two equal keys and drops the first without a word, so a file that sets
    train.epochs twice silently trained with the second value.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_unique_keys(node, [], set())
        return loader.construct_document(node)
    finally:
        loader.dispose()


def parse_value(raw: str) -> Any:
    """Read a --set value the way YAML would: 64 is a number, true a bool, [a, b] a list.

    A mapping in it that names a key twice raises DuplicateKeyError rather than keeping the last.
    """
    try:
        return safe_load_unique(raw)
    except yaml.YAMLError:
        return raw
