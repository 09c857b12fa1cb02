"""Safe YAML loading that remembers where every value was written (line and column).

A pipeline file is plain data (text, numbers, booleans, null, lists, mappings), and bounded:
at most MAX_BYTES long, MAX_NODES values once aliases are expanded, MAX_DEPTH levels deep.
The bounds are checked while the document is composed, so an alias bomb or a file nested
thousands deep is refused in milliseconds instead of exhausting memory or the stack.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from qntz.core.errors import PipelineError

Location = tuple[int, int]  # 1-based line and column
PathKey = tuple[Any, ...]

MAX_BYTES = 1 << 20
MAX_NODES = 100_000
MAX_DEPTH = 100
TIMESTAMP = "tag:yaml.org,2002:timestamp"
MERGE = "tag:yaml.org,2002:merge"
REFUSED_TAGS = ("binary", "set", "omap", "pairs", "timestamp")


class _PlainLoader(yaml.SafeLoader):
    """SafeLoader for bounded plain data: unique keys, no dates, bytes or sets."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._measured: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth), expanded
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        is_alias = self.check_event(yaml.AliasEvent)
        mark = self.peek_event().start_mark
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _refuse(f"values are nested deeper than {MAX_DEPTH} levels", mark)
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if id(node) not in self._measured:
            if is_alias:
                raise _refuse("an alias refers to a value that contains it", mark)
            self._measured[id(node)] = self._measure(node, mark)
        return node

    def _measure(self, node: yaml.Node, mark: yaml.Mark) -> tuple[int, int]:
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        sizes = [self._measured[id(child)] for child in children]
        count = 1 + sum(size for size, _ in sizes)
        depth = 1 + max((d for _, d in sizes), default=0)
        if count > MAX_NODES:
            raise _refuse(f"the document has more than {MAX_NODES} values once its aliases "
                          "are expanded", mark)
        if depth > MAX_DEPTH:
            raise _refuse(f"values are nested deeper than {MAX_DEPTH} levels once aliases "
                          "are expanded", mark)
        return count, depth

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == MERGE:  # `<<: *base` is flattened (and may be overridden) below
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:
                raise _refuse("a key must be a single value, not a list or mapping",
                              key_node.start_mark, yaml.constructor.ConstructorError) from None
            if duplicate:
                raise _refuse(f"duplicate key {key!r}", key_node.start_mark,
                              yaml.constructor.ConstructorError)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # more digits than Python converts
            raise _refuse("this number is too long", node.start_mark,
                          yaml.constructor.ConstructorError) from None


def _refuse(problem: str, mark: yaml.Mark, kind: type = yaml.composer.ComposerError
            ) -> yaml.MarkedYAMLError:
    return kind(None, None, problem, mark)


def _refuse_tag(loader: _PlainLoader, node: yaml.Node) -> None:
    raise _refuse(f"the tag {node.tag} is not plain data", node.start_mark,
                  yaml.constructor.ConstructorError)


# Dates stay text (JSON has no dates); tags that make bytes, sets or dates are refused.
_PlainLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != TIMESTAMP]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
# YAML 1.1 reads `1e-4` (no dot) as text; 1.2 and JSON read it as the number users mean.
_PlainLoader.add_implicit_resolver("tag:yaml.org,2002:float",
                                   re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
                                   list("-+0123456789"))
_PlainLoader.add_constructor("tag:yaml.org,2002:int", _PlainLoader.construct_yaml_int)
for _name in REFUSED_TAGS:
    _PlainLoader.add_constructor(f"tag:yaml.org,2002:{_name}", _refuse_tag)


def is_regular_file(path: Path) -> bool:
    """True for a regular file (not a folder, FIFO or device); False for unusable paths."""
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long for the OS, say
        return False


def is_folder(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def _read_text(path: Path) -> str:
    if not is_regular_file(path):
        if is_folder(path) or _exists(path):
            raise PipelineError("the pipeline is not a regular file", where=str(path),
                                hint="name a .yaml file (not a folder, FIFO or device)")
        raise PipelineError("pipeline file not found", where=str(path), hint="check the path")
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_BYTES + 1)
    except OSError as exc:
        raise PipelineError(f"cannot read pipeline file: {exc.strerror}", where=str(path),
                            hint="check its permissions") from exc
    if len(data) > MAX_BYTES:
        raise PipelineError(f"the pipeline file is larger than {MAX_BYTES} bytes",
                            where=str(path), hint="a pipeline is a short recipe; trim it")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = _line_col(data[:exc.start].decode("utf-8", "replace"), exc.start)
        raise PipelineError(f"byte 0x{data[exc.start]:02x} is not UTF-8",
                            where=f"{path}:{line}:{col}", hint="save the file as UTF-8") from None


def _line_col(text: str, position: int) -> Location:
    before = text[:position]
    return before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1


def _compose(text: str, path: Path) -> tuple[Any, dict[PathKey, Location]]:
    loader = _PlainLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
        marks: dict[PathKey, Location] = {}
        if node is not None:
            _walk(loader, node, (), marks)
        return data, marks
    finally:
        loader.dispose()


def load_yaml(path: Path) -> tuple[Any, dict[PathKey, Location]]:
    """Return the document and a map from each value's path to where it was written."""
    text = _read_text(path)
    try:
        return _compose(text, path)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        raise PipelineError(f"YAML syntax error: {problem}", where=where,
                            hint="fix the YAML at that line") from None
    except yaml.reader.ReaderError as exc:
        line, col = _line_col(text, exc.position)
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise PipelineError(f"character U+{char:04X} is not allowed in YAML",
                            where=f"{path}:{line}:{col}",
                            hint='remove it, or write it as an escape in a "quoted" string'
                            ) from None
    except yaml.YAMLError as exc:
        raise PipelineError(f"YAML error: {' '.join(str(exc).split())}", where=str(path),
                            hint="fix the YAML") from None


def _walk(loader: _PlainLoader, node: yaml.Node, path: PathKey,
          marks: dict[PathKey, Location]) -> None:
    marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            _walk(loader, value_node, (*path, key), marks)
            marks[(*path, key, "<key>")] = (
                key_node.start_mark.line + 1,
                key_node.start_mark.column + 1,
            )
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(loader, item, (*path, index), marks)


def locate(marks: dict[PathKey, Location], path: PathKey) -> Location | None:
    """The location of `path`, or of its nearest written ancestor."""
    path = tuple(path)
    while path:
        if path in marks:
            return marks[path]
        path = path[:-1]
    return marks.get(())
