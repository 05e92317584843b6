"""The layer rules of ARCHITECTURE.md, checked by import-linter against pyproject.toml's contracts.

A module may import only from layers below its own (__main__ > cli > commands > api > crops|engine|demo >
plan > settings > manifest|files > storage > keys > coco > observe > fs > errors), parts of one layer do not import
each other, and no package's modules import each other in a cycle.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def lint_imports(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("lint-imports")
    command = [str(exe)] if exe.exists() else [shutil.which("lint-imports") or "lint-imports"]
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run(
        [*command, "--no-cache", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def test_every_import_points_down_the_layers_and_no_package_has_a_cycle():
    result = lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_the_contracts_keep_the_pipeline_order():
    """The order itself is part of the rule: a contract loosened to make a wrong import pass fails here."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["id"] == "layers")["layers"]
    order = [part.strip().removeprefix("sci_fetch.") for layer in layers for part in layer.split("|")]
    for upper, lower in [
        ("cli", "commands"),
        ("commands", "api"),
        ("api", "engine"),
        ("engine", "plan"),
        ("plan", "settings"),
        ("settings", "manifest"),
        ("settings", "files"),
        ("files", "storage"),
        ("storage", "keys"),
        ("keys", "coco"),
        ("coco", "observe"),
        ("observe", "errors"),
    ]:
        assert order.index(upper) < order.index(lower), f"{upper} must sit above {lower}"
    independent = {part.strip() for layer in layers if "|" in layer for part in layer.split("|")}
    assert {"sci_fetch.crops", "sci_fetch.engine", "sci_fetch.manifest", "sci_fetch.files"} <= independent


# Finer rules than the layers: the storage contract, and no cycle inside engine/ or between api and commands.
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
