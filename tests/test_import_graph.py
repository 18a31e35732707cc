"""Data flows one way: the layers import only downward, and no two modules import each other, whether at
module level, for type checking, or inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "supervisor"

#: the layers, lowest first; a module may import its own layer and the ones below, never one above
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("leaves", ("supervisor._errors", "supervisor._units", "supervisor._redact", "supervisor._marks")),
    ("spec", ("supervisor._spec",)),
    # the OS and the disk: processes, logs, probes, GPUs, the watchdog, and the run's storage they write
    ("host", ("supervisor._host", "supervisor._records", "supervisor._events")),
    ("plan", ("supervisor._plan",)),
    ("control", ("supervisor._control",)),
    ("runtime", ("supervisor._runtime",)),
    ("reclaim", ("supervisor._records.reclaim",)),  # stops what a run left: asks its socket, then signals
    ("experiment", ("supervisor._experiment",)),  # sweeps: trials of launches, their rows and report
    ("cli", ("supervisor._cli",)),
    ("doors", ("supervisor", "supervisor.__main__", "supervisor._entry", "supervisor._pytest_plugin")),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Modules of the package (and of ``topologies``) that a file imports anywhere: at module level, under
    ``if TYPE_CHECKING:``, in a ``try:``, or inside a function."""
    name = _module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = ".".join(package[: len(package) - node.level + 1])
            if node.module:
                found.add(f"{base}.{node.module}")
            found.update(f"{base}.{node.module + '.' if node.module else ''}{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {t for t in found if t.split(".")[0] in ("supervisor", "topologies")}


def _layer(module: str) -> int:
    """The layer of a module: the longest prefix that names one wins (``_records.reclaim`` over ``_records``)."""
    best, rank = "", -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
                best, rank = prefix, index
    return rank


def _graph() -> dict[str, set[str]]:
    """Module -> the modules of the package it imports (and any ``topologies`` module it names)."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {
        name: {t for t in _imports(path) if t != name and t != "supervisor" and (t in modules or t.startswith("top"))}
        for name, path in modules.items()
    }


def upward_edges(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{source} ({LAYERS[_layer(source)][0]}) -> {target} ({LAYERS[_layer(target)][0]})"
        for source, targets in graph.items()
        for target in targets
        if target.startswith("supervisor") and _layer(target) > _layer(source)
    )


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                walk(target)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node)
    return cycles


def test_find_cycles_sees_a_cycle() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_imports_finds_a_function_level_import() -> None:
    found = _imports(PACKAGE / "_spec" / "load.py")  # ``load`` imports ``presets`` inside a function
    assert "supervisor._spec.presets" in found


def test_upward_edges_sees_an_import_from_a_higher_layer() -> None:
    graph = {"supervisor._spec.model": {"supervisor._runtime.group"}, "supervisor._cli.main": {"supervisor._spec"}}
    assert upward_edges(graph) == ["supervisor._spec.model (spec) -> supervisor._runtime.group (runtime)"]


def test_every_module_has_a_layer() -> None:
    assert [name for name in _graph() if _layer(name) < 0] == []


def test_the_library_never_imports_the_presets() -> None:
    """Presets register through the ``topovisor.presets`` entry point; the library names no preset module."""
    assert sorted(f"{s} -> {t}" for s, ts in _graph().items() for t in ts if t.startswith("topologies")) == []


def test_the_layers_import_only_downward() -> None:
    graph = _graph()
    assert sum(map(len, graph.values())) > 100  # the walk found the imports at all
    assert upward_edges(graph) == []


def test_the_library_import_graph_has_no_cycle() -> None:
    """Not even through a function-level import: a lazy import that closes a circle is a seam in the wrong
    place (and the first call that takes it imports a half-initialised module)."""
    graph = _graph()
    assert find_cycles({name: targets & graph.keys() for name, targets in graph.items()}) == []
