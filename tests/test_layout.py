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
               "qntz.core.wording", "qntz.cli_progress", "qntz.core.process"}
    # errors: the API's; wording and progress: what it shows; process: its stdout
    graph = import_graph()
    used = graph["qntz.cli"] | graph["qntz.cli_inspect"]
    assert used <= allowed, f"the CLI goes around the API: {sorted(used - allowed)}"


PROCESS_STATE = "qntz.core.process"
STREAMS = {"sys.stdout", "sys.stderr", "tempfile.tempdir", "os.environ"}
ENVIRON_CHANGES = {"setdefault", "pop", "update", "clear", "popitem", "__setitem__",
                   "__delitem__"}


def dotted(node: ast.AST) -> str:
    """`a.b.c` for a chain of names and attributes; "" for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and (base := dotted(node.value)):
        return f"{base}.{node.attr}"
    return ""


def process_state_changes(tree: ast.AST) -> list[tuple[int, str]]:
    """Each place that changes process-wide state: assigns os.environ[...], sys.stdout,
    sys.stderr or tempfile.tempdir, changes os.environ through a method, calls os.putenv,
    os.dup2, setattr(sys, ...), a logger's setLevel, or seeds torch's global RNG."""
    found = []
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else \
            node.targets if isinstance(node, ast.Delete) else []
        for target in targets:
            name = dotted(target.value if isinstance(target, ast.Subscript) else target)
            if name in STREAMS:
                found.append((node.lineno, f"assigns {name}"))
        if not isinstance(node, ast.Call):
            continue
        called = dotted(node.func)
        method = node.func.attr if isinstance(node.func, ast.Attribute) else ""
        if (called.startswith("os.environ.") and method in ENVIRON_CHANGES) or called in (
                "os.putenv", "os.unsetenv", "os.dup2") or method == "setLevel" or (
                called == "setattr" and node.args and dotted(node.args[0]) == "sys") or (
                method in ("manual_seed", "seed", "set_num_threads", "set_num_interop_threads")
                and called.startswith("torch.")):
            found.append((node.lineno, f"calls {called}"))
    return found


def test_only_the_process_module_changes_process_wide_state() -> None:
    changes = {}
    for path in PACKAGE.rglob("*.py"):
        if module_name(path) != PROCESS_STATE:
            if found := process_state_changes(ast.parse(path.read_text())):
                changes[module_name(path)] = found
    assert changes == {}, ("move these into qntz/core/process.py, scoped and restored: "
                           f"{changes}")


def test_the_process_state_checker_sees_each_kind_of_change() -> None:
    cases = ['os.environ["A"] = "1"', 'os.environ.setdefault("A", "1")', "del os.environ['A']",
             "os.environ.pop('A')", "sys.stdout = io.StringIO()", "tempfile.tempdir = '/x'",
             "setattr(sys, 'stderr', None)", "os.dup2(3, 1)", "torch.manual_seed(0)",
             "torch.cuda.manual_seed(0)", "logging.getLogger('x').setLevel(40)",
             "torch.set_num_threads(1)",
             "os.putenv('A', '1')"]
    for case in cases:
        assert process_state_changes(ast.parse(case)), case
    for fine in ["torch.Generator().manual_seed(0)", "value = os.environ.get('A')",
                 "out = sys.stdout", "np.random.default_rng(0)"]:
        assert process_state_changes(ast.parse(fine)) == [], fine
