"""The shape of the code: no import cycle, stages import only downward, no borrowed privates.

Read from the source with `ast` (nothing is imported), so it is fast and sees the imports
inside functions too. The layers are DESIGN.md's; a module in no layer fails the test until
it is given one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "thresher"

# DESIGN.md "Layers": a module may import only from a lower layer, or from its own stage.
# Each name is a top-level module or a stage package of thresher/ ("" is thresher/__init__).
LAYERS = {
    1: {"errors", "files", "bits", "knn", "labels", "progress", "issue_model", "wording"},
    2: {"catalog", "sources", "config", "images", "loading", "weights", "devices"},
    3: {"scan", "guard"},
    4: {"clean", "data"},
    5: {"review", "export", "train"},
    6: {"cost", "demo"},
    7: {"doctor"},  # it times the model's step with cost's measure
    8: {"cli", "api", ""},
}


def modules(package: Path) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    out = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports_of(source: str, known: set[str], root: str = "thresher") -> list[tuple[str, str]]:
    """(module imported, name taken from it or "") for each import of `root` in `source`."""

    def resolve(name: str) -> str:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(resolve(a.name), "") for a in node.names if a.name.split(".")[0] == root]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != root:
                continue
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.append((sub, "") if sub in known else (resolve(node.module), a.name))
    return found


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the modules it imports (anywhere in it: lazy imports count)."""
    mods = modules(package)
    known = set(mods)
    return {
        m: {t for t, _ in imports_of(p.read_text(), known, package.name) if t != m}
        for m, p in mods.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None when the graph has none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def unit(module: str) -> str:
    """The top-level module or stage package a module belongs to ("" for the package)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_of(module: str, layers: dict[int, set[str]]) -> int | None:
    return next((n for n, names in layers.items() if unit(module) in names), None)


def upward_imports(graph: dict[str, set[str]], layers: dict[int, set[str]]) -> list[str]:
    """Each import that goes up, or sideways into another stage of the same layer."""
    bad = []
    for src, targets in graph.items():
        a = layer_of(src, layers)
        for dst in sorted(targets):
            b = layer_of(dst, layers)
            if unit(src) == unit(dst) or b < a or (a == 2 and b <= 2) or a == max(layers):
                continue
            bad.append(f"{src} (layer {a}) imports {dst} (layer {b})")
    return bad


def borrowed_privates(package: Path) -> list[str]:
    """Each `from thresher.x import _name` where x is another stage or leaf than the importer."""
    mods = modules(package)
    bad = []
    for m, path in mods.items():
        for target, name in imports_of(path.read_text(), set(mods), package.name):
            if name.startswith("_") and not name.startswith("__") and unit(target) != unit(m):
                bad.append(f"{m} imports {target}.{name}")
    return bad


# -- the real tree ----------------------------------------------------------------------------


def test_every_module_has_a_layer():
    missing = sorted(m for m in modules(PACKAGE) if layer_of(m, LAYERS) is None)
    assert not missing, f"give these a layer in LAYERS (and DESIGN.md): {missing}"


def test_the_import_graph_has_no_cycle():
    cycle = find_cycle(import_graph(PACKAGE))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_modules_import_only_downward():
    assert upward_imports(import_graph(PACKAGE), LAYERS) == []


def test_no_module_imports_another_ones_private_names():
    assert borrowed_privates(PACKAGE) == []


# -- the checker itself, on tiny fake trees ---------------------------------------------------


def test_the_checker_finds_a_cycle_and_only_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": {"a"}, "a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]


def _fake_package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "thresher"
    for name, text in {"__init__.py": "", **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_checker_sees_a_cycle_an_upward_import_and_a_borrowed_private(tmp_path):
    root = _fake_package(
        tmp_path,
        {
            "errors.py": "",
            "scan/__init__.py": "",
            "scan/runner.py": "def f():\n    from thresher.scan import cluster\n",
            "scan/cluster.py": "import thresher.scan.runner\n",
            "clean/__init__.py": "",
            "clean/rules.py": "from thresher.scan.runner import _helper\n",
            "export.py": "from thresher.errors import ThresherError\n",
        },
    )
    graph = import_graph(root)
    assert graph["thresher.scan.runner"] == {"thresher.scan.cluster"}  # a lazy import counts
    cycle = find_cycle(graph)  # the cycle scan/ had before issue #15
    assert cycle[0] == cycle[-1] and set(cycle) == {"thresher.scan.runner", "thresher.scan.cluster"}
    assert upward_imports(graph, LAYERS) == []  # clean (4) -> scan (3) is downward
    assert borrowed_privates(root) == ["thresher.clean.rules imports thresher.scan.runner._helper"]
    (root / "scan" / "cluster.py").write_text("from thresher.clean import rules\n")
    graph = import_graph(root)
    assert upward_imports(graph, LAYERS) == [
        "thresher.scan.cluster (layer 3) imports thresher.clean.rules (layer 4)"
    ]
    (root / "data").mkdir()
    (root / "data" / "__init__.py").write_text("")
    (root / "data" / "x.py").write_text("import thresher.clean.rules\n")  # a sideways import
    assert "thresher.data.x (layer 4) imports thresher.clean.rules (layer 4)" in upward_imports(
        import_graph(root), LAYERS
    )


@pytest.mark.parametrize("leaf", sorted(LAYERS[1]))
def test_the_lowest_leaves_import_nothing_of_thresher(leaf):
    path = PACKAGE / f"{leaf}.py"
    assert imports_of(path.read_text(), set(modules(PACKAGE))) == []
