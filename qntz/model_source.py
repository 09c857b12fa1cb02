"""Find a factory's source files without importing it, and import it fresh when asked."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from qntz.errors import PipelineError


def split_factory(factory: str) -> tuple[str, str]:
    module, _, attr = factory.partition(":")
    return module, attr


def display_path(path: str | Path, root: Path) -> str:
    """A source path as a person wants to read it: relative to the pipeline when inside it."""
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def source_digests(module: str, root: Path, digests: Any) -> dict[str, str]:
    """Digests of a module's source files, named so the key is the same on every machine:
    relative to the pipeline for local files, by module name for installed ones."""
    named = {}
    for path in source_files(module, root):
        name = display_path(path, root)
        if Path(name).is_absolute():
            name = f"{module}:{path.name}"
        named[name] = digests.of(path)
    return named


def local_module_file(module: str, root: Path) -> Path | None:
    """`a.b` next to the pipeline file: root/a/b.py or root/a/b/__init__.py."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def source_files(module: str, root: Path) -> list[Path]:
    """Every file whose edit can change what the factory builds.

    For a module next to the pipeline, all Python files of its top-level package (a model
    split across files is common); for an installed module, the module's own file.
    """
    local = local_module_file(module, root)
    if local is not None:
        top = root / module.split(".")[0]
        return sorted(top.rglob("*.py")) if top.is_dir() else [local]
    found = _installed_module_file(module)
    if found is None:
        raise PipelineError(
            f"model module '{module}' not found next to the pipeline file ({root}) "
            "nor on the Python path", hint="check `factory: module.path:attr` and the file name")
    return [found]


def _installed_module_file(module: str) -> Path | None:
    parts = module.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin in (None, "built-in", "frozen"):
        return None
    if len(parts) == 1:
        return Path(spec.origin)
    for location in spec.submodule_search_locations or []:
        path = local_module_file(".".join(parts[1:]), Path(location))
        if path is not None:
            return path
    return None


def import_factory(factory: str, root: Path, where: str) -> Any:
    """Import `module:attr`, the pipeline's folder first, dropping stale copies of it."""
    module_name, attr = split_factory(factory)
    if local_module_file(module_name, root) is not None:
        top = module_name.split(".")[0]
        for name in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
            del sys.modules[name]
        importlib.invalidate_caches()
    sys.path.insert(0, str(root))
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise PipelineError(f"cannot import model module '{module_name}': {exc}", where=where,
                            hint="check `factory:` and that the module's imports exist") from exc
    finally:
        sys.path.remove(str(root))
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            from qntz.pipeline import did_you_mean
            names = [n for n in dir(target) if not n.startswith("_")]
            raise PipelineError(
                f"factory attribute '{attr}' not found in module '{module_name}'"
                f"{did_you_mean(part, names)}",
                where=where, hint=f"name a class or function defined in {module.__file__}")
        target = getattr(target, part)
    return target
