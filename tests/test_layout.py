"""The package's layout: no module imports, directly or through others, a module that imports it back.

Every `import lanterne.x` and `from lanterne.x import y` counts, relative ones too, wherever it stands:
at the top of a module, inside a function (a lazy import still ties the two modules together) or under
`if TYPE_CHECKING:`. `from lanterne.x import y` is an edge to the module `lanterne.x.y` when y is one,
else to `lanterne.x` (a package's `__init__.py` when x is a package: the names it re-exports). The
packages above a module are not edges: Python runs their `__init__.py` before the module whatever
the module imports, as its parents, not as its dependencies.
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src"

# Circles inside folders another change is rewriting at the moment (generation/, server/): listed so that
# this test guards every other module today. Each entry is the exact set of modules of one circle; delete
# it once its circle is gone (the test says so).
KNOWN_CIRCLES: set[frozenset] = set()


def module_files(source: Path, package: str) -> dict[str, tuple[Path, bool]]:
    """Every module under source/package by dotted name: (its file, whether it is a package's __init__.py)."""
    modules = {}
    for path in sorted((source / package).rglob("*.py")):
        parts = list(path.relative_to(source).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return modules


def import_graph(source: Path = SOURCE, package: str = "lanterne") -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports, from every import statement in its file."""
    modules = module_files(source, package)

    def owner(name: str) -> str | None:
        # 'lanterne.x.y' is module lanterne.x.y if there is one, else a name defined in lanterne.x.
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, (path, is_package) in modules.items():
        parent = module if is_package else module.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                targets.update(owner(alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # from . import x, from ..model import y
                    base = parent.split(".")[: len(parent.split(".")) - (node.level - 1)]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = node.module
                for alias in node.names:
                    submodule = f"{origin}.{alias.name}"
                    targets.add(submodule if submodule in modules else owner(origin))
        graph[module] = {target for target in targets if target is not None and target != module}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(module: str) -> None:
        index[module] = lowest[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                lowest[module] = min(lowest[module], lowest[target])
            elif target in on_stack:
                lowest[module] = min(lowest[module], index[target])
        if lowest[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def one_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest path a -> b -> ... -> a inside one component: the imports to show in a failure."""
    members = set(component)
    start = component[0]
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        module = queue.popleft()
        for target in sorted(graph[module] & members):
            if target == start:
                path = [module]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return path[::-1] + [start]
            if target not in previous:
                previous[target] = module
                queue.append(target)
    raise AssertionError(f"{component} is not a strongly connected component")


def test_the_graph_sees_every_kind_of_import(tmp_path):
    files = {
        "pkg/__init__.py": "from pkg.sub import exported\n",
        "pkg/sub/__init__.py": "from pkg.sub.deep import exported\n",
        "pkg/sub/deep.py": "exported = 1\n",
        "pkg/top.py": "import os\nimport pkg.sub.deep\n",
        "pkg/lazy.py": "def later():\n    from pkg import top\n",
        "pkg/typed.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.lazy import later\n",
        "pkg/sub/relative.py": "from . import deep\nfrom .. import typed\nfrom ..sub import exported\n",
        "pkg/star.py": "from pkg.sub import *\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert import_graph(tmp_path, "pkg") == {
        "pkg": {"pkg.sub"},  # a name the package re-exports: an edge to its __init__.py
        "pkg.sub": {"pkg.sub.deep"},
        "pkg.sub.deep": set(),
        "pkg.top": {"pkg.sub.deep"},  # `import a.b.c`: the module, not its parents
        "pkg.lazy": {"pkg.top"},  # inside a function; `from pkg import top`: the module top
        "pkg.typed": {"pkg.lazy"},  # under TYPE_CHECKING
        "pkg.sub.relative": {"pkg.sub.deep", "pkg.typed", "pkg.sub"},
        "pkg.star": {"pkg.sub"},
    }


def test_circles_are_found_and_shown():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"f"}, "f": {"e"}}
    assert circles(graph) == [["a", "b", "c"], ["e", "f"]]
    assert one_cycle(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_closes_a_circle():
    graph = import_graph()
    found = circles(graph)
    new = [component for component in found if frozenset(component) not in KNOWN_CIRCLES]
    assert not new, "imports that close a circle:\n" + "\n".join(" -> ".join(one_cycle(graph, component)) for component in new)
    gone = KNOWN_CIRCLES - {frozenset(component) for component in found}
    assert not gone, f"these circles are gone; delete them from KNOWN_CIRCLES: {[sorted(circle) for circle in gone]}"


def test_neither_the_model_nor_a_format_imports_the_loader():
    """The loader (`checkpoints`) picks a format and builds the model; neither imports it back."""
    graph = import_graph()
    assert "lanterne.model.transformer" in graph["lanterne.checkpoints"]  # the loader is seen building the model
    for module, targets in graph.items():
        if module.startswith(("lanterne.interop", "lanterne.model")):
            assert "lanterne.checkpoints" not in targets, f"{module} imports the loader"
        if module.startswith("lanterne.model"):
            assert not any(target.startswith("lanterne.interop") for target in targets), f"{module} imports a format"
