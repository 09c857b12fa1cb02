"""What a loaded pipeline is: its steps (id, kind, needs, parameters) and their graph.

Kept apart from the loader (`pipeline.py`), which needs the registry of kinds, so that the
step API and the data section can name these types without importing the loader.
"""

from __future__ import annotations

import graphlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qntz.core.inputs import InputSpec
from qntz.core.yamlfile import Location, PathKey, locate

if TYPE_CHECKING:
    from qntz.core.schema_memo import SchemaMemo


@dataclass(frozen=True)
class StepSpec:
    id: str
    kind: str
    needs: tuple[str, ...]
    given: dict[str, Any]  # parameters as written
    params: dict[str, Any]  # with defaults filled in: what is hashed
    at: tuple[str, ...] = ()  # where it is written in the file
    resources: dict[str, Any] | None = None  # for a cluster executor; not hashed


@dataclass
class Pipeline:
    path: Path
    name: str
    inputs: dict[str, InputSpec]
    data: dict[str, dict[str, Any]]
    steps: dict[str, StepSpec]  # in run order
    marks: dict[PathKey, Location] = field(repr=False, default_factory=dict)
    memo: SchemaMemo | None = field(repr=False, default=None, compare=False)

    @property
    def root(self) -> Path:
        """The folder the pipeline file is in: relative paths in it start here."""
        return self.path.parent

    def where(self, *path: Any) -> str:
        loc = locate(self.marks, path)
        return f"{self.path}:{loc[0]}:{loc[1]}" if loc else str(self.path)

    def order(self, only: list[str] | None = None) -> list[str]:
        """Step ids in an order that respects `needs`; with `only`, those and their ancestors."""
        wanted = set(self.steps) if not only else self.ancestors(only)
        sorter = graphlib.TopologicalSorter(
            {sid: self.steps[sid].needs for sid in self.steps if sid in wanted})
        rank = {sid: i for i, sid in enumerate(self.steps)}
        ordered: list[str] = []
        sorter.prepare()
        while sorter.is_active():
            ready = sorted(sorter.get_ready(), key=rank.__getitem__)
            ordered.extend(ready)
            sorter.done(*ready)
        return ordered

    def ancestors(self, ids: list[str]) -> set[str]:
        seen: set[str] = set()
        stack = list(ids)
        while stack:
            sid = stack.pop()
            if sid not in seen:
                seen.add(sid)
                stack.extend(self.steps[sid].needs)
        return seen
