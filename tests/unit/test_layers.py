"""Layers only look down, and no two modules import each other (even through others).

The layers, lowest first (docs/architecture.md draws them): errors and backoff, then the leaf
helpers and observe, net, state and raft, api and deploy, server and proxy, agent,
devmode, cli. A module imports only from its own package or from a lower layer;
packages in the same layer do not import each other. Imports under ``if
TYPE_CHECKING:`` are for annotations and do not count; imports inside functions count
for layering (they still load the module), and only module-level ones for cycles.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import meshlet

SRC = Path(meshlet.__file__).parent
LAYERS: list[set[str]] = [
    # ui: the web UI's static files, no code; backoff: pure, for every retry loop
    {"meshlet", "errors", "ui", "native", "backoff"},
    {"addresses", "durations", "http_limits", "json_limits", "loop", "observe",
     "private_files", "process_identity", "settings_rules", "intention_rules",
     "quantities", "restart_policy", "compiled"},
    {"net", "security", "image", "processes", "kube_objects"},
    {"state", "raft", "runtime"},
    {"api", "deploy"},
    {"server", "proxy"},
    {"agent"},
    {"devmode"},
    {"cli"},
    {"__main__"},
]
RANK = {package: rank for rank, layer in enumerate(LAYERS) for package in layer}
# Lower layers the issue rules out as well: the sidecar loads only the data plane.
NEVER = {"proxy": {"api", "raft", "state"}}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (a submodule where one is named)
    line: int
    module_level: bool


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    base = SRC.parent.joinpath(*name.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def imports_of(path: Path) -> list[Import]:
    source = module_name(path)
    package = source if path.name == "__init__.py" else source.rpartition(".")[0]
    return imports_in(path.read_text(), source, package)


def imports_in(text: str, source: str, package: str) -> list[Import]:
    found: list[Import] = []

    def visit(node: ast.AST, module_level: bool) -> None:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) \
                and node.test.id == "TYPE_CHECKING":
            for child in node.orelse:
                visit(child, module_level)
            return
        if isinstance(node, ast.Import):
            found.extend(Import(source, alias.name, node.lineno, module_level)
                         for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found.append(Import(source, target, node.lineno, module_level))
            found.extend(Import(source, f"{target}.{alias.name}", node.lineno, module_level)
                         for alias in node.names if is_module(f"{target}.{alias.name}"))
        inner = module_level and not isinstance(
            node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(text), True)
    return [i for i in found if i.target == "meshlet" or i.target.startswith("meshlet.")]


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "meshlet"


def all_imports() -> list[Import]:
    return [i for path in sorted(SRC.rglob("*.py")) for i in imports_of(path)]


def upward(imports: list[Import]) -> list[str]:
    wrong = []
    for i in imports:
        mine, theirs = layer_of(i.source), layer_of(i.target)
        if mine == theirs:
            continue
        assert mine in RANK and theirs in RANK, f"{mine} or {theirs} has no layer"
        if RANK[theirs] >= RANK[mine] or theirs in NEVER.get(mine, ()):
            wrong.append(f"{i.source}:{i.line} imports {i.target}")
    return wrong


def cycles(imports: list[Import]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for i in imports:
        if i.module_level and i.target != i.source and is_module(i.target):
            graph.setdefault(i.source, set()).add(i.target)
            graph.setdefault(i.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_every_package_has_a_layer() -> None:
    packages = {layer_of(module_name(p)) for p in SRC.rglob("*.py")}
    assert packages - set(RANK) == set()


def test_layers_only_look_down() -> None:
    assert upward(all_imports()) == []


def test_no_import_cycles_between_modules() -> None:
    assert cycles(all_imports()) == []


def test_the_checks_catch_an_upward_import_and_a_cycle() -> None:
    """The rules themselves: what they must refuse."""
    def imp(source: str, target: str) -> Import:
        return Import(source, target, 1, True)
    assert upward([imp("meshlet.raft.storage", "meshlet.server.wal")]) == [
        "meshlet.raft.storage:1 imports meshlet.server.wal"]
    assert upward([imp("meshlet.proxy.admin", "meshlet.api.routes")]) != []
    assert upward([imp("meshlet.server.main", "meshlet.proxy.sidecar")]) != []
    assert upward([imp("meshlet.server.main", "meshlet.api.routes")]) == []
    assert cycles([imp("meshlet.proxy.http", "meshlet.proxy.exchange"),
                   imp("meshlet.proxy.exchange", "meshlet.proxy.cluster"),
                   imp("meshlet.proxy.cluster", "meshlet.proxy.http")]) == [
        ["meshlet.proxy.cluster", "meshlet.proxy.exchange", "meshlet.proxy.http"]]
    text = ("import meshlet.errors\n"
            "def f():\n    from . import state\n"
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    import meshlet.server\n")
    found = {(i.target, i.module_level) for i in imports_in(text, "meshlet.x", "meshlet")}
    assert found == {("meshlet.errors", True), ("meshlet", False), ("meshlet.state", False)}

