"""Import directions the layout keeps (ARCHITECTURE.md), checked on the source, imports inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "sci_fetch"
# The storage contract is storage/base.py (+ options, the fake and the default factory); these are S3's own.
STORAGE_INTERNALS = {"storage.s3", "storage.retry", "storage.direct", "storage.wire", "storage.signing"}


def imports() -> dict[str, set[str]]:
    """module (dotted, without "sci_fetch.") -> the sci_fetch modules it imports."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sci_fetch."):
                found.add(node.module.removeprefix("sci_fetch."))
            elif isinstance(node, ast.Import):
                found.update(a.name.removeprefix("sci_fetch.") for a in node.names if a.name.startswith("sci_fetch."))
        graph[name] = found
    return graph


def test_nothing_above_storage_imports_the_s3_clients_modules():
    offenders = {
        module: sorted(found & STORAGE_INTERNALS)
        for module, found in imports().items()
        if not module.startswith("storage.") and found & STORAGE_INTERNALS
    }
    assert offenders == {}


def reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        if module == goal:
            return True
        if module not in seen:
            seen.add(module)
            todo.extend(graph.get(module, ()))
    return False


def test_the_engine_has_no_import_cycle_and_api_and_commands_point_one_way():
    graph = imports()
    engine = [m for m in graph if m.startswith("engine.")]
    for module in engine:
        for other in graph[module]:
            assert not (other.startswith("engine.") and other != module and reaches(graph, other, module)), (
                f"{module} <-> {other}"
            )
    assert not reaches(graph, "engine.job", "api")  # the command and the API both call engine.job
    assert not reaches(graph, "api", "commands.crops")  # commands are built on the API, not the other way
