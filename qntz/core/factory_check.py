"""`validate` checks that each factory's module and attribute exist, by reading source,
never importing it (a model module imports torch, and importing runs the user's code)."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

from qntz.core.errors import PipelineError
from qntz.core.model_source import check_not_hidden


def check_factories(pipeline: object) -> None:
    """Every `module:attr` of the pipeline: the model factory and callable datasets."""
    for spec in pipeline.steps.values():  # type: ignore[attr-defined]
        if spec.kind == "load" and "factory" in spec.params:
            _check(spec.params["factory"], pipeline, (*spec.at, "factory"))
    for name, data in pipeline.data.items():  # type: ignore[attr-defined]
        if data.get("from") == "callable" and "function" in data:
            _check(data["function"], pipeline, ("data", name, "function"))


def _check(factory: str, pipeline: object, at: tuple) -> None:
    module, _, attr = factory.partition(":")
    where = pipeline.where(*at)  # type: ignore[attr-defined]
    check_not_hidden(module, pipeline.root, where)  # type: ignore[attr-defined]
    path = module_file(module, pipeline.root)  # type: ignore[attr-defined]
    if path is None:
        raise PipelineError(f"module '{module}' of `{factory}` not found next to the pipeline "
                            "file nor on the Python path", where=where,
                            hint="check the module path and the file name")
    names = defined_names(path)
    first = attr.split(".")[0]
    if names is not None and first not in names:
        from qntz.core.wording import did_you_mean

        raise PipelineError(f"'{first}' is not defined in {path.name}"
                            f"{did_you_mean(first, sorted(names))}", where=where,
                            hint=f"name a class or function of {path.name}")


def module_file(module: str, root: Path) -> Path | None:
    """The file of `a.b.c`: next to the pipeline first, then where Python would find it
    (locating the top-level package does not import it)."""
    parts = module.split(".")
    for base in [root, *_search_locations(parts[0])]:
        found = _file_under(base, parts)
        if found is not None:
            return found
    return None


def _search_locations(top: str) -> list[Path]:
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return []
    if spec is None:
        return []
    if spec.submodule_search_locations:
        return [Path(p).parent for p in spec.submodule_search_locations]
    return [Path(spec.origin).parent] if spec.origin and spec.has_location else []


def _file_under(base: Path, parts: list[str]) -> Path | None:
    target = base.joinpath(*parts)
    for candidate in (target.with_suffix(".py"), target / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def defined_names(path: Path) -> set[str] | None:
    """Top-level names a module defines, or None when it cannot be told by reading
    (a star import, a module-level `__getattr__`, or source that does not parse)."""
    try:
        tree = ast.parse(path.read_bytes())
    except (OSError, SyntaxError, ValueError):
        return None
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            if node.name == "__getattr__":
                return None
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if any(alias.name == "*" for alias in node.names):
                return None
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.If, ast.Try, ast.With)) and _defines_inside(node):
            return None
    return names


def _defines_inside(node: ast.AST) -> bool:
    """Definitions under `if`/`try` at the top level (e.g. optional imports): too dynamic to
    judge by reading, so the check steps aside."""
    return any(isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom,
                              ast.Assign)) for n in ast.walk(node))
