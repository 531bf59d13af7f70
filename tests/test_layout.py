"""The layout shows the architecture: metrics/ at the bottom, datasets/ and algorithms/ above it, bench/ on top;
no module imports a higher layer, and no modules import each other in a circle (imports inside functions
count: a cycle broken by a local import is still a cycle)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYER = {"metrics": 1, "datasets": 2, "algorithms": 2, "bench": 3}


def modules() -> dict[str, Path]:
    out = {}
    for pkg in LAYER:
        for p in (ROOT / pkg).rglob("*.py"):
            parts = list(p.relative_to(ROOT).with_suffix("").parts)
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def imports() -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its code (``from pkg import sub`` names pkg.sub)."""
    mods = modules()

    def resolve(name):
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for m, p in mods.items():
        names = set()
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        graph[m] = {r for n in names if (r := resolve(n)) and r != m}
    return graph


def test_no_module_imports_a_higher_layer():
    up = [(a, b) for a, bs in imports().items() for b in bs
          if LAYER[a.split(".")[0]] < LAYER[b.split(".")[0]]]
    assert up == []
    between = {(a.split(".")[0], b.split(".")[0]) for a, bs in imports().items() for b in bs}
    assert ("datasets", "algorithms") not in between and ("algorithms", "datasets") not in between


def test_no_import_cycles():
    """Depth-first search for a cycle through modules (a package's __init__, which only hands names on, is left
    out)."""
    graph = {m: {b for b in bs if b not in LAYER} for m, bs in imports().items() if m not in LAYER}
    state, cycles = {}, []

    def visit(m, path):
        state[m] = "open"
        for b in sorted(graph.get(m, ())):
            if state.get(b) == "open":
                cycles.append(path[path.index(b):] + [b])
            elif b not in state:
                visit(b, path + [b])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_no_scratch_files_at_the_top():
    assert sorted(p.name for p in ROOT.glob("*.py")) == []
