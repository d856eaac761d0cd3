"""The package's import graph: no circle between modules, and sub-packages in one-way layers.

Imports are read from every file with ``ast`` (at the top of a module or inside a function), so
no function-level import can hide a circle. ``pipelines/`` holds data only and imports nothing of
the package.
"""

from __future__ import annotations

import ast

from tests import helpers

ROOTS = ("tftransfer", "pipelines")

# The sub-packages (and top-level modules; ``pipelines/`` is data) from the bottom of the data flow to the top: each may
# import only those listed before it (docs/architecture.md draws this picture).
LAYERS = ("pipelines", "errors", "tflog", "runs", "models", "config", "data", "convert", "adversarial",
          "sources", "training", "serving", "finetune", "sweeps", "tuning", "report",
          "interpret", "commands", "cli")


def module_name(path) -> str:
    parts = path.relative_to(helpers.REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its file."""
    modules = {module_name(path): path for root in ROOTS
               for path in (helpers.REPO / root).rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # ``from package import module`` depends on that module (and the package's
                # face runs first, as Python runs it); ``from module import name`` on the module.
                submodules = {f"{node.module}.{a.name}" for a in node.names} & set(modules)
                targets |= submodules or {node.module}
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
        graph[name] = {t for t in targets if t in modules and t not in (name, "tftransfer")}
    return graph


def layer(module: str) -> str:
    """``tftransfer.finetune.run`` -> ``finetune``; ``pipelines`` -> ``pipelines``."""
    parts = module.split(".")
    return parts[1] if parts[0] == "tftransfer" and len(parts) > 1 else parts[0]


def layer_graph(graph) -> dict[str, set[str]]:
    """Sub-package -> the other sub-packages its modules import."""
    layers: dict[str, set[str]] = {}
    for module, targets in graph.items():
        if module == "tftransfer":  # the package face: load_model, imported lazily
            continue
        layers.setdefault(layer(module), set()).update(
            layer(t) for t in targets if layer(t) != layer(module))
    return layers


def cycle(graph) -> list[str] | None:
    """One import circle of ``graph`` as a list of nodes, or None."""
    state: dict[str, str] = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def test_the_package_has_no_import_circle():
    graph = import_graph()
    assert "tftransfer.sources.saving" in graph and "tftransfer.sources.hub" in graph
    assert cycle(graph) is None, " -> ".join(cycle(graph))


def test_no_two_sub_packages_import_each_other_even_through_a_chain():
    layers = layer_graph(import_graph())
    assert {"finetune", "sweeps", "report", "pipelines"} <= set(layers)
    assert cycle(layers) is None, " -> ".join(cycle(layers))


def test_each_sub_package_imports_only_the_layers_below_it():
    layers = layer_graph(import_graph())
    assert set(layers) <= set(LAYERS), set(layers) - set(LAYERS)
    for name, targets in layers.items():
        below = set(LAYERS[:LAYERS.index(name)])
        assert targets <= below, f"{name} imports {sorted(targets - below)} from above it"


def test_pipelines_is_data_and_imports_nothing_of_the_package():
    assert layer_graph(import_graph())["pipelines"] == set()


def test_the_cycle_finder_finds_a_chain():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None
