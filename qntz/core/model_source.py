"""Fingerprint a factory's source without importing it, and import it fresh when asked.

A factory's fingerprint names every file whose edit can change what it builds, portably:
local files relative to the pipeline's folder, an installed distribution as `name==version`
(digest of the file digests its RECORD lists), a package under development (an editable
install, or a folder on the Python path) by its source files, relative to the package.
"""

from __future__ import annotations

import ast
import csv
import importlib
import importlib.util
import json
import sys
import threading
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qntz.core.errors import PipelineError
from qntz.core.hashing import digest_value

if TYPE_CHECKING:
    from importlib import metadata

# import_factory edits sys.path and sys.modules, which every thread shares (`--jobs N`).
_IMPORT_LOCK = threading.Lock()


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
    """Digests of everything whose edit can change what `module` builds, named so the key is
    the same in every checkout: see the module docstring."""
    if local_module_file(module, root) is not None:
        return {display_path(path, root): digests.of(path)
                for path in local_closure(module, root).values()}
    found = installed_digests(module, digests)
    if found is None:
        raise PipelineError(
            f"model module '{module}' not found next to the pipeline file ({root}) "
            "nor on the Python path", hint="check `factory: module.path:attr` and the file name")
    return found


def local_module_file(module: str, root: Path) -> Path | None:
    """`a.b` next to the pipeline file: root/a/b.py or root/a/b/__init__.py."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


# --- local factories -----------------------------------------------------------------------

def local_closure(module: str, root: Path) -> dict[str, Path]:
    """The local modules (dotted name -> file) that importing `module` can run.

    A local package counts whole (a model split across files is common); beyond that, the
    local modules its files import, followed through their own imports, read with `ast`.
    """
    top = root / module.split(".")[0]
    start = sorted(top.rglob("*.py")) if top.is_dir() else [local_module_file(module, root)]
    found: dict[str, Path] = {}
    pending = [path for path in start if path is not None]
    while pending:
        path = pending.pop()
        name = _module_name(path, root)
        if name in found:
            continue
        found[name] = path
        for imported in _imports(path, name):
            target = _local_target(imported, root)
            if target is not None and _module_name(target, root) not in found:
                pending.append(target)
    return dict(sorted(found.items()))


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _local_target(module: str, root: Path) -> Path | None:
    """The file under `root` that importing `module` would run, if any (never a path that
    climbs out of the pipeline's folder)."""
    if not module or any(not part.isidentifier() for part in module.split(".")):
        return None
    return local_module_file(module, root)


def _imports(path: Path, name: str) -> set[str]:
    """Dotted names a module's import statements can load, parents included (importing
    `a.b.c` runs a/__init__.py and a/b/__init__.py first)."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError):
        return set()  # importing it fails too; the step will say so
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module or "", node.level, package)
            if base is not None:
                names.add(base)
                names.update(f"{base}.{a.name}" if base else a.name for a in node.names)
    return {parent for dotted in names for parent in _parents(dotted)}


def _absolute(module: str, level: int, package: str) -> str | None:
    if level == 0:
        return module
    parts = package.split(".") if package else []
    if level - 1 > len(parts):
        return None  # climbs above the pipeline's folder
    base = parts[:len(parts) - (level - 1)]
    return ".".join([*base, *([module] if module else [])])


def _parents(dotted: str) -> list[str]:
    parts = dotted.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


# --- installed factories -------------------------------------------------------------------

def installed_digests(module: str, digests: Any) -> dict[str, str] | None:
    """An installed module's fingerprint: `dist==version` with the digest of the file digests
    its RECORD lists; a package under development by the content of its source files."""
    origin = _installed_module_file(module)
    if origin is None:
        return None
    top = module.split(".")[0]
    for dist in _distributions_of(top):
        record = _record(dist)
        if not _editable(dist) and _relative_to_dist(origin, dist) in record:
            name = f"{dist.metadata['Name']}=={dist.version}"
            return {name: digest_value(record)}
    return _package_sources(top, digests)


def _installed_module_file(module: str) -> Path | None:
    parts = module.split(".")
    spec = _top_spec(parts[0])
    if spec is None or spec.origin in (None, "built-in", "frozen"):
        return None
    if len(parts) == 1:
        return Path(spec.origin)
    for location in spec.submodule_search_locations or []:
        path = local_module_file(".".join(parts[1:]), Path(location))
        if path is not None:
            return path
    return None


def _top_spec(top: str) -> Any:
    try:
        return importlib.util.find_spec(top)  # a top-level name: nothing is imported
    except (ImportError, ValueError):
        return None


def _distributions_of(top: str) -> list[metadata.Distribution]:
    """Distributions that may hold the top-level package `top`: the one named like it first
    (found at once), then those that list it (a scan of all installed metadata)."""
    from importlib import metadata

    try:
        named = [metadata.distribution(top)]
    except metadata.PackageNotFoundError:
        named = []
    return named + [metadata.distribution(name) for name in _owners().get(top, [])]


@cache
def _owners() -> dict[str, list[str]]:
    from importlib import metadata

    return metadata.packages_distributions()


def _record(dist: metadata.Distribution) -> dict[str, str]:
    """RECORD's file digests, without the .dist-info folder (its installer-specific files
    differ between machines with the same package) and without unhashed entries."""
    rows = csv.reader((dist.read_text("RECORD") or "").splitlines())
    return {row[0]: row[1] for row in rows if len(row) >= 2 and row[1]
            and not row[0].split("/")[0].endswith(".dist-info")}


def _editable(dist: metadata.Distribution) -> bool:
    try:
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
    except ValueError:
        return False
    return bool(direct.get("dir_info", {}).get("editable"))


def _relative_to_dist(origin: Path, dist: metadata.Distribution) -> str:
    try:
        return origin.resolve().relative_to(Path(dist.locate_file("")).resolve()).as_posix()
    except ValueError:
        return ""


def _package_sources(top: str, digests: Any) -> dict[str, str]:
    """The Python files of the top-level package `top`, relative to the folder holding it."""
    spec = _top_spec(top)
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        origin = Path(spec.origin)
        return {origin.name: digests.of(origin)}
    files: dict[str, str] = {}
    for location in map(Path, locations):
        for path in sorted(location.rglob("*.py")):
            files[(Path(top) / path.relative_to(location)).as_posix()] = digests.of(path)
    return files


# --- importing -----------------------------------------------------------------------------

def import_factory(factory: str, root: Path, where: str) -> Any:
    """Import `module:attr`, the pipeline's folder first, dropping stale copies of it and of
    the local modules it imports. Safe to call from several threads."""
    module_name, attr = split_factory(factory)
    with _IMPORT_LOCK:
        module = _import_fresh(module_name, root, where)
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            from qntz.core.wording import did_you_mean
            names = [n for n in dir(target) if not n.startswith("_")]
            raise PipelineError(
                f"factory attribute '{attr}' not found in module '{module_name}'"
                f"{did_you_mean(part, names)}",
                where=where, hint=f"name a class or function defined in {module.__file__}")
        target = getattr(target, part)
    return target


def _import_fresh(module_name: str, root: Path, where: str) -> Any:
    if local_module_file(module_name, root) is not None:
        top = module_name.split(".")[0]
        stale = set(local_closure(module_name, root))
        for name in list(sys.modules):
            if name in stale or name == top or name.startswith(top + "."):
                del sys.modules[name]
        importlib.invalidate_caches()
    sys.path.insert(0, str(root))
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise PipelineError(f"cannot import model module '{module_name}': {exc}", where=where,
                            hint="check `factory:` and that the module's imports exist") from exc
    finally:
        sys.path.remove(str(root))
