"""HTTP/1.1 responses, bytes in and events out, with llhttp's grammar (httptools): no I/O here.

The way h11 and httpcore split protocol from I/O: storage.wire owns the socket and the buffers, this module
says what the bytes mean. Feed it what the socket read; it answers with events — ``Head`` (status, headers,
framing), ``Body`` pieces, ``End`` — or raises ``ProtocolError``, its only error. The status line, the
fields, the framing decision of RFC 9112 §6.3, the chunked coding and trailers are llhttp's (the parser of
Node.js and uvicorn), in its strict mode: one valid Content-Length, no Content-Length beside
Transfer-Encoding, hex chunk sizes only, CRLF line ends, no obs-fold, a three-digit status.

Two llhttp parsers, because httptools copies every body piece it reports into a new ``bytes``:
- the head and a Content-Length body go through one that reports no body pieces, so the caller can let the
  kernel read the body straight into the buffer it keeps and only show llhttp a view of those bytes; llhttp
  then skips them in O(1) and must end the message on exactly the last byte of the announced length (else a
  ``ProtocolError``), so where the body ends is still llhttp's decision. Feeding a 600 KB body to llhttp in
  256 KiB pieces costs 20 µs with body pieces and 2.3 µs without (bench/results/2026-12-02-http1.md), and
  the pieces would then be copied again into the kept buffer: about 2% of a GET's client CPU, on the
  hottest path of a run;
- a chunked or read-until-close body (error replies, proxies; not S3's 200s) goes through a second parser,
  fed the same head, that reports the de-chunked pieces.
One thing llhttp cannot say through httptools: the end of a read-until-close body (it has no
``llhttp_finish``), so ``End`` for it comes from the connection's close, which storage.wire reports.
A transfer coding other than ``chunked`` alone is refused: llhttp would pass ``gzip, chunked`` through
de-chunked but still compressed, and those would not be the object's bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

import httptools

HEAD_LIMIT = 64 * 1024  # response heads, interim 1xx heads included, longer than this are refused
_BLANK = re.compile(b"\r\n\r\n")  # the end of a head (llhttp's strict mode takes no bare LF)


class ProtocolError(Exception):
    """The bytes are not an HTTP/1.1 response this client accepts; the message names the part."""


class Framing(str, Enum):
    LENGTH = "length"  # Content-Length (or no body at all: 204, 304, Content-Length: 0)
    CHUNKED = "chunked"
    CLOSE = "close"  # neither: the body runs until the server closes the connection


@dataclass(frozen=True, slots=True)
class Head:
    status: int
    headers: dict[str, str]  # lower-case names, latin-1 values; repeated fields joined with ", " (RFC 9110 §5.3)
    framing: Framing
    length: int | None  # LENGTH: the body's size in bytes
    keep_alive: bool  # llhttp's verdict: HTTP/1.1 without "Connection: close"


@dataclass(frozen=True, slots=True)
class Body:
    data: memoryview | bytes  # LENGTH: a view of the fed bytes (copy it before the caller's buffer is reused)


@dataclass(frozen=True, slots=True)
class End:
    """The response is complete."""


Event = Head | Body | End


class _Stop(Exception):  # noqa: N818 - not an error: halts llhttp at the start of a message that must not come
    pass


class _Recorder:
    """llhttp's callbacks, recorded; ``pieces`` is set only on the parser that reports body pieces."""

    def __init__(self, with_body: bool) -> None:
        self.parser: httptools.HttpResponseParser | None = None
        self.headers: dict[str, str] = {}
        self.in_head = True
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self.pieces: list[bytes] = []
        self.status_seen = False
        if with_body:
            self.on_body = self.pieces.append

    def next_message(self) -> None:
        self.headers, self.in_head, self.head_done, self.complete = {}, True, False, False
        self.status_seen = False

    def on_status(self, reason: bytes) -> None:
        self.status_seen = True

    @property
    def where(self) -> str:
        return "header fields" if self.status_seen else "status line"

    def on_message_begin(self) -> None:
        if self.complete:  # bytes after the end of the response this parser was given
            raise _Stop

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.in_head:  # after the head: trailer fields of a chunked body, not kept
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        self.in_head, self.head_done = False, True
        assert self.parser is not None
        self.keep_alive = self.parser.should_keep_alive()  # valid here and only here (llhttp's docs)

    def on_message_complete(self) -> None:
        self.complete = True


def _parser(recorder: _Recorder) -> httptools.HttpResponseParser:
    parser = httptools.HttpResponseParser(recorder)
    recorder.parser = parser
    return parser


def _feed(parser: httptools.HttpResponseParser, data: memoryview | bytes, where: str | _Recorder) -> bool:
    """Feed llhttp; False when it stopped at the start of a message after the complete one. ``where``
    names the part of the response the bytes are in, for the error's message."""
    try:
        parser.feed_data(data)
    except httptools.HttpParserCallbackError as exc:
        if isinstance(exc.__context__, _Stop):
            return False
        raise  # a bug in a callback above: not a property of the response
    except httptools.HttpParserUpgrade:
        raise ProtocolError("101 Switching Protocols to a GET that asked for no upgrade") from None
    except httptools.HttpParserError as exc:
        part = where if isinstance(where, str) else where.where
        raise ProtocolError(f"{exc or type(exc).__name__} (in the {part})") from exc
    return True


