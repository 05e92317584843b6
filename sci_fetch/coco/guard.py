"""A COCO file as ijson reads it, checked chunk by chunk before the parser sees a byte of it.

ijson's ``parse`` and ``items`` keep a prefix string per open level, so memory grows with the square of
the nesting depth: 200 KB of ``[[[[…`` takes gigabytes. Every chunk is therefore first fed to a second,
event-only parser (``basic_parse``, flat memory) whose events are tallied with C-level iteration; a
chunk that nests deeper than ``MAX_DEPTH`` or that holds no complete value in ``MAX_VALUE`` bytes (one
string of megabytes) never reaches the real parser. The check costs one more C parse of each chunk.
"""

from __future__ import annotations

import operator
import re
from itertools import accumulate, compress, repeat
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Protocol

from ijson.backends import yajl2_c

from sci_fetch.errors import InputError


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class Oversized(InputError):
    """A value ran on past MAX_VALUE: the reader starts again through LongStringFilter, which leaves it out."""


# What a string longer than MAX_VALUE reads as after LongStringFilter: a NUL (no COCO field may hold one)
# and its size, so validation names the field and no one ever holds the megabytes.
LEFT_OUT = "\x00sci-fetch: a string of more than 1 MiB, left out"
_LEFT_OUT_JSON = b"\\u0000sci-fetch: a string of more than 1 MiB, left out"
_STRING_BODY = re.compile(rb'(?:[^"\\]|\\.)*', re.DOTALL)

MAX_DEPTH = 64  # a COCO record nests 4 or 5 levels (segmentation polygons); 64 is far above any real file
MAX_VALUE = 1 << 20  # bytes one JSON value (a string, a number) may take; a COCO field needs a few hundred
BOM = b"\xef\xbb\xbf"  # what Windows editors put before UTF-8 text; JSON parsers refuse it, so it is skipped

_DELTA = {"start_map": 1, "start_array": 1, "end_map": -1, "end_array": -1}


class GuardedReader:
    """A binary file for ijson whose ``read`` raises InputError instead of handing out a hostile chunk.

    It also follows where the parse is (the top-level key and the index of the element under it), so a
    refusal names the record: ``images[12]``.
    """

    def __init__(self, fh: Readable, path: Path) -> None:
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
                raise Oversized(
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


class LongStringFilter:
    """A binary file whose strings longer than MAX_VALUE read as LEFT_OUT, in memory bounded by MAX_VALUE.

    Only used after an Oversized (a hostile file): it steps through the bytes string by string with two
    C-level searches each, far slower than the parser alone. A string's bytes are held until it ends or
    passes MAX_VALUE; from then on they are read and dropped.
    """

    def __init__(self, fh: Readable) -> None:
        self._fh = fh
        self._in_string = False
        self._held: list[bytes] = []
        self._held_size = 0
        self._dropping = False
        self._carry = b""  # a backslash that ended the last chunk inside a string

    def read(self, size: int = -1) -> bytes:
        if size == 0:
            return b""  # ijson asks for 0 bytes to learn the file's type; nothing may be consumed
        while True:
            data = self._fh.read(size if size > 0 else 1 << 16)
            if not data:  # the end inside a string: what is held goes out once, for the parser to call it cut
                rest = b"" if self._dropping else b"".join(self._held)
                self._held, self._held_size = [], 0
                return rest
            out = self._filter(self._carry + data)
            if out:
                return out

    def _filter(self, data: bytes) -> bytes:
        self._carry = b""
        out: list[bytes] = []
        pos, end = 0, len(data)
        while pos < end:
            if not self._in_string:
                quote = data.find(b'"', pos)
                if quote < 0:
                    out.append(data[pos:])
                    break
                out.append(data[pos : quote + 1])
                pos, self._in_string = quote + 1, True
                continue
            body = _STRING_BODY.match(data, pos)  # matches at least the empty string
            stop = body.end() if body is not None else pos
            if stop == end - 1 and data[stop : stop + 1] == b"\\":
                self._carry = b"\\"  # the escaped byte is in the next chunk
            self._hold(data[pos:stop])
            if stop >= end - 1 and data[stop : stop + 1] != b'"':
                break
            out.append(self._release() + b'"')
            pos, self._in_string = stop + 1, False
        return b"".join(out)

    def _hold(self, piece: bytes) -> None:
        if self._dropping:
            return
        self._held.append(piece)
        self._held_size += len(piece)
        if self._held_size > MAX_VALUE:
            self._held, self._held_size, self._dropping = [], 0, True

    def _release(self) -> bytes:
        body = _LEFT_OUT_JSON if self._dropping else b"".join(self._held)
        self._held, self._held_size, self._dropping = [], 0, False
        return body
