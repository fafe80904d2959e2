"""The limits that keep the code livable: no module in flows/ or tasks/ over 500 lines, no function over 80, no import cycle.

Read from the source with ast (nothing is imported), so the test takes well under a second. Every import counts,
module-level and inside functions alike (a cycle through a lazy import is still a cycle); only those under
`if TYPE_CHECKING:`, which never run (annotations), are left out.

`python -m tests.test_shape` prints the figures: the longest modules and functions, and every cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

from bench.import_graph import cycles, imports_of, known_modules

MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
# None left: flows/score.py's cmd_score and flows/cli.py share their exit codes, root check and Prefect start-up
# through flows/cli_common.py.
KNOWN_CYCLES: list[list[str]] = []


def module_files() -> dict[str, Path]:
    """Every module of flows/ and tasks/ by its dotted name (a package by its own name, for its __init__.py)."""
    return known_modules()


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


def import_graph() -> dict[str, set[str]]:
    """Each module's flows/tasks imports that run, at load or in a body (bench/import_graph.py reads them)."""
    modules = known_modules()
    return {name: (found["top"] | found["lazy"]) for name, path in modules.items() for found in [imports_of(name, path, modules)]}


def import_cycles(graph: dict[str, set[str]] | None = None) -> list[list[str]]:
    """The strongly connected components of more than one module: each holds at least one cycle."""
    return cycles(import_graph() if graph is None else graph)


def test_no_module_is_over_500_lines():
    over = {name: lines for name, lines in module_lines().items() if lines > MAX_MODULE_LINES}
    assert not over, f"modules over {MAX_MODULE_LINES} lines (move a coherent part to a module named for it): {over}"


def test_no_function_is_over_80_lines():
    over = {name: lines for name, lines in function_lines().items() if lines > MAX_FUNCTION_LINES}
    assert not over, f"functions over {MAX_FUNCTION_LINES} lines (split them): {over}"


def test_no_import_cycle_among_flows_and_tasks():
    cycles = [cycle for cycle in import_cycles() if cycle not in KNOWN_CYCLES]
    assert not cycles, f"modules that import each other, lazily or not (move what they share to a module both import): {cycles}"


def test_the_cycle_finder_sees_a_cycle_through_a_lazy_import(tmp_path: Path):
    source = tmp_path / "a.py"
    source.write_text("if TYPE_CHECKING:\n    from tasks.c import Kind\ndef later():\n    from tasks.b import thing\n")
    found = imports_of("tasks.a", source, {name: source for name in ("tasks.a", "tasks.b", "tasks.c")})
    assert found["top"] | found["lazy"] == {"tasks.b"} and found["typing"] == {"tasks.c"}
    assert import_cycles({"tasks.a": {"tasks.b"}, "tasks.b": {"tasks.c"}, "tasks.c": {"tasks.a"}, "tasks.d": {"tasks.a"}}) == [
        ["tasks.a", "tasks.b", "tasks.c"]
    ]


if __name__ == "__main__":
    lines = module_lines()
    print("longest modules:", ", ".join(f"{n} {c}" for n, c in sorted(lines.items(), key=lambda i: -i[1])[:6]))
    print("longest functions:", ", ".join(f"{n} {c}" for n, c in sorted(function_lines().items(), key=lambda i: -i[1])[:4]))
    print("import cycles:", import_cycles() or "none")
