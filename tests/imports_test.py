"""The package's import graph (issue 21): no circle, whether an import sits at the top of a module
or inside a function (so no function-level import exists to break one)."""

from __future__ import annotations

import ast

from tests import helpers

PACKAGE = helpers.REPO / "tftransfer"


def module_name(path) -> str:
    parts = path.relative_to(helpers.REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its file."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
        graph[name] = {t for t in targets if t in modules and t not in (name, "tftransfer")}
    return graph


def cycle(graph) -> list[str] | None:
    """One import circle of ``graph`` as a list of modules, or None."""
    state: dict[str, str] = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
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
    assert "tftransfer.saving" in graph and "tftransfer.hub" in graph
    assert cycle(graph) is None, " -> ".join(cycle(graph))


def test_the_check_finds_a_circle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def test_saving_knows_files_only():
    assert not import_graph()["tftransfer.saving"] & {"tftransfer.sources", "tftransfer.hub",
                                                      "tftransfer.published", "tftransfer.export"}
