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
    graph = import_graph()
    names = {"tftransfer.sources", "tftransfer.hub", "tftransfer.published", "tftransfer.export"}
    for module in ("tftransfer.saving", "tftransfer.saved_model_trust",
                   "tftransfer.saved_model_view"):
        assert not graph[module] & names, module


def reachable(graph, start) -> set[str]:
    """Every module ``start`` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_the_library_never_imports_the_cli():
    graph = import_graph()
    for module in graph:
        if module.startswith(("tftransfer.commands", "tftransfer.cli")) or module == "tftransfer":
            continue
        cli = {m for m in graph[module] if m.startswith("tftransfer.commands") or
               m == "tftransfer.cli"}
        assert not cli, f"{module} imports {sorted(cli)}"


def test_recording_does_not_depend_on_reporting():
    # A sweep records rows; reading and summarizing them is report's, never the other way.
    reporting = {"tftransfer.stats", "tftransfer.results_table", "tftransfer.reporting",
                 "tftransfer.efficiency", "tftransfer.summary_markdown", "tftransfer.plots"}
    for module in ("tftransfer.sweeps", "tftransfer.sweep_state", "tftransfer.sweep_grid"):
        assert not reachable(import_graph(), module) & reporting, module


MAX_MODULE_LINES = 400  # issue 21: one job per module; a longer one is a split waiting to happen


def test_no_module_is_over_the_line_limit():
    sizes = {path.relative_to(helpers.REPO).as_posix(): len(path.read_text().splitlines())
             for path in PACKAGE.rglob("*.py")}
    assert not {p: n for p, n in sizes.items() if n > MAX_MODULE_LINES}, sorted(
        sizes.items(), key=lambda item: -item[1])[:3]
