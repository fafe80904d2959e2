"""The limits that keep the code livable: no module in flows/ or tasks/ over 500 lines, no function over 80, no import cycle.

Read from the source with ast (nothing is imported), so the test takes well under a second. Every import counts,
module-level and inside functions alike (a cycle through a lazy import is still a cycle); only those under
`if TYPE_CHECKING:`, which never run (annotations), are left out.

`python -m tests.test_shape` prints the figures: the longest modules and functions, and every cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("flows", "tasks")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
# None left: flows/score.py's cmd_score and flows/cli.py share their exit codes, root check and Prefect start-up
# through flows/cli_common.py.
KNOWN_CYCLES: list[list[str]] = []


def module_files() -> dict[str, Path]:
    """Every module of flows/ and tasks/ by its dotted name (a package by its own name, for its __init__.py)."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def module_lines() -> dict[str, int]:
    return {name: len(path.read_text().splitlines()) for name, path in module_files().items()}


def function_lines() -> dict[str, int]:
    """Each function's (and method's) length in lines, end_lineno - lineno + 1, by 'module:qualified.name:line'."""
    lengths = {}
    for name, path in module_files().items():
        tree = ast.parse(path.read_text(), filename=str(path))

        def visit(node: ast.AST, prefix: str) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lengths[f"{name}:{prefix}{child.name}:{child.lineno}"] = child.end_lineno - child.lineno + 1
                    visit(child, f"{prefix}{child.name}.")
                elif isinstance(child, ast.ClassDef):
                    visit(child, f"{prefix}{child.name}.")
                else:
                    visit(child, prefix)

        visit(tree, "")
    return lengths


def _imported(node: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The flows/tasks modules one import statement loads (a name imported from a package may be its submodule)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in known}
    if not isinstance(node, ast.ImportFrom):
        return set()
    if node.level:  # relative: from the module's package, up level - 1 more
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join([*base, node.module] if node.module else base)
    else:
        source = node.module or ""
    found = {source} if source in known else set()
    found |= {f"{source}.{alias.name}" for alias in node.names if f"{source}.{alias.name}" in known}
    return found


def _type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (getattr(test, "id", None) == "TYPE_CHECKING" or getattr(test, "attr", None) == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every import statement of a module, at any depth, save those inside `if TYPE_CHECKING:`."""
    found, pending = [], [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif not _type_checking(node):
            pending.extend(ast.iter_child_nodes(node))
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the flows/tasks modules it imports anywhere in its source (TYPE_CHECKING blocks aside)."""
    files = module_files()
    known = set(files)
    graph = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        graph[name] = set().union(*(_imported(node, name, is_package, known) for node in _import_nodes(tree))) - {name}
    return graph


def import_cycles(graph: dict[str, set[str]] | None = None) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm): each holds at least one cycle."""
    graph = import_graph() if graph is None else graph
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return sorted(components)


def test_no_module_is_over_500_lines():
    over = {name: lines for name, lines in module_lines().items() if lines > MAX_MODULE_LINES}
    assert not over, f"modules over {MAX_MODULE_LINES} lines (move a coherent part to a module named for it): {over}"


def test_no_function_is_over_80_lines():
    over = {name: lines for name, lines in function_lines().items() if lines > MAX_FUNCTION_LINES}
    assert not over, f"functions over {MAX_FUNCTION_LINES} lines (split them): {over}"


def test_no_import_cycle_among_flows_and_tasks():
    cycles = [cycle for cycle in import_cycles() if cycle not in KNOWN_CYCLES]
    assert not cycles, f"modules that import each other, lazily or not (move what they share to a module both import): {cycles}"


def test_the_cycle_finder_sees_a_cycle_through_a_lazy_import():
    source = "if TYPE_CHECKING:\n    from tasks.c import Kind\ndef later():\n    from tasks.b import thing\n"
    nodes = _import_nodes(ast.parse(source))
    assert set().union(*(_imported(n, "tasks.a", False, {"tasks.a", "tasks.b", "tasks.c"}) for n in nodes)) == {"tasks.b"}
    assert import_cycles({"tasks.a": {"tasks.b"}, "tasks.b": {"tasks.c"}, "tasks.c": {"tasks.a"}, "tasks.d": {"tasks.a"}}) == [
        ["tasks.a", "tasks.b", "tasks.c"]
    ]


if __name__ == "__main__":
    lines = module_lines()
    print("longest modules:", ", ".join(f"{n} {c}" for n, c in sorted(lines.items(), key=lambda i: -i[1])[:6]))
    print("longest functions:", ", ".join(f"{n} {c}" for n, c in sorted(function_lines().items(), key=lambda i: -i[1])[:4]))
    print("import cycles:", import_cycles() or "none")
