"""The package's shape (issue 24): no source file over 400 lines, and no import cycle between advkit's modules.

The import graph is read from the source (``ast``), not from a running interpreter, so an import cycle is found
even when the import order of the test session happens to hide it. An edge ``a -> b`` means that importing ``a``
runs ``import b`` / ``from b import ...`` at module level: at the top of the file, in a class body, or under a
module-level ``if`` / ``try`` / ``with``, but not inside a function and not under ``if TYPE_CHECKING:``. Absolute
(``advkit.x``) and relative (``from .x import y``) imports count; ``from package import name`` is an edge to the
submodule ``package.name`` when there is one, else to ``package`` (its ``__init__``). A package's ``__init__``
importing its own submodules is an ordinary edge. The parent packages Python initialises on the way to a module
are not edges of their own (every submodule would otherwise close a circle with its package's ``__init__``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_LINES = 400


def module_name(path: Path, src: Path = SRC) -> str:
    """``src/advkit/a/b.py`` -> ``advkit.a.b``; ``src/advkit/a/__init__.py`` -> ``advkit.a``."""
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files(src: Path = SRC) -> list[Path]:
    return sorted((src / "advkit").rglob("*.py"))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def module_level_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run when the module is imported (see the module docstring)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from module_level_imports(node.body)
            yield from module_level_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for part in (node.body, *(h.body for h in node.handlers), node.orelse, node.finalbody):
                yield from module_level_imports(part)
        elif isinstance(node, (ast.With, ast.ClassDef)):
            yield from module_level_imports(node.body)


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """``{module: {advkit modules it imports at module level}}`` over every file under ``src/advkit``."""
    files = {module_name(p, src): p for p in source_files(src)}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in module_level_imports(ast.parse(path.read_text(), str(path)).body):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - (node.level - 1)]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                targets = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in files else origin for a in node.names]
            graph[mod].update(t for t in targets if t in files and t != mod)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) for every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_within(graph, set(comp)) for comp in components]


def _cycle_within(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """A shortest cycle through the first module of a strongly connected component (breadth-first)."""
    start = min(comp)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & comp):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in its component")  # unreachable for a real component


def test_no_source_file_is_longer_than_400_lines():
    long = {str(p.relative_to(SRC.parent)): n for p in source_files()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines (split them by concern): {long}"


def test_no_import_cycle_between_advkit_modules():
    graph = import_graph()
    assert len(graph) > 50 and graph["advkit.evaluate.stats"] >= {"advkit.evaluate.metrics"}
    cycles = find_cycles(graph)
    assert not cycles, "import cycles between advkit modules (module-level imports):\n" + \
        "\n".join(" -> ".join(c) for c in cycles)


# --- the graph reader itself, on small made-up packages --------------------------------------------------------


@pytest.fixture
def fake_package(tmp_path: Path):
    def make(files: dict[str, str]) -> dict[str, set[str]]:
        for rel, text in files.items():
            p = tmp_path / "advkit" / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        return import_graph(tmp_path)

    return make


def test_the_reader_sees_relative_and_package_imports_and_skips_functions_and_type_checking(fake_package):
    graph = fake_package({
        "__init__.py": "",
        "a/__init__.py": "from advkit.a import b\nfrom .c import thing\n",
        "a/b.py": "from . import c\nif TYPE_CHECKING:\n    from advkit.d import X\n"
                  "def f():\n    import advkit.d\n",
        "a/c.py": "try:\n    from ..d import y\nexcept ImportError:\n    pass\nthing = 1\n",
        "d.py": "import advkit.a.b\nimport os\n",
    })
    assert graph == {"advkit": set(), "advkit.a": {"advkit.a.b", "advkit.a.c"}, "advkit.a.b": {"advkit.a.c"},
                     "advkit.a.c": {"advkit.d"}, "advkit.d": {"advkit.a.b"}}
    assert find_cycles(graph) == [["advkit.a.b", "advkit.a.c", "advkit.d", "advkit.a.b"]]


def test_a_submodule_importing_its_package_init_is_a_cycle(fake_package):
    graph = fake_package({"__init__.py": "", "p/__init__.py": "from .m import f\n",
                          "p/m.py": "from advkit.p import g\n"})
    assert find_cycles(graph) == [["advkit.p", "advkit.p.m", "advkit.p"]]
