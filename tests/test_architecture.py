"""The layering docs/architecture.md draws, checked on the source: who may import what."""

from __future__ import annotations

import ast
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[1] / "service"
# The inference core and the model contract: no HTTP here (typed errors only, mapped at the edge).
CORE = ["errors.py", "core", "model", "features", "settings.py", "metrics.py", "logs.py"]
WEB_PACKAGES = ("fastapi", "starlette", "uvicorn")


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in SERVICE.rglob("*.py"):
        name = ".".join(path.relative_to(SERVICE.parent).with_suffix("").parts).removesuffix(".__init__")
        out[name] = ast.parse(path.read_text(encoding="utf-8"))
    return out


def _imports(tree: ast.Module, top_level_only: bool = False) -> set[str]:
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def _core_files() -> list[Path]:
    files = []
    for entry in CORE:
        path = SERVICE / entry
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


def test_core_imports_no_web_framework() -> None:
    for path in _core_files():
        imported = _imports(ast.parse(path.read_text(encoding="utf-8")))
        web = sorted(m for m in imported if m.split(".")[0] in WEB_PACKAGES or m.startswith("service.http"))
        assert not web, f"{path.relative_to(SERVICE.parent)} imports {web}"


def test_core_names_no_http_status() -> None:
    """Statuses live in service/http/errors.py's table; the core raises typed errors."""
    for path in _core_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        # A token budget (`CPU_BATCH_TOKENS = 512`) is a quantity, not a status.
        quantities = {
            id(node.value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign)
            and all(isinstance(t, ast.Name) and t.id.endswith("_TOKENS") for t in node.targets)
        }
        statuses = [
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant)
            and type(node.value) is int
            and 400 <= node.value <= 599
            and id(node) not in quantities
        ]
        assert not statuses, f"{path.relative_to(SERVICE.parent)} names HTTP statuses {statuses}"


def test_no_import_cycle_in_service() -> None:
    """Module-level imports of service/ form no cycle (lazy imports inside functions are allowed)."""
    modules = _modules()
    graph = {
        name: {m for m in _imports(tree, top_level_only=True) if m in modules and m != name}
        for name, tree in modules.items()
    }
    visiting, done = set(), set()

    def visit(node: str, path: list[str]) -> None:
        if node in done:
            return
        assert node not in visiting, "import cycle: " + " -> ".join([*path, node])
        visiting.add(node)
        for nxt in sorted(graph[node]):
            visit(nxt, [*path, node])
        visiting.discard(node)
        done.add(node)

    for name in sorted(graph):
        visit(name, [])
