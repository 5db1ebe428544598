"""Import cycles among the project's modules, read from the source (nothing is imported).

    python scripts/import_cycles.py          # cycles of the module-level imports
    python scripts/import_cycles.py --all    # imports inside functions count too

Prints each cycle (a set of modules that import each other, directly or
through one another) with the imports that close it; exits 1 when there is
one. ``tests/test_imports.py`` checks that the module-level imports have none and
that the imports inside functions close only the registries' cycles: a config
checking its choices against the registries of anchors and estimators, and
``make_backend`` loading the backends that register themselves.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGES = ("storage", "pipeline", "trainer")
ROOT = Path(__file__).resolve().parent.parent


def modules(root: Path) -> dict[str, Path]:
    """Every module of the project's packages (dotted name -> file)."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _targets(node, package: str, known) -> list[str]:
    """The project modules an import statement imports (``from p import m`` is module ``p.m`` when there is one)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            parts = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join(parts + ([base] if base else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    out = []
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name:
            out.append(name)
    return out


def imports(mods: dict[str, Path], lazy: bool) -> dict[str, set[str]]:
    """Module -> the project modules it imports (at module level; with ``lazy`` inside functions too)."""
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]

        def visit(node, inside: bool) -> None:
            for child in ast.iter_child_nodes(node):
                nested = inside or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
                if isinstance(child, (ast.Import, ast.ImportFrom)) and (lazy or not nested):
                    graph[mod].update(t for t in _targets(child, package, mods) if t != mod)
                visit(child, nested)

        visit(ast.parse(path.read_text()), False)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    graph = imports(modules(ROOT), lazy="--all" in argv)
    found = cycles(graph)
    for comp in found:
        print(" <-> ".join(comp))
        for m in comp:
            print(f"    {m} -> {', '.join(sorted(graph[m] & set(comp)))}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
