"""The package keeps its functions small: none over 60 lines, none with more than 6 parameters.

A giant entry function with dozens of parameters is what the model codebases' users suffer from; this test
keeps that from growing back (ruff and mypy run in CI beside it).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sci_fetch"
MAX_LINES = 60
MAX_PARAMS = 6


def functions() -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                found.append((f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}", node))
    return found


def params(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Named parameters, without self/cls (``*args``/``**kwargs`` pass through and are not counted)."""
    args = node.args
    names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    return len([n for n in names if n not in ("self", "cls")])


def test_the_walk_finds_the_package() -> None:
    names = {name.split()[-1] for name, _ in functions()}
    assert {"main", "make_sample"} <= names


def test_no_function_is_over_60_lines() -> None:
    long = [
        f"{name}: {n.end_lineno - n.lineno + 1} lines"
        for name, n in functions()
        if (n.end_lineno or n.lineno) - n.lineno + 1 > MAX_LINES
    ]
    assert long == []


def test_no_function_takes_more_than_6_parameters() -> None:
    wide = [f"{name}: {params(n)} parameters" for name, n in functions() if params(n) > MAX_PARAMS]
    assert wide == []
