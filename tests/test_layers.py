"""The package layout shows the architecture: each layer imports only from the layers before it, and no module
imports itself back through a chain of others (every ``advkit`` import counts, deferred ones inside functions too).

Read from the source with :mod:`ast`; nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "advkit"
LAYERS = ("_files", "progress", "data", "models", "defences", "backprop", "attacks", "train", "evaluate", "study",
          "analysis", "report", "humans", "reproduce", "cli")
MAX_LINES = 400  # no source file longer (issue 24): a module a reader holds in view


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, name: str) -> set[str]:
    """The ``advkit`` modules ``path`` imports (``from advkit.x import y`` counts ``advkit.x.y`` when that is a
    module, else ``advkit.x``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "advkit")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "advkit":
                continue
            for a in node.names:
                out.add(f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod)
    return {m for m in out if m != name}


MODULES = {_module_name(p): p for p in SRC.rglob("*.py")}
GRAPH = {name: _imports(path, name) for name, path in MODULES.items()}


def _layer(module: str) -> int | None:
    """The layer index of ``advkit.X...``; ``None`` for the root package (it only loads subpackages lazily)."""
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 else None


def test_every_subpackage_has_a_layer():
    top = {_module_name(p).split(".")[1] for p in SRC.rglob("*.py") if _module_name(p) != "advkit"}
    assert top <= set(LAYERS), f"not in the layer order: {sorted(top - set(LAYERS))}"


def test_each_layer_imports_only_from_the_layers_before_it():
    wrong = []
    for name, deps in GRAPH.items():
        own = _layer(name)
        for dep in deps:
            theirs = _layer(dep)
            if own is not None and theirs is not None and theirs > own:
                wrong.append(f"{name} ({LAYERS[own]}) imports {dep} ({LAYERS[theirs]})")
    assert not wrong, "imports against the layer order:\n  " + "\n  ".join(sorted(wrong))


def test_no_import_cycles():
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(GRAPH.get(m, ())):
            if d not in GRAPH:
                continue
            if state.get(d) == 1:
                cycles.append([*stack[stack.index(d):], d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n  " + "\n  ".join(" -> ".join(c) for c in cycles)


def test_subpackages_load_lazily():
    """``import advkit`` imports no subpackage (nor torch); ``advkit.models.load`` then works without importing
    ``advkit.models`` explicitly."""
    import subprocess
    import sys

    code = (
        "import sys, advkit\n"
        "assert [m for m in sys.modules if m.startswith('advkit.')] == [], sorted(sys.modules)\n"
        "assert 'torch' not in sys.modules\n"
        "assert set(advkit.SUBPACKAGES) == set(LAYERS) - {'_files'}\n"
        "assert set(advkit.SUBPACKAGES) <= set(dir(advkit))\n"
        "m = advkit.models.load('lenet', dataset='fashion-mnist')\n"
        "assert m.name == 'lenet' and advkit.models is sys.modules['advkit.models']\n"
        "assert callable(advkit.train.train) and callable(advkit.study.run_study)\n"
        "try:\n"
        "    advkit.nosuchpackage\n"
        "except AttributeError as e:\n"
        "    assert 'nosuchpackage' in str(e)\n"
        "else:\n"
        "    raise AssertionError('no AttributeError')\n"
    )
    r = subprocess.run([sys.executable, "-c", f"LAYERS = {LAYERS!r}\n{code}"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr


def test_no_source_file_is_longer_than_400_lines():
    lines = {str(p.relative_to(SRC)): len(p.read_text(encoding="utf-8").splitlines()) for p in SRC.rglob("*.py")}
    over = {name: n for name, n in lines.items() if n > MAX_LINES}
    assert not over, f"files over {MAX_LINES} lines (split them by concern): {over}"
