"""The import structure of ``sfda``, read from the source with ``ast`` (nothing is imported): no cycle
between modules, no sfda import inside a function, and every import pointing down the layer order.

Layers, highest first (a module imports modules of its own layer or a lower one only):
    the command (cli, commands, __main__, catalogue, cli_errors, the package's __init__)
    > sweep, report, export, recipe_files > methods > tasks
    > pseudo_labels, losses, metrics, models, active > data > run (the leaf, importable by all)
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SFDA = Path(__file__).resolve().parents[1] / "sfda"

LAYERS = (  # highest first; a module's layer is that of its longest matching prefix
    ("sfda", "sfda.cli", "sfda.commands", "sfda.__main__", "sfda.catalogue", "sfda.cli_errors"),
    # recipe_files is read by the sweep too (its trials' recipes), so it sits with it, under the command
    ("sfda.sweep", "sfda.report", "sfda.export", "sfda.recipe_files"),
    ("sfda.methods",),
    ("sfda.tasks",),
    ("sfda.pseudo_labels", "sfda.losses", "sfda.metrics", "sfda.models", "sfda.active"),
    ("sfda.data",),
    ("sfda.run",),
)

# No exemptions: every violation fails.
ALLOWED: set[tuple[str, str, str]] = set()


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    in_function: bool


def module_sources(root: Path = SFDA) -> dict[str, str]:
    """``{dotted module name: source}`` of every module under ``root`` (a package's is its ``__init__``)."""
    sources = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        sources[name] = path.read_text(encoding="utf-8")
    return sources


def packages_of(sources: dict[str, str]) -> set[str]:
    """The names in ``sources`` that are packages (some other name lies under them)."""
    return {name for name in sources if any(other.startswith(name + ".") for other in sources)}


def _known(name: str, sources: dict[str, str]) -> str | None:
    """``name``, or the nearest enclosing module in ``sources`` (``sfda.x.CONSTANT`` -> ``sfda.x``)."""
    while name and name not in sources:
        name = name.rpartition(".")[0]
    return name or None


def imports_in(module: str, sources: dict[str, str], packages: set[str], top: str = "sfda") -> list[Import]:
    """The imports of ``top``'s modules in ``module``'s source: relative ones resolved, ``from pkg import
    sub`` counted as the submodule, and whether each sits inside a function or method body."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            targets: list[str] = []
            if isinstance(child, ast.Import):
                targets = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = module if module in packages else module.rpartition(".")[0]
                    for _ in range(child.level - 1):
                        base = base.rpartition(".")[0]
                    target = f"{base}.{child.module}" if child.module else base
                else:
                    target = child.module or ""
                targets = [f"{target}.{alias.name}" if f"{target}.{alias.name}" in sources else target
                           for alias in child.names]
            for target in targets:
                if target == top or target.startswith(top + "."):
                    resolved = _known(target, sources)
                    if resolved is not None and resolved != module:
                        found.append(Import(module, resolved, child.lineno, inside))
            visit(child, inside)

    visit(ast.parse(sources[module]), False)
    return found


def import_graph(sources: dict[str, str]) -> dict[str, list[Import]]:
    packages = packages_of(sources)
    return {module: imports_in(module, sources, packages) for module in sources}


def cycles(graph: dict[str, list[Import]]) -> list[list[str]]:
    """One cycle ``[a, b, ..., a]`` per strongly connected group of modules (Tarjan), imports inside
    functions included (they run, later)."""
    edges = {m: sorted({i.imported for i in imports if i.imported in graph}) for m, imports in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in edges[node]:
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return [_cycle_through(sorted(group)[0], set(group), edges) for group in groups]


def _cycle_through(start: str, group: set[str], edges: dict[str, list[str]]) -> list[str]:
    """A shortest path ``start -> ... -> start`` inside ``group`` (breadth first)."""
    previous = {start: None}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for other in edges[node]:
            if other == start:
                path = [node]
                while previous[path[-1]] is not None:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if other in group and other not in previous:
                previous[other] = node
                queue.append(other)
    return [start]


def layer(module: str) -> int | None:
    """The layer of ``module``: 0 for the command, higher numbers lower down; None when it has none."""
    best = None
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or (prefix != "sfda" and module.startswith(prefix + "."))
            if matches and (best is None or len(prefix) > len(best[1])):
                best = (rank, prefix)
    return best[0] if best else None


def violations(graph: dict[str, list[Import]]) -> list[tuple[str, str, str, int]]:
    """``(importer, imported, why, line)`` for every import inside a function and every one up the layers."""
    found = []
    for imports in graph.values():
        for i in imports:
            if i.in_function:
                found.append((i.importer, i.imported, "in a function", i.line))
            low, high = layer(i.importer), layer(i.imported)
            if low is not None and high is not None and high < low:
                found.append((i.importer, i.imported, "layer", i.line))
    return list(dict.fromkeys(found))  # one per line, for ``from x import a, b``


@pytest.fixture(scope="module")
def graph():
    return import_graph(module_sources())


def test_every_module_has_a_layer(graph):
    assert [m for m in graph if layer(m) is None] == [], "add the module's package to LAYERS"


def test_no_import_cycles(graph):
    found = cycles(graph)
    assert found == [], "import cycles: " + "; ".join(" -> ".join(c) for c in found)


def test_no_sfda_import_inside_a_function_nor_up_the_layers(graph):
    found = [v for v in violations(graph) if v[:3] not in ALLOWED]
    shown = "\n".join(f"  {importer} (line {line}) imports {imported}: {why}"
                      for importer, imported, why, line in found)
    assert found == [], f"imports against the structure (see the module docstring):\n{shown}"


def test_run_is_a_leaf(graph):
    outside = [(i.importer, i.imported) for m, imports in graph.items() if m.startswith("sfda.run")
               for i in imports if not i.imported.startswith("sfda.run")]
    assert outside == []


FAKE = {
    "sfda": "",
    "sfda.run": "",
    "sfda.run.folder": "import os\n",
    "sfda.data": "from . import fetch\n",
    "sfda.data.fetch": "from ..run.folder import own_run_dir\n",
    "sfda.data.datasets": "from .fetch import resolve\n",
    "sfda.metrics": "",
    "sfda.metrics.validators": "def f():\n    from ..data import datasets\n",
    "sfda.cli": "import sfda.metrics.validators\nfrom sfda.data.fetch import resolve\n",
}


def test_graph_resolves_relative_absolute_and_package_imports():
    graph = import_graph(FAKE)
    assert [i.imported for i in graph["sfda.data"]] == ["sfda.data.fetch"]
    assert [i.imported for i in graph["sfda.data.fetch"]] == ["sfda.run.folder"]
    assert [i.imported for i in graph["sfda.cli"]] == ["sfda.metrics.validators", "sfda.data.fetch"]
    inner = graph["sfda.metrics.validators"]
    assert [(i.imported, i.in_function) for i in inner] == [("sfda.data.datasets", True)]
    assert cycles(graph) == []
    assert violations(graph) == [("sfda.metrics.validators", "sfda.data.datasets", "in a function", 2)]


def test_a_planted_cycle_and_an_upward_import_are_found():
    planted = {**FAKE, "sfda.run.folder": "from ..data.datasets import X\n"}
    found = cycles(import_graph(planted))
    assert found == [["sfda.data.datasets", "sfda.data.fetch", "sfda.run.folder", "sfda.data.datasets"]]
    assert ("sfda.run.folder", "sfda.data.datasets", "layer", 1) in violations(import_graph(planted))
    two = {"sfda": "", "sfda.a": "from . import b\n", "sfda.b": "from .a import x\n"}
    assert cycles(import_graph(two)) == [["sfda.a", "sfda.b", "sfda.a"]]
