"""Every CSV sci_fetch writes: typed rows in, a whole file out, no cell a spreadsheet would run.

A CSV's columns are the fields of a dataclass, in order, so a column is named once and a row cannot put
a value under the wrong header. Rows are written in chunks to an ``AtomicFile`` (memory stays flat
however many rows there are) that is renamed into place only by ``commit()``: a reader never sees half
a CSV and an interrupted run leaves the previous one as it was.

Spreadsheet formulas (OWASP "CSV injection"): a text cell that starts with ``=``, ``+``, ``-``, ``@``, a
tab or a carriage return is written with a leading ``'``, so Excel, LibreOffice and Google Sheets show it
as text instead of evaluating it (``=HYPERLINK(...)`` in a category name would otherwise run on the
machine of whoever opens the file). Numbers the tool writes (a negative box coordinate) are not text and
stay numbers. ``read_cell`` undoes the rule for sci_fetch's own readers (the gallery).
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Protocol

from sci_fetch.errors import DiskError
from sci_fetch.fs.atomic import AtomicFile

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
ESCAPE = "'"


class Row(Protocol):
    """A dataclass whose fields are the columns of one CSV."""

    __dataclass_fields__: ClassVar[dict[str, Any]]


def columns(row_type: type[Row]) -> list[str]:
    """The header of the CSV ``row_type`` makes: its field names, in order."""
    return [f.name for f in dataclasses.fields(row_type)]


def safe_cell(value: object) -> object:
    """``value`` as written: text that a spreadsheet would read as a formula gets a leading ``'``."""
    return ESCAPE + value if isinstance(value, str) and is_formula(value) else value


def is_formula(value: object) -> bool:
    """Text a spreadsheet would evaluate rather than show."""
    return isinstance(value, str) and value.startswith(FORMULA_STARTS)


def read_cell(text: str) -> str:
    """A cell of a CSV sci_fetch wrote, as it was before ``safe_cell``."""
    if text.startswith(ESCAPE) and text[1:2] and text[1:].startswith(FORMULA_STARTS):
        return text[1:]
    return text


class CsvWriter:
    """Append typed rows; ``commit()`` puts the CSV in place, leaving the block without it discards it.

    ``track``: columns whose escaped values are kept in ``escaped`` (column -> original values), so a run
    can name them once. A failed write raises DiskError naming the file, and leaves no temp file.
    """

    def __init__(
        self,
        path: Path,
        row_type: type[Row],
        *,
        track: Iterable[str] = (),
        chunk_rows: int = 5000,
        lineterminator: str = "\n",
    ) -> None:
        self.path = path
        self.columns = columns(row_type)
        self.chunk_rows = chunk_rows
        self.escaped: dict[str, set[str]] = {name: set() for name in track}
        self._rows: list[list[object]] = []  # the header first, then rows not written yet
        with self._guard():
            self._file = AtomicFile(path, fsync=True)
        self._writer = csv.writer(self._file.fh, lineterminator=lineterminator)
        self._rows.append(list(self.columns))

    def add(self, row: Row) -> None:
        cells = [getattr(row, name) for name in self.columns]
        for name, seen in self.escaped.items():
            value = getattr(row, name)
            if is_formula(value):
                seen.add(value)
        self._rows.append([safe_cell(v) for v in cells])
        if len(self._rows) >= self.chunk_rows:
            self._flush()

    def _flush(self) -> None:
        # None is an empty cell and 512 stays 512 (a float column would write 512.0).
        with self._guard():
            self._writer.writerows(self._rows)
        self._rows.clear()

    def commit(self) -> None:
        self._flush()
        with self._guard():
            self._file.commit()

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise DiskError(f"cannot write {self.path}: {exc.strerror or exc}") from exc

    def discard(self) -> None:
        self._file.discard()

    def __enter__(self) -> CsvWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._file.discard()
