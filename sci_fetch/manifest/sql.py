"""One query over a long list of values, for the manifest's tables and the plan's scratch tables."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

IN_LIST = 900  # values per query: under SQLite's bound-parameter limit (999) on old builds


def select_in(db: sqlite3.Connection, query: str, values: Sequence[Any]) -> list[tuple[Any, ...]]:
    """The rows of ``query`` (``{}`` where its ``IN`` list goes) for every value, IN_LIST values per query."""
    out: list[tuple[Any, ...]] = []
    for i in range(0, len(values), IN_LIST):
        chunk = values[i : i + IN_LIST]
        out.extend(db.execute(query.format(",".join("?" * len(chunk))), chunk).fetchall())
    return out
