"""Structure figures of a checkout: import cycles between dlproxy modules and lines per module.

    python benchmarks/structure.py [REPO]   (default: this checkout)

Cycles are the strongly connected components (more than one module) of grimp's import graph of
``dlproxy`` as found under ``REPO/src``.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import grimp


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])
    sys.path.insert(0, str(root / "src"))
    graph = grimp.build_graph("dlproxy")
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    sys.setrecursionlimit(10_000)

    def visit(node: str) -> None:  # Tarjan
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in edges[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    files = sorted((root / "src" / "dlproxy").rglob("*.py"))
    lines = {f: sum(1 for _ in f.open()) for f in files}
    largest = max(lines, key=lines.__getitem__)
    print(f"import cycles: {len(cycles)} {cycles}")
    print(
        f"modules: {len(files)}, lines median {statistics.median(lines.values())}, "
        f"max {lines[largest]} ({largest.relative_to(root)})"
    )


if __name__ == "__main__":
    main()
