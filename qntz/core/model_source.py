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
import importlib.machinery
import importlib.util
import json
import re
import sys
import threading
from collections.abc import Collection, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qntz.core.errors import PipelineError, first_line
from qntz.core.hashing import digest_value

if TYPE_CHECKING:
    from importlib import metadata

# import_factory edits sys.meta_path and sys.modules, which every thread shares (`--jobs N`).
_IMPORT_LOCK = threading.Lock()

# Top-level packages qntz imports, or that the libraries it drives import lazily (torch
# imports sympy when it first traces): a file of the same name beside the pipeline must never
# stand in for them. `protected_names` adds every installed requirement's packages; these
# hold without reading any metadata (`validate` and a cached run stay fast).
OWN_IMPORTS = frozenset({
    "qntz", "torch", "torchgen", "functorch", "numpy", "onnx", "onnx_ir", "onnxruntime",
    "onnxscript", "onnxsim", "onnxslim", "yaml", "jsonschema", "rich", "filelock", "fsspec",
    "s3fs", "ray", "polygraphy", "tensorrt", "tensorrt_rtx", "PIL", "google",
    "typing_extensions", "sympy", "mpmath", "networkx", "jinja2", "markupsafe", "ml_dtypes",
    "packaging", "setuptools", "pygments", "markdown_it", "referencing", "attrs",
})


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
    climbs out of the pipeline's folder, nor a file named like a module qntz needs: the
    import gets qntz's one, see `protected_names`)."""
    if not module or any(not part.isidentifier() for part in module.split(".")):
        return None
    if hidden_by(module.split(".")[0]) is not None:
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


# --- names a local file must not take ------------------------------------------------------

def hidden_by(top: str, names: Collection[str] = OWN_IMPORTS) -> str | None:
    """What a module named `top` beside the pipeline would hide from qntz, or None: the
    standard library, qntz itself, or one of `names` (by default those qntz names itself)."""
    if top in sys.stdlib_module_names:
        return f"Python's own {top} module"
    if top == "qntz":
        return "qntz itself"
    if top in names or top in OWN_IMPORTS:
        return f"the {top} package qntz uses"
    return None


def check_not_hidden(module: str, root: Path, where: str,
                     names: Collection[str] = OWN_IMPORTS) -> None:
    """Refuse a factory whose module is a file or folder beside the pipeline named like a
    module qntz needs: importing it would replace that module for qntz as well."""
    top = module.split(".")[0]
    what = hidden_by(top, names)
    if what is None:
        return
    for local in (root / f"{top}.py", root / top):
        if local.exists():
            raise PipelineError(
                f"module '{module}' is {local.name} beside the pipeline, which hides {what}",
                where=where, hint=f"rename {local.name}, which hides {what}, and the "
                "`module:attr` that names it")


@cache
def protected_names() -> frozenset[str]:
    """Top-level names the pipeline's folder never serves: the standard library's, qntz's own,
    and the packages of every distribution qntz requires, followed through their own
    requirements (not their extras). Reads installed metadata once (a fraction of a second,
    paid only when a factory is imported, beside torch's import)."""
    from importlib import metadata

    packages: dict[str, set[str]] = {}
    for top, dists in _owners().items():
        for dist in dists:
            packages.setdefault(_normal(dist), set()).add(top)
    names = set(sys.stdlib_module_names) | OWN_IMPORTS
    seen: set[str] = set()
    pending = ["qntz"]
    while pending:
        dist_name = pending.pop()
        if dist_name in seen:
            continue
        seen.add(dist_name)
        names |= packages.get(dist_name, set())
        try:
            requires = metadata.distribution(dist_name).requires or []
        except metadata.PackageNotFoundError:
            continue
        pending += [_normal(req) for req in requires if _needed_at_run_time(req, dist_name)]
    return frozenset(name for name in names if name.isidentifier())


def _normal(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    return re.sub(r"[-_.]+", "-", name.group(0)).lower() if name else ""


def _needed_at_run_time(requirement: str, owner: str) -> bool:
    """A requirement without an extra; for qntz, its extras too (they are what its optional
    steps import) but not its test tools."""
    marker = requirement.partition(";")[2]
    if "extra" not in marker:
        return True
    return owner == "qntz" and not re.search(r"extra\s*==\s*['\"]test['\"]", marker)


class _PipelineFolder:
    """Serves top-level modules from the pipeline's folder first, as `sys.path[0]` would,
    except the names in `protected`: for those the search goes on as if the folder were not
    there, so a `json.py` beside the pipeline cannot replace the `json` qntz imports (in
    `sys.modules`, for the whole process) nor one that torch imports while the factory loads.
    Submodules need no help: their package's `__path__` finds them."""

    def __init__(self, root: Path, protected: frozenset[str]) -> None:
        self.root = str(root)
        self.protected = protected
        # `python -m qntz` run from the pipeline's folder puts it on sys.path itself
        self.elsewhere = [p for p in sys.path if Path(p or ".").resolve() != root.resolve()]

    def find_spec(self, name: str, path: Sequence[str] | None = None,
                  target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if path is not None:
            return None
        if name in self.protected:
            return importlib.machinery.PathFinder.find_spec(name, self.elsewhere)
        spec = importlib.machinery.PathFinder.find_spec(name, [self.root])
        if spec is not None and spec.origin is None:  # a folder without __init__.py
            return self._namespace(name, spec)
        return spec

    def _namespace(self, name: str, spec: importlib.machinery.ModuleSpec
                   ) -> importlib.machinery.ModuleSpec | None:
        """A namespace portion ranks below a regular module elsewhere and joins other portions,
        as on sys.path; its path is a plain list, which later edits of sys.path leave alone."""
        other = importlib.machinery.PathFinder.find_spec(name, self.elsewhere)
        if other is not None and other.origin is not None:
            return None
        elsewhere = list(other.submodule_search_locations or []) if other else []
        spec.submodule_search_locations = [*(spec.submodule_search_locations or []),
                                           *elsewhere]
        return spec


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
    protected = protected_names()
    check_not_hidden(module_name, root, where, protected)
    if local_module_file(module_name, root) is not None:
        top = module_name.split(".")[0]
        stale = {name for name in local_closure(module_name, root)
                 if name.split(".")[0] not in protected}
        for name in list(sys.modules):
            if name in stale or name == top or name.startswith(top + "."):
                del sys.modules[name]
    importlib.invalidate_caches()
    finder = _PipelineFolder(root, protected)
    # After the built-in and frozen importers (a `sys.py` can never matter), before the path.
    index = next((i for i, f in enumerate(sys.meta_path)
                  if f is importlib.machinery.PathFinder), 0)
    sys.meta_path.insert(index, finder)
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise PipelineError(f"cannot import model module '{module_name}': {first_line(exc)}",
                            where=where, hint=_import_hint(module_name, root, protected)
                            ) from exc
    finally:
        sys.meta_path.remove(finder)


def _import_hint(module_name: str, root: Path, protected: frozenset[str]) -> str:
    """Point at a file beside the pipeline that the factory's imports did not get because it
    is named like a module qntz needs; else the usual advice."""
    paths = local_closure(module_name, root) if local_module_file(module_name, root) else {}
    for name, path in paths.items():
        for top in sorted({imported.split(".")[0] for imported in _imports(path, name)}):
            local = local_module_file(top, root) if top in protected else None
            if local is not None:
                return (f"rename {local.name}, which hides {hidden_by(top, protected)}: "
                        f"`import {top}` gets that one, not the file")
    return "check `factory:` and that the module's imports exist"
