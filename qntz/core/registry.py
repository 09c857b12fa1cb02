"""Step kinds and artifact runners, found through Python entry points.

qntz's own kinds are registered the way a third party's are, in `pyproject.toml`:

    [project.entry-points."qntz.steps"]
    onnxruntime-optimize = "my_package.optimize:OrtOptimize"   # a `qntz.core.step.Step`

    [project.entry-points."qntz.runners"]
    engine = "my_package.runner:engine_runner"   # (artifact, inputs) -> (Runner, names)

A runner is registered for what an artifact provides ("onnx", "engine", ...): `compare`
runs every candidate through the runner of its type and never names a domain.

The entry-point files are read here rather than through `importlib.metadata`, which alone
costs 70 ms to import and scan: a third of what a fully cached run may take. Each kind's
module is imported only when the kind is asked for.

Tests (and notebooks) register kinds in this process, without installing a distribution:

    with registry.override({"emit": Emit}, only=True):
        qntz.run("toy.yaml")
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from qntz.core.errors import PipelineError

if TYPE_CHECKING:
    import numpy as np

    from qntz.core.step import Step

STEPS_GROUP, RUNNERS_GROUP = "qntz.steps", "qntz.runners"
STEP_API_VERSION = 1
"""Bumped when `Step` changes incompatibly; a kind may declare `api_version` it was written for."""

Runner = Callable[["dict[str, np.ndarray]"], "list[np.ndarray]"]
_lock = threading.Lock()


class NotRunnable(Exception):
    """This machine cannot run the artifact (e.g. no GPU for an engine); the reason says why."""


def step_names() -> list[str]:
    """Every registered kind's name, without importing any kind."""
    return list(_registered(STEPS_GROUP))


def step_kind(name: str) -> type[Step] | None:
    """The kind registered as `name`, imported on first use; None when there is none."""
    target = _registered(STEPS_GROUP).get(name)
    if target is None:
        return None
    kind = _load(STEPS_GROUP, name, target) if isinstance(target, str) else target
    return _checked_kind(name, kind, target)


def _checked_kind(name: str, kind: Any, target: Any) -> type[Step]:
    if getattr(kind, "kind", None) != name:
        raise PipelineError(f"the step kind registered as {name!r} ({target}) declares "
                            f"kind {getattr(kind, 'kind', None)!r}",
                            hint="make the entry point's name and the class's `kind` agree")
    if getattr(kind, "api_version", 1) > STEP_API_VERSION:
        raise PipelineError(f"the step kind {name!r} ({provider(name)}) needs step API "
                            f"{kind.api_version}; this qntz has {STEP_API_VERSION}",
                            hint="upgrade qntz, or install an older release of the plugin")
    return kind


class _Kinds(Mapping[str, "type[Step]"]):
    """The registry as a mapping: names come from the entry points, a kind is imported
    when it is looked up."""

    def __getitem__(self, name: str) -> type[Step]:
        kind = step_kind(name)
        if kind is None:
            raise KeyError(name)
        return kind

    def __iter__(self) -> Iterator[str]:
        return iter(step_names())

    def __len__(self) -> int:
        return len(step_names())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in _registered(STEPS_GROUP)


KINDS = _Kinds()


def runner_factory(provides: list[str]) -> tuple[str, Callable[..., Any]] | None:
    """The registered runner for the first type an artifact provides that has one."""
    runners = _registered(RUNNERS_GROUP)
    for what in provides:
        if what in runners:
            target = runners[what]
            return what, _load(RUNNERS_GROUP, what, target) if isinstance(target, str) else target
    return None


@dataclass(frozen=True)
class _Layer:
    """Kinds and runners registered in this process, over (or, `only`, instead of) the
    entry points."""

    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    only: bool = False


_layer: _Layer | None = None  # None: the entry points alone (the default, and fast, path)
_layer_lock = threading.Lock()


