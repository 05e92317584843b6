"""A COCO file as ijson reads it, checked chunk by chunk before the parser sees a byte of it.

ijson's ``parse`` and ``items`` keep a prefix string per open level, so memory grows with the square of
the nesting depth: 200 KB of ``[[[[…`` takes gigabytes. A chunk that nests deeper than ``MAX_DEPTH`` or
that holds no complete value in ``MAX_VALUE`` bytes (one string of megabytes) never reaches the real parser.

Two checks decide it. The screen (``_Screen``) clears a usual chunk with a few C-level passes over its
bytes: escapes out, quotes and brackets kept, strings paired off; what is left is the chunk's brackets,
whose running depth it tallies. It knows only the depth and whether a string is open, so whenever it
cannot be sure (no bracket at all, a depth past ``MAX_DEPTH``) it hands over to the mirror (``_Mirror``):
a second, event-only parser (``basic_parse``, flat memory) that replays the file from its start up to that chunk, decides exactly, and names the record
in its refusal. From then on the mirror checks every chunk. A usual COCO file is never handed over.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from contextlib import AbstractContextManager
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
_MARKS = b'"[]{}'
_NOT_MARKS = bytes(sorted(set(range(256)) - set(_MARKS)))
_STRINGS = re.compile(rb'"[^"]*"')
_STEP = [0] * 256  # a bracket's change to the depth, by byte value
_STEP[ord("{")] = _STEP[ord("[")] = 1
_STEP[ord("}")] = _STEP[ord("]")] = -1

Reopen = Callable[[], AbstractContextManager[Readable]]


class GuardedReader:
    """A binary file for ijson whose ``read`` raises InputError instead of handing out a hostile chunk.

    ``reopen`` gives the same bytes again from the start (for the mirror's replay); without it every
    chunk goes through the mirror. A refusal names the record: ``images[12]``.
    """

    def __init__(self, fh: Readable, path: Path, reopen: Reopen | None = None) -> None:
        self._fh = fh
        self._path = path
        self._reopen = reopen
        self._screen: _Screen | None = _Screen() if reopen is not None else None
        self._mirror: _Mirror | None = None if reopen is not None else _Mirror(path)
        self._reads: list[list[int]] = []  # [size, times] of every read that gave bytes, for the replay

    def read(self, size: int = -1) -> bytes:
        data = _skip_bom(self._fh.read(size), first=not self._reads)
        if not data:
            return data
        if self._mirror is not None:
            self._mirror.check(data)
        elif self._screen is None or not self._screen.clears(data):
            self._screen = None
            self._mirror = self._replay()
            self._mirror.check(data)
        if self._reads and self._reads[-1][0] == size:
            self._reads[-1][1] += 1
        else:
            self._reads.append([size, 1])
        return data

    def _replay(self) -> _Mirror:
        """A mirror that has checked every chunk handed out so far, read again with the same sizes."""
        mirror = _Mirror(self._path)
        assert self._reopen is not None
        with self._reopen() as fh:
            first = True
            for size, times in self._reads:
                for _ in range(times):
                    mirror.check(_skip_bom(fh.read(size), first))
                    first = False
        return mirror


def _skip_bom(data: bytes, first: bool) -> bytes:
    return data[len(BOM) :] if first and data.startswith(BOM) else data


class _Screen:
    """Clears a chunk that cannot nest past MAX_DEPTH and holds a bracket (so a complete value) by C-level
    passes over its bytes; keeps the depth and whether the chunk ended inside a string."""

    def __init__(self) -> None:
        self._depth = 0
        self._in_string = False
        self._escaped = False  # the last chunk ended with a backslash that escapes this one's first byte

    def clears(self, data: bytes) -> bool:
        escaped = False
        if self._escaped:
            data = data[1:]
        if b"\\" in data:  # escaped backslashes out, then escaped quotes: every quote left opens or closes
            data = data.replace(b"\\\\", b"")
            escaped = data.endswith(b"\\")
            data = data.replace(b'\\"', b"")
        marks = data.translate(None, _NOT_MARKS)
        if self._in_string:
            marks = b'"' + marks
        ends_in_string = marks.count(b'"') % 2 == 1
        if ends_in_string:
            marks += b'"'
        # Strings pair off as adjacent quotes when none holds a bracket; a quote left over means one does, and
        # then each string is taken out from its opening quote to the next (no escaped quote is left).
        brackets = marks.replace(b'""', b"")
        if b'"' in brackets:
            brackets = _STRINGS.sub(b"", marks)
        if not brackets:
            return False
        depths = list(accumulate(map(_STEP.__getitem__, brackets), initial=self._depth))
        if max(depths) > MAX_DEPTH:
            return False
        self._depth, self._in_string, self._escaped = depths[-1], ends_in_string, escaped
        return True


class _Mirror:
    """The exact check: an event-only parser over every chunk, tallied with C-level iteration.

    It also follows where the parse is (the top-level key and the index of the element under it), so a
    refusal names the record.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._events: list[tuple[str, Any]] = []
        self._parser = yajl2_c.basic_parse_basecoro(SimpleNamespace(send=self._events.append), use_float=True)
        self._depth = 0
        self._key: str | None = None  # the top-level key whose value is being read
        self._items = 0  # elements of that value started so far
        self._quiet = 0  # bytes read since the last complete value
        self._offset = 0

    def check(self, data: bytes) -> None:
        start, self._offset = self._offset, self._offset + len(data)
        self._parser.send(data)  # malformed JSON raises ijson's own error here, as the real parser would
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
