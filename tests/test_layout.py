"""The package layout: imports flow one way, core <- analysis <- book, with no cycle.

Every module's imports are read from its source with `ast` (those inside functions included), so a
cycle cannot hide behind an import deferred into a function body.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "icl_meta"
# A module's layer is its subpackage; a module may import its own layer and the ones below it.
LAYERS = {"core": 0, "analysis": 1, "book": 2}


def module_name(path: Path) -> str:
    parts = ("icl_meta", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer(module: str) -> int:
    sub = module.split(".")[1:2]
    return LAYERS[sub[0]] if sub and sub[0] in LAYERS else LAYERS["core"]


def imports(module: str) -> set[str]:
    """The icl_meta modules a module imports, at any depth of its source."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("icl_meta")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            if not base.startswith("icl_meta"):
                continue
            for a in node.names:  # `from pkg import module` imports the module itself
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base)
    return {m for m in found if m in MODULES} - {module}


GRAPH = {m: imports(m) for m in MODULES}


def test_every_module_is_found():
    assert {"icl_meta.config", "icl_meta.analysis.readings", "icl_meta.book.dashboard"} <= set(MODULES)
    assert "icl_meta.analysis.readings" in GRAPH["icl_meta.book.claims"]


def test_no_module_imports_a_layer_above_its_own():
    upward = sorted((m, d) for m, deps in GRAPH.items() for d in deps if layer(d) > layer(m))
    assert not upward, f"(importer, imported) pairs that import upward (core <- analysis <- book): {upward}"


def test_no_import_cycle():
    """No cycle among the modules. The package's own __init__ is left out: it only re-exports core names,
    and `from . import __version__` (runs) reads a constant from it."""
    graph = {m: deps - {"icl_meta"} for m, deps in GRAPH.items() if m != "icl_meta"}
    state, cycles = {}, []

    def visit(m, path):
        state[m] = "open"
        for d in sorted(graph[m]):
            if state.get(d) == "open":
                cycles.append(path[path.index(d):] + [d])
            elif d not in state:
                visit(d, path + [d])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, f"import cycles: {cycles}"