@contextmanager
def override(steps: Mapping[str, type[Step]] | None = None,
             runners: Mapping[str, Callable[..., Any]] | None = None, *,
             only: bool = False) -> Iterator[None]:
    """Register step kinds (name -> `Step` subclass) and artifact runners (what an artifact
    provides -> runner factory) in this process while the block runs; on leaving it the
    registry is what it was before, whatever the block raised.

    They win over entry points of the same name; with `only`, the entry points are hidden
    (the registry holds these and nothing else, as a test on toy kinds wants). Overrides
    nest. A kind registered this way comes from no distribution: `provider` gives None and
    no plugin release enters its key. The registry is process-wide, not per thread (a run's
    worker threads must see it): do not override while another thread runs a pipeline.
    """
    global _layer
    steps = dict(steps or {})
    for name, kind in steps.items():
        _checked_kind(name, kind, f"{getattr(kind, '__module__', '?')}:"
                                  f"{getattr(kind, '__qualname__', kind)}")
    with _layer_lock:
        saved = _layer
        below = saved or _Layer()
        groups = {group: {**below.groups.get(group, {}), **added}
                  for group, added in ((STEPS_GROUP, steps), (RUNNERS_GROUP, dict(runners or {})))}
        _layer = _Layer(groups, below.only or only)
    try:
        yield
    finally:
        with _layer_lock:
            _layer = saved


def _registered(group: str) -> Mapping[str, Any]:
    """name -> "module:attr" (an entry point) or the object registered in this process."""
    layer = _layer
    if layer is None:
        return _entry_points(group)
    found = {} if layer.only else _entry_points(group)
    return {**found, **layer.groups.get(group, {})}


@cache
def _load(group: str, name: str, target: str) -> Any:
    module_name, _, attr = target.partition(":")
    with _lock:
        try:
            obj: Any = importlib.import_module(module_name.strip())
            for part in attr.strip().split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise PipelineError(f"the plugin {name!r} in group {group} ({target}) cannot be "
                                f"loaded: {exc}",
                                hint="reinstall the package that provides it") from exc
    return obj


def provider(name: str) -> str | None:
    """The distribution (as `name==version`) that registered the step kind `name`; None for
    a kind registered in this process (`override`)."""
    layer = _layer
    if layer is not None and (layer.only or name in layer.groups.get(STEPS_GROUP, {})):
        return None
    _entry_points(STEPS_GROUP)
    return _providers.get((STEPS_GROUP, name))


_providers: dict[tuple[str, str], str] = {}


@cache
def _entry_points(group: str) -> dict[str, str]:
    """name -> "module:attr" for `group`, the first distribution on sys.path winning."""
    found: dict[str, str] = {}
    seen: set[str] = set()
    for folder in sys.path:
        for dist_info, dist_name in _distributions(folder or "."):
            if dist_name in seen:
                continue
            seen.add(dist_name)
            for name, target in _read_group(os.path.join(dist_info, "entry_points.txt"), group):
                if name not in found:
                    found[name] = target
                    _providers[(group, name)] = _dist_id(dist_info)
    if not found and group == STEPS_GROUP:
        raise PipelineError("no step kinds are registered: qntz is not installed in this "
                            "environment (its entry points are missing)",
                            hint="install it: pip install -e . (or pip install qntz)")
    return found


def _distributions(folder: str) -> list[tuple[str, str]]:
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    return [(os.path.join(folder, n), _normalize(n.rsplit(".", 1)[0].split("-")[0]))
            for n in names if n.endswith((".dist-info", ".egg-info"))]


def _dist_id(dist_info: str) -> str:
    """`name==version`; an `.egg-info` folder's name has no version: its PKG-INFO does."""
    name, _, version = os.path.basename(dist_info).rsplit(".", 1)[0].partition("-")
    return f"{_normalize(name)}=={version or _pkg_info_version(dist_info)}"


def _pkg_info_version(egg_info: str) -> str:
    try:
        with open(os.path.join(egg_info, "PKG-INFO"), encoding="utf-8") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("Version:")),
                        "unknown")
    except OSError:
        return "unknown"


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _read_group(path: str, group: str) -> list[tuple[str, str]]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return []
    if f"[{group}]" not in text:
        return []
    section, pairs = None, []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line[1:-1].strip()
        elif section == group and "=" in line and not line.startswith(("#", ";")):
            name, _, target = line.partition("=")
            pairs.append((name.strip(), target.strip()))
    return pairs
