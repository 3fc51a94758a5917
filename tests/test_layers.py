"""The layering rules of node/ and cli/, checked on the real import graph (every import statement,
including the ones inside functions).

* ``protocol``, ``aggregation`` and ``secagg`` never import web3, the store, the chain, the peer or the tooling;
* the peer runtime never imports the tooling;
* nothing in node/ imports the CLI, and only the build step compiles the contract;
* there are no import cycles, between modules or between subpackages.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from _support import ROOT

PACKAGES = {"node": "fedchain.node", "cli": "fedchain.cli", "contracts": "fedchain.contracts"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    parts[0] = PACKAGES[parts[0]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    out = {}
    for top in PACKAGES:
        for path in (ROOT / top).rglob("*.py"):
            out[_module_name(path)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports (absolute names; relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            for alias in node.names:  # `from . import errors` imports a module
                if f"{mod}.{alias.name}" in MODULES:
                    found.add(f"{mod}.{alias.name}")
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _internal(targets: set[str]) -> set[str]:
    """Project modules among ``targets`` (a package import counts as its ``__init__``)."""
    return {t for t in targets if t in MODULES}


def _layer(name: str) -> str:
    parts = name.split(".")
    return ".".join(parts[:3]) if parts[1] == "node" and len(parts) > 2 else ".".join(parts[:2])


def test_the_graph_sees_every_module():
    assert "fedchain.node.peer.runtime" in GRAPH and "fedchain.cli.main" in GRAPH
    assert "fedchain.node.aggregation.registry" in _internal(GRAPH["fedchain.node.aggregation"])


@pytest.mark.parametrize("layer", ["fedchain.node.protocol", "fedchain.node.aggregation", "fedchain.node.secagg"])
def test_pure_layers_import_no_io_no_runtime_and_no_tooling(layer):
    banned_external = ("web3", "eth_account", "eth_abi", "eth_utils", "ipfshttpclient", "requests", "solcx")
    banned_internal = ("fedchain.node.store", "fedchain.node.chain", "fedchain.node.ledger", "fedchain.node.peer",
                       "fedchain.node.tools", "fedchain.node.ml", "fedchain.cli", "fedchain.contracts")
    for name, targets in GRAPH.items():
        if not name.startswith(layer):
            continue
        for t in targets:
            assert not t.split(".")[0] in banned_external, f"{name} imports {t}"
            assert not t.startswith(banned_internal), f"{name} imports {t}"


def test_protocol_does_not_import_aggregation():
    for name, targets in GRAPH.items():
        if name.startswith("fedchain.node.protocol"):
            assert not any(t.startswith("fedchain.node.aggregation") for t in targets), name


def test_the_peer_never_imports_the_tooling():
    for name, targets in GRAPH.items():
        if name.startswith(("fedchain.node.peer", "fedchain.node.chain", "fedchain.node.store", "fedchain.node.ledger",
                            "fedchain.node.ml")):
            assert not any(t.startswith("fedchain.node.tools") for t in targets), f"{name} imports the tooling"


def test_node_never_imports_the_cli_and_only_the_build_step_compiles():
    for name, targets in GRAPH.items():
        if name.startswith("fedchain.node"):
            assert not any(t.startswith("fedchain.cli") for t in targets), name
            assert "fedchain.contracts.build" not in targets and "solcx" not in targets, f"{name} compiles the contract"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _without_parent_package(name: str, targets: set[str]) -> set[str]:
    # A submodule importing a sibling through the package runs the package's __init__ first;
    # the edge that matters is to the sibling, and the package -> submodule edge is not a cycle.
    return {t for t in targets if not name.startswith(t + ".")}


def test_there_are_no_import_cycles_between_modules():
    graph = {n: _without_parent_package(n, _internal(t)) for n, t in GRAPH.items()}
    assert _cycles(graph) == []


def test_there_are_no_import_cycles_between_layers():
    layers: dict[str, set[str]] = {}
    for name, targets in GRAPH.items():
        src = _layer(name)
        for t in _internal(targets):
            dst = _layer(t)
            if dst != src and not (src == "fedchain.node" or dst == "fedchain.node"):
                layers.setdefault(src, set()).add(dst)
    assert _cycles(layers) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_cli_holds_no_protocol_logic():
    """The CLI parses, calls one library function and prints: no torch, no web3 and no store
    plumbing of its own."""
    for name, targets in GRAPH.items():
        if name.startswith("fedchain.cli"):
            assert not {"torch", "numpy", "web3", "eth_abi"} & {t.split(".")[0] for t in targets}, f"{name}: {targets}"
