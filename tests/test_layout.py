"""Package layout: every jbo module imports, none is over 400 lines, and no import cycle among
jbo's modules or packages, counting every import statement (in functions too)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "jbo"
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        name = ".".join(path.relative_to(PKG.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _is_type_checking(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``): never executed, so no import edge."""
    t = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING")
        or (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"))


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` that can run: ``ast.walk`` minus the bodies of TYPE_CHECKING
    blocks (their ``else`` still counts)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if _is_type_checking(node):
            stack.extend(node.orelse)
        else:
            stack.extend(ast.iter_child_nodes(node))


def _import_time_edges(path: Path, modules: dict[str, Path]) -> set[str]:
    """jbo modules that ``path`` imports when it is imported: statements at module level,
    including inside top-level ``if``/``try`` blocks, not inside functions or classes."""
    out: set[str] = set()
    stack = list(ast.parse(path.read_text()).body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:  # `from jbo import lattice` imports the module jbo.lattice
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in modules else node.module)
        elif _is_type_checking(node):
            stack.extend(node.orelse)
        elif isinstance(node, (ast.If, ast.Try)):
            stack.extend(ast.iter_child_nodes(node))
        elif isinstance(node, ast.ExceptHandler):
            stack.extend(node.body)
    return {m for m in out if m in modules}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by a depth-first search (each as a closed path)."""
    state: dict[str, int] = {}
    found: list[list[str]] = []

    def visit(u: str, path: list[str]) -> None:
        state[u] = 1
        path.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                found.append(path[path.index(v):] + [v])
            elif v not in state:
                visit(v, path)
        path.pop()
        state[u] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    return found


def _all_edges(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """jbo modules that ``path`` (module ``name``) imports anywhere: every import statement,
    inside functions and classes too, relative ones resolved. Importing ``a.b.c`` also runs
    ``a.b``: the target's parent packages count, except the source's own (already running)."""
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    own = _ancestors(name)
    out: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                       for a in node.names]
        for t in targets:
            out.add(t)
            out |= _ancestors(t) - own
    return {m for m in out if m in modules} - {name}


def _ancestors(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def _components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (sorted): the import cycles.
    Empty exactly when the graph has no cycle; each component must be cut to remove them."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def _every_import_graphs() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module graph, package graph): jbo modules, and jbo's top-level packages/modules
    (``jbo.train``, ``jbo.cli``, ...), joined by every import statement. Entry points
    (``__main__``) are left out of the package graph: nothing imports them."""
    modules = _modules()
    graph = {m: _all_edges(p, m, modules) for m, p in modules.items()}
    top = lambda m: ".".join(m.split(".")[:2])  # noqa: E731
    packages: dict[str, set[str]] = {top(m): set() for m in modules}
    for m, targets in graph.items():
        if not m.endswith("__main__"):
            packages[top(m)] |= {top(t) for t in targets} - {top(m)}
    return graph, packages


def test_type_checking_imports_are_not_edges(tmp_path):
    src = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from jbo.b import X\n"
           "else:\n    from jbo import c\n")
    path = tmp_path / "a.py"
    path.write_text(src)
    mods = {"jbo.a": path, "jbo.b": path, "jbo.c": path, "jbo": path}
    assert _all_edges(path, "jbo.a", mods) == {"jbo.c"}
    assert _import_time_edges(path, mods) == {"jbo.c"}


def test_every_import_parser_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "jbo"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "sub" / "a.py").write_text(
        "import os\nfrom . import b\n\ndef f():\n    from jbo.other.deep import x\n"
        "    class C:\n        from ..top import y\n")
    modules = {m: pkg / "x.py" for m in ("jbo", "jbo.sub", "jbo.sub.a", "jbo.sub.b",
                                         "jbo.other", "jbo.other.deep", "jbo.top")}
    got = _all_edges(pkg / "sub" / "a.py", "jbo.sub.a", modules)
    assert got == {"jbo.sub.b", "jbo.other", "jbo.other.deep", "jbo.top"}
    assert _components({"a": {"b"}, "b": {"a", "c"}, "c": {"d"}, "d": {"c"}, "e": {"a"}}) == [
        ["a", "b"], ["c", "d"]]
    assert _components({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_counting_every_import():
    """No cycle among modules or packages even through imports inside functions: a lower
    layer never imports a higher one, lazily or not (move the shared piece down instead)."""
    graph, packages = _every_import_graphs()
    for kind, found in (("module", _components(graph)), ("package", _components(packages))):
        assert found == [], f"{kind} import cycles (every import statement counted): {found}"


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    modules = _modules()
    graph = {m: _import_time_edges(p, modules) - {m} for m, p in modules.items()}
    assert graph["jbo.cli"] >= {"jbo.configargs", "jbo.data.cli"}  # the parser sees imports
    assert _cycles(graph) == []


@pytest.mark.parametrize("name", [m for m in _modules() if not m.endswith("__main__")])
def test_every_module_imports(name):
    importlib.import_module(name)


def test_no_module_is_over_400_lines():
    long = {m: n for m, p in _modules().items()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"split these modules (one job each, ~{MAX_LINES} lines max): {long}"


def test_only_the_command_line_imports_the_study_layer():
    """jbo.study sits on top (it imports train, analysis, data, models): within jbo only the
    command line may import it, so the library never depends on the studies."""
    _, packages = _every_import_graphs()
    users = sorted(p for p, targets in packages.items() if "jbo.study" in targets)
    assert set(users) <= {"jbo.cli"}, f"{users} import jbo.study"
    assert packages["jbo.study"] <= {"jbo.train", "jbo.analysis", "jbo.data", "jbo.models"}, \
        packages["jbo.study"]


def test_models_import_no_training_analysis_or_data():
    """jbo.models (the zoo and its Model type) sits below training, analysis and data: they
    take a Model; it never imports them, not even inside a function."""
    _, packages = _every_import_graphs()
    higher = packages["jbo.models"] & {"jbo.train", "jbo.analysis", "jbo.data"}
    assert not higher, f"jbo.models imports {sorted(higher)}: move the shared piece down"


def test_tests_mirror_the_package_tree():
    """tests/ mirrors jbo/: a test folder per subpackage (tests/models for jbo.models, ...) plus
    tests/experiments for the studies; the engine's top-level modules are tested in tests/."""
    tests = PKG.parent / "tests"
    folders = {p.name for p in tests.iterdir() if (p / "__init__.py").is_file()}
    packages = {p.name for p in PKG.iterdir() if (p / "__init__.py").is_file()}
    assert folders - packages <= {"experiments"}, f"test folders without a package: {folders}"
    assert packages <= folders, f"packages without a test folder: {sorted(packages - folders)}"
    empty = [f for f in folders if not list((tests / f).glob("test_*.py"))]
    assert not empty, f"test folders without tests: {empty}"
