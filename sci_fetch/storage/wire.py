"""HTTP/1.1 GETs on a keep-alive connection pool, each body read straight into the buffer that is kept.

Why not aiohttp on this path: with the GET signed outside botocore, aiohttp's response machinery was the
largest piece of the client's CPU (20% in bench/results/2026-11-30-prof2.md, plus the event-loop wake-ups
of its stream reader): every socket read becomes a bytes object, goes through its parser and a
StreamReader, and is copied again when a chunk is assembled. An ``asyncio.BufferedProtocol`` lets the
kernel copy the body once, into a ``bytearray`` of the chunk's final size, and wakes the reader once per
chunk (one per object for camera-trap originals). The protocol is the small part of HTTP/1.1 a GET needs:
Content-Length, chunked and read-until-close bodies, keep-alive per RFC 9112, a connect timeout and a
read timeout (no byte for ``read_timeout`` seconds). A reused connection the server closed while it idled
is retried once on a fresh one before anything is reported, as every pooled client does.

Errors are this module's own (``NoAnswer``, ``BodyCut``, ``BadResponse``) or the ones asyncio raises
(``TimeoutError``, ``ssl.SSLError``); storage.retry maps them, and nothing else is caught here.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

_HEAD_LIMIT = 64 * 1024  # a response head larger than this is refused
_SCRATCH = 64 * 1024  # read size while the framing is not known (head, chunked or until-close bodies)
_IDLE_LIMIT = 15.0  # seconds a pooled connection may idle before it is dropped (S3 closes after ~20 s)


class WireError(ConnectionError):
    """A connection-level failure of one request."""


class NoAnswer(WireError):
    """No response at all: cannot connect, or the connection closed before the status line."""


class BodyCut(WireError):
    """The connection ended in the middle of a response body."""


class BadResponse(WireError):
    """The server sent something that is not an HTTP/1.1 response."""


class Response:
    """Status, headers (lower-case names) and the body, read chunk by chunk with ``chunks()``."""

    def __init__(self, conn: _Conn, status: int, headers: dict[str, str]) -> None:
        self._conn = conn
        self.status = status
        self.headers = headers
        self.framing = conn._framing  # "length", "chunked" or "close" (read until the server closes)

    async def chunks(self) -> AsyncIterator[bytearray]:
        """The body in chunks of at most the pool's chunk size; the last one ends the body."""
        while (chunk := await self._conn.next_chunk()) is not None:
            yield chunk

    async def read(self) -> bytes:
        return b"".join([c async for c in self.chunks()])