class ResponseParser:
    """One response to one GET. ``feed(bytes)`` → events; after ``End``, ``reusable`` says whether the
    connection may carry another request (llhttp's keep-alive, and no byte came after the response)."""

    def __init__(self, head_limit: int = HEAD_LIMIT) -> None:
        self._limit = head_limit
        self._head = bytearray()
        self._fed = 0  # bytes of the current head already given to llhttp
        self._head_total = 0  # bytes of every head so far, interim 1xx heads included
        self._rec = _Recorder(with_body=False)
        self._llhttp = _parser(self._rec)
        self._body: tuple[_Recorder, httptools.HttpResponseParser] | None = None  # chunked / close bodies
        self.head: Head | None = None
        self.received = 0  # bytes given to feed() (not those of feed_in_place)
        self.done = False
        self.trailing = 0  # bytes received after the end of the response
        self._left = 0  # LENGTH: body bytes still to come

    @property
    def reusable(self) -> bool:
        return self.done and self.trailing == 0 and self.head is not None and self.head.keep_alive

    def feed(self, data: memoryview | bytes) -> list[Event]:
        """Any bytes the connection read, in order; events for what they completed."""
        self.received += len(data)
        if self.done:
            self.trailing += len(data)
            return []
        if self.head is None:
            return self._feed_head(data)
        return self._feed_body(memoryview(data))

    def _feed_head(self, data: memoryview | bytes) -> list[Event]:
        """Head bytes go to llhttp as they come (a bad status line fails at once), but never past the blank
        line that ends the head: what follows is the body, which the caller may read elsewhere. A head that
        came whole is not copied: the blank line is searched in the caller's buffer."""
        buf = memoryview(data) if not self._head else memoryview(bytes(self._head) + bytes(data))
        start, fed = 0, self._fed  # where the current head starts in buf; how far llhttp has seen it
        while self.head is None:
            blank = _BLANK.search(buf, max(start, fed - 3))
            end = len(buf) if blank is None else blank.end()
            self._check_limit(end - start)
            _feed(self._llhttp, buf[fed:end], self._rec)
            fed = end
            if blank is None:
                self._head, self._fed = bytearray(buf[start:]), end - start
                return []
            self._head_total += end - start
            self.head = self._parse_head(bytes(buf[start:end]))
            start = end
        self._head, self._fed = bytearray(), 0
        rest = buf[start:]
        events: list[Event] = [self.head]
        if self.done:
            events.append(End())
            self.trailing += len(rest)
        elif rest:
            events += self._feed_body(rest)
        return events

    def _check_limit(self, size: int) -> None:
        if self._head_total + size > self._limit:
            raise ProtocolError(f"response head longer than {self._limit} bytes (interim 1xx heads included)")

    def _parse_head(self, raw: bytes) -> Head | None:
        """One head, up to its blank line, through llhttp; None for an interim 1xx response."""
        rec = self._rec
        if not rec.head_done:  # cannot happen with llhttp's strict CRLF rule; kept as a guard
            raise ProtocolError("llhttp did not end the response head at its blank line")
        status = self._llhttp.get_status_code()
        if 100 <= status < 200:
            rec.next_message()
            return None
        framing, length = self._framing(rec, raw)
        if framing is Framing.LENGTH:
            self._left = length or 0
            self.done = self._left == 0
        return Head(status, rec.headers, framing, length, rec.keep_alive)

    def _framing(self, rec: _Recorder, raw: bytes) -> tuple[Framing, int | None]:
        """RFC 9112 §6.3 as llhttp applied it: no body when llhttp ended the message with its head (204,
        304, Content-Length: 0); chunked; the one Content-Length llhttp checked; else until close."""
        if rec.complete:
            return Framing.LENGTH, 0
        coding = rec.headers.get("transfer-encoding")
        if coding is None and "content-length" in rec.headers:
            return Framing.LENGTH, int(rec.headers["content-length"])  # digits only: llhttp checked it
        if coding is not None and coding.strip().lower() != "chunked":
            raise ProtocolError(
                f"Transfer-Encoding {coding[:60]!r}: only chunked is supported (the body would not be the object's bytes)"
            )
        body = _Recorder(with_body=True)
        self._body = (body, _parser(body))
        _feed(self._body[1], raw, "response head")
        return (Framing.CHUNKED if coding is not None else Framing.CLOSE), None

    def _feed_body(self, data: memoryview) -> list[Event]:
        if self._body is not None:
            rec, parser = self._body
            whole = _feed(parser, data, f"{self.head.framing.value if self.head else ''} body")
            decoded: list[Event] = [Body(piece) for piece in rec.pieces]
            rec.pieces.clear()
            if rec.complete:
                self.done = True
                self.trailing += 0 if whole else 1  # at least one byte came after the end
                decoded.append(End())
            return decoded
        take = min(len(data), self._left)
        piece = data[:take]
        events: list[Event] = [Body(piece)] if take else []
        if self.feed_in_place(piece):
            self.trailing += len(data) - take
            events.append(End())
        return events

    def feed_in_place(self, data: memoryview) -> bool:
        """Bytes of a length-framed body that the caller already put in its own buffer (at most what is
        left of the body): llhttp counts them without a copy. True when they end the response."""
        _feed(self._llhttp, data, "body")
        self._left -= len(data)
        if self._rec.complete != (self._left == 0):
            raise ProtocolError("llhttp ended the body at another length than its Content-Length")
        self.done = self._left == 0
        return self.done
