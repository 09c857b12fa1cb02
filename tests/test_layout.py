"""The package's shape: no import cycles, dependencies point down toward the core.

Every import counts: those inside functions (a lazy import is still a dependency) and
those under `if TYPE_CHECKING:` (a reader follows them as well).
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "qntz"
CORE = ("qntz.core", "qntz.runtime")
DOMAINS = ("qntz.capture", "qntz.preflight", "qntz.quantize", "qntz.tensorrt",
           "qntz.compare", "qntz.report")
TOP = ("qntz.api", "qntz.cli", "qntz.core.ray_executor", "qntz.__main__")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(tree: ast.AST) -> list[ast.AST]:
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


def imported_modules(node: ast.AST, modules: set[str]) -> set[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        assert isinstance(node, ast.ImportFrom)
        base = node.module or ""
        names = [base] + [f"{base}.{a.name}" for a in node.names]
    return {n for n in names if n in modules}


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        deps: set[str] = set()
        for node in imports(tree):
            deps |= imported_modules(node, set(paths))
        graph[name] = deps - {name, "qntz"}
    return graph


def in_any(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle graphlib finds, one edge of each removed before looking again."""
    graph = {node: set(deps) for node, deps in graph.items()}
    found: list[list[str]] = []
    while True:
        try:
            graphlib.TopologicalSorter(graph).prepare()
            return found
        except graphlib.CycleError as exc:
            cycle = exc.args[1]
            found.append(cycle)
            graph[cycle[1]].discard(cycle[0])


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_no_cycles_between_packages() -> None:
    def package(module: str) -> str:
        return module.rsplit(".", 1)[0] if module.count(".") > 1 else "qntz"

    packages: dict[str, set[str]] = {}
    for module, deps in import_graph().items():
        packages.setdefault(package(module), set()).update(
            package(d) for d in deps if package(d) != package(module))
    found = cycles(packages)
    assert not found, "packages import each other:\n" + "\n".join(" -> ".join(c) for c in found)


def test_core_names_no_domain_and_domains_stay_below_the_api() -> None:
    wrong = []
    for module, deps in import_graph().items():
        for dep in deps:
            if in_any(module, CORE) and (in_any(dep, DOMAINS) or in_any(dep, TOP)):
                wrong.append(f"{module} (core) imports {dep}")
            if in_any(module, DOMAINS) and in_any(dep, TOP):
                wrong.append(f"{module} (a domain) imports {dep}")
    assert not wrong, "\n".join(sorted(wrong))


def test_the_checker_sees_lazy_imports_and_cycles() -> None:
    tree = ast.parse("def f():\n    from qntz.core import runner\n"
                     "if TYPE_CHECKING:\n    from qntz.core import plan\n")
    seen = set().union(*(imported_modules(n, {"qntz.core.runner", "qntz.core.plan"})
                         for n in imports(tree)))
    assert seen == {"qntz.core.runner", "qntz.core.plan"}
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_cli_uses_only_the_api() -> None:
    allowed = {"qntz.api", "qntz.cli_inspect", "qntz.cli_shell", "qntz.core.errors",
               "qntz.core.wording", "qntz.core.progress"}  # errors: the API's; the rest shows
    graph = import_graph()
    used = graph["qntz.cli"] | graph["qntz.cli_inspect"]
    assert used <= allowed, f"the CLI goes around the API: {sorted(used - allowed)}"