class _Conn(asyncio.BufferedProtocol):
    """One connection, one request at a time. Filled chunks wait in ``_ready`` for the reader; reading
    pauses while two are waiting, so a slow disk cannot make a response pile up in memory."""

    def __init__(self, loop: asyncio.AbstractEventLoop, chunk_size: int, tls: bool = False) -> None:
        self._loop = loop
        self._chunk_size = chunk_size
        self.tls = tls
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.last_io = 0.0  # when a byte last arrived while one was awaited, for the read timeout
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._scratch = bytearray(_SCRATCH)
        self._reset()

    def _reset(self) -> None:
        self.state = "idle"  # idle -> head -> body -> done
        self._head = bytearray()
        self._status = 0
        self._headers: dict[str, str] = {}
        self._framing = ""  # "length", "chunked" or "close"
        self._remaining = 0  # length framing: body bytes not yet in a buffer
        self._cur: bytearray | None = None  # the chunk being filled (length framing)
        self._pos = 0
        self._raw = bytearray()  # chunked framing: bytes not yet decoded
        self._chunk_left = -1  # chunked framing: bytes left of the current chunk (0: its CRLF; -1: at a size line)
        self._trailers = False  # chunked framing: the last chunk came, trailer lines follow
        self._ready: deque[bytearray] = deque()
        self._keep_alive = True
        self._paused = False

    # --- asyncio callbacks ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.state == "body" and self._framing == "close" and exc is None:
            self.state = "done"  # the end of a read-until-close body
        elif self.state in ("head", "body") and self._error is None:
            text = f"{exc}" if exc else "the server closed the connection"
            self._error = (
                NoAnswer(text)
                if self.state == "head" and not self._head
                else (
                    BodyCut(f"{text} in the middle of the response")
                    if self.state == "body"
                    else BadResponse(f"{text} in the middle of the response head")
                )
            )
        self._wake()

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost tells the reader

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._cur is not None:
            return memoryview(self._cur)[self._pos :]
        return memoryview(self._scratch)

    def buffer_updated(self, nbytes: int) -> None:
        self.last_io = self._loop.time()
        if self._cur is not None:
            self._pos += nbytes
            if self._pos == len(self._cur):
                self._push_filled()
            return
        data = memoryview(self._scratch)[:nbytes]
        try:
            if self.state == "head":
                self._feed_head(data)
            elif self.state == "body":
                self._feed_body(bytes(data))
            else:
                raise BadResponse(f"{nbytes} bytes from the server while no request was waiting for them")
        except WireError as exc:
            self._fail(exc)

    # --- parsing ------------------------------------------------------------------------------------
    def _feed_head(self, data: memoryview) -> None:
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > _HEAD_LIMIT:
                raise BadResponse(f"response head longer than {_HEAD_LIMIT} bytes")
            return
        rest = bytes(self._head[end + 4 :])
        lines = self._head[:end].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise BadResponse(f"not an HTTP/1.1 status line: {lines[0][:80]!r}")
        status = int(parts[1])
        if 100 <= status < 200:  # an interim response: the real one follows
            self._head = bytearray()
            if rest:
                self._feed_head(memoryview(rest))
            return
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise BadResponse(f"malformed header line {line[:80]!r}")
            name = name.strip().lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self._status, self._headers = status, headers
        self._keep_alive = parts[0] == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
        self._start_body(rest)

    def _start_body(self, rest: bytes) -> None:
        headers = self._headers
        self.state = "body"
        if self._status in (204, 304):
            self._framing, self._remaining = "length", 0
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self._framing = "chunked"
        elif (length := headers.get("content-length")) is not None:
            if not length.isdigit():
                raise BadResponse(f"Content-Length {length!r} is not a number")
            self._framing, self._remaining = "length", int(length)
        else:
            self._framing, self._keep_alive = "close", False
        self._wake()  # the head is there
        if self._framing == "length":
            self._next_buffer()
            if rest:
                self._fill_from(memoryview(rest))
        elif rest:
            self._feed_body(rest)

    def _next_buffer(self) -> None:
        """Allocate the next chunk of a length-framed body (the kernel reads straight into it)."""
        if self._remaining == 0:
            self._cur = None
            self.state = "done"
            self._wake()
            return
        size = min(self._remaining, self._chunk_size)
        self._remaining -= size
        self._cur, self._pos = bytearray(size), 0

    def _fill_from(self, data: memoryview) -> None:
        """Bytes that came with the head, copied into the body's buffers (at most one scratch read)."""
        while data and self._cur is not None:
            n = min(len(data), len(self._cur) - self._pos)
            self._cur[self._pos : self._pos + n] = data[:n]
            self._pos += n
            data = data[n:]
            if self._pos == len(self._cur):
                self._push_filled()
        if data:
            raise BadResponse(f"{len(data)} bytes after the end of the response body")

    def _push_filled(self) -> None:
        assert self._cur is not None
        chunk = self._cur
        self._next_buffer()
        self._put(chunk)

    def _put(self, chunk: bytearray) -> None:
        """A chunk for the reader; reading pauses while two wait (a slow disk must not fill memory).

        Not over TLS when the server said it closes after this response: asyncio's and uvloop's TLS layers
        keep reading while the application is paused, and on the server's close they drop what they hold
        (up to ~256 KiB), so a whole body would look cut. Such a response is read to its end instead."""
        self._ready.append(chunk)
        self._wake()
        if (
            len(self._ready) >= 2
            and self.transport is not None
            and not self._paused
            and (self._keep_alive or not self.tls)
        ):
            self._paused = True
            self.transport.pause_reading()

    def _feed_body(self, data: bytes) -> None:
        if self._framing == "close":
            self._put(bytearray(data))
            return
        self._raw += data
        while self.state == "body":
            if self._chunk_left > 0:  # inside a chunk: pass its bytes on as they come, at most a chunk_size each
                if not self._raw:
                    return
                n = min(len(self._raw), self._chunk_left, self._chunk_size)
                piece = self._raw[:n]
                del self._raw[:n]
                self._chunk_left -= n
                self._put(piece)
                continue
            if self._chunk_left == 0:  # a chunk's data ends with CRLF
                if len(self._raw) < 2:
                    return
                if self._raw[:2] != b"\r\n":
                    raise BadResponse("chunk data not followed by CRLF")
                del self._raw[:2]
                self._chunk_left = -1
                continue
            nl = self._raw.find(b"\r\n")
            if nl < 0:
                if len(self._raw) > _HEAD_LIMIT:
                    raise BadResponse("chunk-size line too long")
                return
            line = bytes(self._raw[:nl])
            del self._raw[: nl + 2]
            if self._trailers:  # after the last chunk: trailer lines up to an empty one
                if not line:
                    self.state = "done"
                    self._wake()
                continue
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BadResponse(f"bad chunk size {line[:20]!r}") from None
            if size == 0:
                self._trailers = True
            else:
                self._chunk_left = size
        if self._raw:
            raise BadResponse(f"{len(self._raw)} bytes after the end of the response body")

    # --- the reader's side --------------------------------------------------------------------------
    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._keep_alive = False
        if self.transport is not None:
            self.transport.abort()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        self._waiter = self._loop.create_future()
        self.last_io = self._loop.time()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def send(self, request: bytes) -> None:
        assert self.transport is not None
        if self.transport.is_closing():
            raise NoAnswer("the connection closed before the request was sent")
        if self._paused:
            self.transport.resume_reading()
        self._reset()
        self.state = "head"
        self.transport.write(request)

    async def response(self) -> None:
        """Wait for the response head (status and headers); raise what ended the connection before it."""
        while self.state == "head" and self._error is None:
            await self._wait()
        if self.state == "head" and self._error is not None:
            raise self._error

    async def next_chunk(self) -> bytearray | None:
        while True:
            if self._ready:
                chunk = self._ready.popleft()
                if self._paused and len(self._ready) < 2 and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                return chunk
            if self.state == "done":
                return None
            if self._error is not None:
                raise self._error
            await self._wait()

    def reusable(self) -> bool:
        return self.state == "done" and self._keep_alive and not self.closed and self._error is None and not self._ready

    def waiting_since(self) -> float | None:
        """When the reader began waiting for bytes that have not come (None: not waiting)."""
        return self.last_io if self._waiter is not None and not self._paused else None


