"""Safe YAML loading that remembers where every value was written (line and column)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from qntz.errors import PipelineError

Location = tuple[int, int]  # 1-based line and column
PathKey = tuple[Any, ...]


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _walk(node: yaml.Node, path: PathKey, marks: dict[PathKey, Location]) -> None:
    marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            _walk(value_node, (*path, key_node.value), marks)
            marks[(*path, key_node.value, "<key>")] = (
                key_node.start_mark.line + 1,
                key_node.start_mark.column + 1,
            )
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), marks)


def load_yaml(path: Path) -> tuple[Any, dict[PathKey, Location]]:
    """Return the document and a map from each value's path to where it was written."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PipelineError("pipeline file not found", where=str(path),
                            hint="check the path") from None
    except OSError as exc:
        raise PipelineError(f"cannot read pipeline file: {exc.strerror}", where=str(path)) from exc
    try:
        node = yaml.compose(text, Loader=_UniqueKeyLoader)
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        raise PipelineError(f"YAML syntax error: {problem}", where=where,
                            hint="fix the YAML at that line") from None
    except yaml.YAMLError as exc:
        raise PipelineError(f"YAML error: {exc}", where=str(path)) from None
    marks: dict[PathKey, Location] = {}
    if node is not None:
        _walk(node, (), marks)
    return data, marks


def locate(marks: dict[PathKey, Location], path: PathKey) -> Location | None:
    """The location of `path`, or of its nearest written ancestor."""
    path = tuple(path)
    while path:
        if path in marks:
            return marks[path]
        path = path[:-1]
    return marks.get(())
