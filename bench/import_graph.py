"""The import structure of flows/ and tasks/: each module's rnnflow imports, module-level and lazy, and any cycles.

    .venv/bin/python bench/import_graph.py            # every module, then a package summary, then cycles
    .venv/bin/python bench/import_graph.py --package tasks.store   # only modules under one package

Read from the source with ast (nothing is imported). "top" imports run when the module loads; "lazy" ones
inside a function or class body run when that code does; "typing" ones under `if TYPE_CHECKING:` never run.
A cycle is a strongly connected set of modules over the top-level imports (what can fail at import time);
cycles that need a lazy import to close are listed apart. Importing a package's submodule also runs the
package's __init__, which is not counted as an edge (as import-linter and pydeps do not).
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("flows", "tasks")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def known_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest known module a dotted name starts with (tasks.store.files.write_json -> tasks.store.files)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> dict[str, set[str]]:
    """{"top": {...}, "lazy": {...}, "typing": {...}}: the rnnflow modules this one imports, by when they load."""
    found: dict[str, set[str]] = {"top": set(), "lazy": set(), "typing": set()}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def targets(node: ast.AST) -> list[str]:
        if isinstance(node, ast.Import):
            return [alias.name for alias in node.names]
        assert isinstance(node, ast.ImportFrom)
        base = node.module or ""
        if node.level:
            anchor = package.split(".")
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        return [f"{base}.{alias.name}" for alias in node.names] or [base]

    def walk(node: ast.AST, when: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for name in targets(child):
                    target = _resolve(name, modules)
                    if target and target != module:
                        found[when].add(target)
            elif isinstance(child, ast.If) and _is_type_checking(child):
                walk(child, "typing")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                walk(child, "lazy" if when == "top" else when)
            else:
                walk(child, when)

    walk(ast.parse(path.read_text(encoding="utf-8")), "top")
    found["lazy"] -= found["top"]
    found["typing"] -= found["top"] | found["lazy"]
    return found


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (or a module importing itself), Tarjan's way."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
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
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", help="only list modules under this package (cycles are still found over all)")
    args = parser.parse_args(argv)
    modules = known_modules()
    graph = {module: imports_of(module, path, modules) for module, path in modules.items()}
    shown = [m for m in sorted(graph) if not args.package or m == args.package or m.startswith(args.package + ".")]
    print(f"# rnnflow imports of {len(shown)} modules under {', '.join(PACKAGES)}/ (top: at load; lazy: in a body; typing: TYPE_CHECKING only)")
    for module in shown:
        print(module)
        for when in ("top", "lazy", "typing"):
            if graph[module][when]:
                print(f"  {when:6} {', '.join(sorted(graph[module][when]))}")
    def package_of(name: str) -> str:
        return name if modules[name].name == "__init__.py" else name.rpartition(".")[0]

    packages: dict[str, set[str]] = defaultdict(set)
    for module in graph:
        for target in graph[module]["top"] | graph[module]["lazy"]:
            if package_of(module) != package_of(target):
                packages[package_of(module)].add(target)
    print("\n# package -> the modules of other packages it imports (top or lazy)")
    for package in sorted(packages):
        if not args.package or package.startswith(args.package):
            print(f"{package} -> {', '.join(sorted(packages[package]))}")
    top = {m: graph[m]["top"] for m in graph}
    both = {m: graph[m]["top"] | graph[m]["lazy"] for m in graph}
    top_cycles, all_cycles = cycles(top), cycles(both)
    print(f"\n# cycles over top-level imports: {len(top_cycles)}")
    for component in top_cycles:
        print("  " + " <-> ".join(component))
    lazy_only = [c for c in all_cycles if c not in top_cycles]
    print(f"# cycles closed only by a lazy import: {len(lazy_only)}")
    for component in lazy_only:
        print("  " + " <-> ".join(component))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
