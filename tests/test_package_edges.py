"""The package edges, read from the source with `ast` (nothing is imported or executed).

`data_pipelines` sits below `asrth_jax`: it never imports it, and no modules of the two
packages import each other in a cycle. `python tests/test_package_edges.py` prints the
graph's numbers (imports inside functions, cycles) for the closing notes.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("asrth_jax", "data_pipelines")


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the two packages."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _in_type_checking(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def _in_function(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return True
    return False


def imports_of(name: str, path: Path, modules: dict[str, Path], *,
               with_type_checking: bool = False) -> list[tuple[str, int, bool]]:
    """(imported module of the two packages, line, inside a function) for each import in
    `path`; `from pkg import mod` names the module, `from pkg.mod import x` the module
    too. Imports under `if TYPE_CHECKING:` never run: left out unless asked for."""
    tree = ast.parse(path.read_text(), str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules
                       else node.module for alias in node.names]
        else:
            continue
        if not with_type_checking and _in_type_checking(node, parents):
            continue
        for target in dict.fromkeys(targets):
            while target and target not in modules:  # `import a.b.c` -> the module it names
                target = target.rpartition(".")[0]
            if target and target != name:
                found.append((target, node.lineno, _in_function(node, parents)))
    return found


def import_graph(*, with_function_imports: bool = True, with_type_checking: bool = False
                 ) -> dict[str, set[str]]:
    modules = module_files()
    return {name: {target for target, _, inside in imports_of(
                       name, path, modules, with_type_checking=with_type_checking)
                   if with_function_imports or not inside}
            for name, path in modules.items()}


def package_graph() -> dict[str, set[str]]:
    """Top-level package -> the top-level packages its modules import."""
    graph: dict[str, set[str]] = {package: set() for package in PACKAGES}
    for name, targets in import_graph().items():
        top = name.split(".")[0]
        graph[top] |= {target.split(".")[0] for target in targets} - {top}
    return graph


def function_imports() -> list[tuple[str, int, str]]:
    """(module, line, statement) of every import statement inside a function (any module,
    the standard library and third-party ones too)."""
    found = []
    for name, path in module_files().items():
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines), str(path))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and _in_function(node, parents):
                found.append((name, node.lineno, lines[node.lineno - 1].strip()))
    return sorted(found)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted:
    every import cycle lies inside one of them."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def test_cycles_finds_a_cycle_and_only_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_data_pipelines_never_imports_asrth_jax():
    modules = module_files()
    upward = [f"{name}:{line} imports {target}"
              for name, path in modules.items() if name.split(".")[0] == "data_pipelines"
              for target, line, _ in imports_of(name, path, modules)
              if target.split(".")[0] == "asrth_jax"]
    assert not upward, upward


def test_no_import_cycles_among_the_modules_or_the_packages():
    """Counting imports inside functions too: a cycle there is a cycle of dependencies."""
    assert cycles(import_graph()) == []
    assert cycles(package_graph()) == []


def test_the_training_loop_does_not_import_the_benchmark_cli():
    graph = import_graph()
    assert "asrth_jax.benchmark" not in graph["asrth_jax.memory_fit"]


def report() -> str:
    inside = function_imports()
    per_module: dict[str, int] = {}
    for name, _, _ in inside:
        per_module[name] = per_module.get(name, 0) + 1
    lines = [f"modules: {len(module_files())}",
             f"import statements inside functions: {len(inside)}"]
    lines += [f"  {name}: {count}" for name, count in sorted(per_module.items())]
    for label, graph in (("modules, all imports run", import_graph()),
                         ("modules, module-level imports",
                          import_graph(with_function_imports=False)),
                         ("modules, also TYPE_CHECKING imports",
                          import_graph(with_type_checking=True)),
                         ("top-level packages", package_graph())):
        found = cycles(graph)
        lines.append(f"cycles ({label}): {len(found)} strongly connected groups")
        lines += [f"  {' <-> '.join(group)}" for group in found]
    upward = sorted({f"{name} -> {target}" for name, targets in import_graph().items()
                     if name.startswith("data_pipelines") for target in targets
                     if target.startswith("asrth_jax")})
    lines.append(f"data_pipelines -> asrth_jax edges: {len(upward)}")
    lines += [f"  {edge}" for edge in upward]
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
    if "--list" in sys.argv:
        print("\n".join(f"{name}:{line}: {text}" for name, line, text in function_imports()))