class Pool:
    """Keep-alive connections to one origin (scheme, host, port); ``async with``, then ``request()``."""

    def __init__(
        self,
        base_url: str,
        ssl_context: ssl.SSLContext | None,
        *,
        size: int,
        chunk_size: int,
        connect_timeout: float,
        read_timeout: float,
    ) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or ""
        default = 443 if parts.scheme == "https" else 80
        self.port = parts.port or default
        bracketed = f"[{self.host}]" if ":" in self.host else self.host
        self.netloc = bracketed if self.port == default else f"{bracketed}:{self.port}"  # Host, as botocore signs it
        self._ssl = ssl_context if parts.scheme == "https" else None
        self._slots = asyncio.Semaphore(size)
        self._idle: list[_Conn] = []
        self._busy: set[_Conn] = set()
        self._chunk_size = chunk_size
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._watchdog: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Pool:
        self._watchdog = asyncio.create_task(self._watch())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
        for conn in [*self._idle, *self._busy]:
            if conn.transport is not None:
                conn.transport.close()
        self._idle.clear()

    async def _watch(self) -> None:
        """The read timeout, for every busy connection at once: one timer, not one per socket read."""
        loop = asyncio.get_running_loop()
        period = max(0.05, min(1.0, self._read_timeout / 4))
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            for conn in list(self._busy):
                since = conn.waiting_since()
                if since is not None and now - since > self._read_timeout:
                    conn._fail(TimeoutError(f"no data from {self.netloc} for {self._read_timeout:g} s"))

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Conn(loop, self._chunk_size, self._ssl is not None),
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self._ssl else None,
                ),
                self._connect_timeout,
            )
        except (TimeoutError, ssl.SSLError):  # OSError subclasses with meanings of their own (storage.retry)
            raise
        except OSError as exc:
            raise NoAnswer(
                f"Cannot connect to host {self.netloc} ssl:{self._ssl is not None} [{exc.strerror or exc}]"
            ) from exc
        return conn

    def _take_idle(self) -> _Conn | None:
        now = asyncio.get_running_loop().time()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and not conn.transport.is_closing() and now - conn.idle_since < _IDLE_LIMIT:
                return conn
            if conn.transport is not None:
                conn.transport.close()
        return None

    @asynccontextmanager
    async def request(self, target: str, headers: Iterable[tuple[str, str]]) -> AsyncIterator[Response]:
        """GET ``target`` (path and query, encoded); the connection goes back to the pool only when the
        body was read to its end, else it is closed."""
        head = "".join(
            [f"GET {target} HTTP/1.1\r\nHost: {self.netloc}\r\n", *[f"{k}: {v}\r\n" for k, v in headers], "\r\n"]
        ).encode("latin-1")
        async with self._slots:
            conn = await self._answered(head)
            try:
                yield Response(conn, conn._status, conn._headers)
            finally:
                self._busy.discard(conn)
                if conn.reusable():
                    conn.idle_since = asyncio.get_running_loop().time()
                    self._idle.append(conn)
                elif conn.transport is not None:
                    conn.transport.abort()

    async def _answered(self, head: bytes) -> _Conn:
        """Send on a pooled connection, or a new one; a pooled one the server closed while it idled is
        replaced once, silently (the request never reached the server)."""
        conn = self._take_idle()
        for fresh in (conn is None, True):
            if fresh:
                conn = await self._connect()
            assert conn is not None
            self._busy.add(conn)
            try:
                conn.send(head)
                await conn.response()
                return conn
            except BaseException as exc:
                self._busy.discard(conn)
                if conn.transport is not None:
                    conn.transport.abort()
                if fresh or not isinstance(exc, NoAnswer):
                    raise
        raise AssertionError("unreachable")
