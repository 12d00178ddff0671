"""The import graph of src/: no cycle anywhere, and the factory's stages only import earlier ones.

Every import counts, also those inside functions (they still tie the modules together).
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

SRC = ROOT / "src"
STAGES = ("data", "model", "train", "evaluate", "tune", "export")


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            edges[name] |= {t for t in targets if t in modules and t != name}
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def _stage(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) > 2 and parts[0] == "fer_onnx_factory" and parts[1] in STAGES:
        return STAGES.index(parts[1])
    return None


def test_the_graph_is_read() -> None:
    edges = _graph()
    assert "fer_onnx.batch.runner" in edges
    assert "fer_onnx_factory.export.bundle" in edges
    assert "fer_onnx_factory.export.onnx" in edges["fer_onnx_factory.export.bundle"]
    assert "fer_onnx_factory.data.datasets" in edges["fer_onnx_factory.train.run"]


def test_no_import_cycle_in_src() -> None:
    assert _cycles(_graph()) == []


def test_a_cycle_would_be_found() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_factory_stages_only_import_earlier_stages() -> None:
    climbs = [
        f"{module} -> {target}"
        for module, targets in _graph().items()
        for target in targets
        if (s := _stage(module)) is not None and (t := _stage(target)) is not None and t > s
    ]
    assert climbs == []


def test_the_runtime_never_imports_the_factory() -> None:
    edges = _graph()
    leaks = [
        f"{m} -> {t}"
        for m, targets in edges.items()
        if m.startswith("fer_onnx.") or m == "fer_onnx"
        for t in targets
        if t.startswith("fer_onnx_factory")
    ]
    assert leaks == []
