"""The layer rules of ARCHITECTURE.md, checked by import-linter against pyproject.toml's contracts.

A module may import only from layers below its own (cli > commands > api > crops|engine|demo > plan >
settings > manifest|files > storage > keys > coco > observe > errors), parts of one layer do not import
each other, and no package's modules import each other in a cycle.
"""

from __future__ import annotations

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
