"""A COCO file as ijson reads it, checked chunk by chunk before the parser sees a byte of it.

ijson's ``parse`` and ``items`` keep a prefix string per open level, so memory grows with the square of
the nesting depth: 200 KB of ``[[[[…`` takes gigabytes. Every chunk is therefore first fed to a second,
event-only parser (``basic_parse``, flat memory) whose events are tallied with C-level iteration; a
chunk that nests deeper than ``MAX_DEPTH`` or that holds no complete value in ``MAX_VALUE`` bytes (one
string of megabytes) never reaches the real parser. The check costs one more C parse of each chunk.
"""

from __future__ import annotations

import operator
from itertools import accumulate, compress, repeat
from pathlib import Path
from types import SimpleNamespace
from typing import Any, BinaryIO

from ijson.backends import yajl2_c

from sci_fetch.errors import InputError

MAX_DEPTH = 64  # a COCO record nests 4 or 5 levels (segmentation polygons); 64 is far above any real file
MAX_VALUE = 1 << 20  # bytes one JSON value (a string, a number) may take; a COCO field needs a few hundred
BOM = b"\xef\xbb\xbf"  # what Windows editors put before UTF-8 text; JSON parsers refuse it, so it is skipped

_DELTA = {"start_map": 1, "start_array": 1, "end_map": -1, "end_array": -1}


class GuardedReader:
    """A binary file for ijson whose ``read`` raises InputError instead of handing out a hostile chunk.

    It also follows where the parse is (the top-level key and the index of the element under it), so a
    refusal names the record: ``images[12]``.
    """

    def __init__(self, fh: BinaryIO, path: Path) -> None:
        self._fh = fh
        self._path = path
        self._events: list[tuple[str, Any]] = []
        self._mirror = yajl2_c.basic_parse_basecoro(SimpleNamespace(send=self._events.append), use_float=True)
        self._depth = 0
        self._key: str | None = None  # the top-level key whose value is being read
        self._items = 0  # elements of that value started so far
        self._quiet = 0  # bytes read since the last complete value
        self._offset = 0

    def read(self, size: int = -1) -> bytes:
        data = self._fh.read(size)
        if not data:
            return data
        if self._offset == 0 and data.startswith(BOM):
            data = data[len(BOM) :]
        start, self._offset = self._offset, self._offset + len(data)
        self._mirror.send(data)  # malformed JSON raises ijson's own error here, as the real parser would
        events, self._events[:] = list(self._events), []
        if events:
            self._quiet = 0
            self._check_depth(events, start)
        else:
            self._quiet += len(data)
            if self._quiet > MAX_VALUE:
                raise InputError(
                    f"{self._path}: one JSON value runs on for more than {MAX_VALUE >> 20} MiB ({self._where()}, "
                    f"bytes {start - self._quiet + len(data)}-{self._offset}); no field of a COCO file is that "
                    "long: the file is damaged or not a COCO file"
                )
        return data

    def _check_depth(self, events: list[tuple[str, Any]], start: int) -> None:
        """Depth before each event, by C-level iteration: Python steps only for the few events at the top."""
        names = list(map(operator.itemgetter(0), events))
        levels = list(accumulate(map(_DELTA.get, names, repeat(0)), initial=self._depth))
        self._depth = levels[-1]
        deepest = max(levels)
        end = levels.index(deepest) if deepest > MAX_DEPTH else len(events)
        for i in compress(range(end), map((3).__gt__, levels)):
            self._follow(levels[i], names[i], events[i][1])
        if deepest > MAX_DEPTH:
            raise InputError(
                f"{self._path}: JSON nested more than {MAX_DEPTH} levels deep ({self._where()}, bytes "
                f"{start}-{self._offset}); a COCO file needs about 5: the file is damaged or not a COCO file"
            )

    def _follow(self, depth: int, name: str, value: Any) -> None:
        if depth == 1 and name == "map_key":
            self._key, self._items = value, 0
        elif depth == 2 and not name.startswith("end_"):
            self._items += 1

    def _where(self) -> str:
        if self._key is None:
            return "at the top level"
        if self._items == 0:
            return f"in '{self._key}'"
        return f"in {self._key}[{self._items - 1}]"
