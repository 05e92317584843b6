"""HTTP/1.1 GETs on a keep-alive connection pool, each body read straight into the buffer that is kept.

Why not aiohttp on this path: with the GET signed outside botocore, aiohttp's response machinery was the
largest piece of the client's CPU (20% in bench/results/2026-11-30-prof2.md, plus the event-loop wake-ups
of its stream reader): every socket read becomes a bytes object, goes through its parser and a
StreamReader, and is copied again when a chunk is assembled. An ``asyncio.BufferedProtocol`` lets the
kernel copy the body once, into a ``bytearray`` of the chunk's final size, and wakes the reader once per
chunk (one per object for camera-trap originals). What the bytes mean (status line, fields, framing,
chunked coding) is storage.http1's, which is llhttp's; this module is the I/O around it: keep-alive, a
connect timeout, a read timeout (no byte for ``read_timeout`` seconds) and a speed floor (fewer than
``speed_limit`` bytes/s for ``speed_time`` seconds, as curl's options of those names: a trickle, or an
endless run of interim 1xx heads, is cut). A reused connection the server closed while it idled is retried
once on a fresh one before anything is reported, as every pooled client does.

Errors are this module's own (``NoAnswer``, ``BodyCut``, ``BadResponse``, ``Stalled``) or the ones asyncio
raises (``TimeoutError``, ``ssl.SSLError``); storage.retry maps them. An exception inside a protocol
callback is handed to the request that waits, never to the event loop.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from sci_fetch.storage import http1

_SCRATCH = 64 * 1024  # read size while the framing is not known (head, chunked or until-close bodies)
_IDLE_LIMIT = 15.0  # seconds a pooled connection may idle before it is dropped (S3 closes after ~20 s)


class WireError(ConnectionError):
    """A connection-level failure of one request."""


class NoAnswer(WireError):
    """No response at all: cannot connect, or the connection closed before the status line."""


class BodyCut(WireError):
    """The connection ended in the middle of a response body."""


class BadResponse(WireError):
    """The server sent something that is not an HTTP/1.1 response (storage.http1 says what)."""


class Stalled(WireError):
    """The response came slower than the speed floor for the whole window (see ``Limits``)."""


class Response:
    """Status, headers (lower-case names) and the body, read chunk by chunk with ``chunks()``."""

    def __init__(self, conn: _Conn, head: http1.Head) -> None:
        self._conn = conn
        self.status = head.status
        self.headers = head.headers
        self.framing = head.framing.value  # "length", "chunked" or "close" (read until the server closes)

    async def chunks(self) -> AsyncIterator[bytes | bytearray]:
        """The body in chunks of at most the pool's chunk size; the last one ends the body."""
        while (chunk := await self._conn.next_chunk()) is not None:
            yield chunk

    async def read(self) -> bytes:
        return b"".join([c async for c in self.chunks()])


class _Conn(asyncio.BufferedProtocol):
    """One connection, one request at a time. Filled chunks wait in ``_ready`` for the reader; reading
    pauses while two are waiting, so a slow disk cannot make a response pile up in memory.

    What the bytes mean is storage.http1's (llhttp's) to say; this class only puts them somewhere. Nothing
    raised here may escape into the event loop (it would be a "Fatal error on transport" that stops the
    run): every error becomes the waiting request's."""

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
        self._parser = http1.ResponseParser()
        self.head: http1.Head | None = None
        self._remaining = 0  # length framing: body bytes not yet in a buffer
        self._cur: bytearray | None = None  # the chunk being filled (length framing)
        self._pos = 0
        self._ready: deque[bytes | bytearray] = deque()
        self._paused = False
        self.rate = _Rate()

    # --- asyncio callbacks: none of them may raise ----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.state == "body" and self.head is not None and self.head.framing is http1.Framing.CLOSE and exc is None:
            self.state = "done"  # the end of a read-until-close body
        elif self.state in ("head", "body") and self._error is None:
            text = f"{exc}" if exc else "the server closed the connection"
            if self.state == "body":
                self._error = BodyCut(f"{text} in the middle of the response")
            elif self._parser.received:
                self._error = BadResponse(f"{text} in the middle of the response head")
            else:
                self._error = NoAnswer(text)
        self._wake()

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost tells the reader

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._cur is not None:
            return memoryview(self._cur)[self._pos :]
        return memoryview(self._scratch)

    def buffer_updated(self, nbytes: int) -> None:
        self.last_io = self._loop.time()
        self.rate.add(self.last_io, nbytes)
        try:
            if self._cur is not None:  # a length-framed body, read in place: llhttp sees a view of it
                ended = self._parser.feed_in_place(memoryview(self._cur)[self._pos : self._pos + nbytes])
                self._pos += nbytes
                if self._pos == len(self._cur):
                    self._push_filled()
                if ended:
                    self.state = "done"
                    self._wake()
            elif self.state == "idle":
                raise BadResponse(f"{nbytes} bytes from the server while no request was waiting for them")
            else:
                self._on_events(self._parser.feed(memoryview(self._scratch)[:nbytes]))
        except http1.ProtocolError as exc:
            self._fail(BadResponse(f"bad HTTP/1.1 response: {exc}"), exc)
        except Exception as exc:  # a bug: not mapped, but handed to the request that waits, never to the loop
            self._fail(exc)

    # --- what the bytes were --------------------------------------------------------------------------
    def _on_events(self, events: list[http1.Event]) -> None:
        for event in events:
            if isinstance(event, http1.Body):
                self._take(event.data)
            elif isinstance(event, http1.Head):
                self._start_body(event)
            else:
                self.state = "done"
                self._wake()

    def _start_body(self, head: http1.Head) -> None:
        self.head, self.state = head, "body"
        self._wake()  # the head is there
        if head.framing is http1.Framing.LENGTH:
            self._remaining = head.length or 0
            self._next_buffer()

    def _take(self, data: memoryview | bytes) -> None:
        """Body bytes from the scratch buffer or llhttp's de-chunking: copied into the length-framed body's
        buffers, or passed on in pieces of at most a chunk."""
        if self._cur is None:
            for start in range(0, len(data), self._chunk_size):
                piece = data[start : start + self._chunk_size]
                self._put(piece if isinstance(piece, bytes) else bytes(piece))
            return
        while data and self._cur is not None:
            n = min(len(data), len(self._cur) - self._pos)
            self._cur[self._pos : self._pos + n] = data[:n]
            self._pos += n
            data = data[n:]
            if self._pos == len(self._cur):
                self._push_filled()

    def _next_buffer(self) -> None:
        """Allocate the next chunk of a length-framed body (the kernel reads straight into it)."""
        if self._remaining == 0:
            self._cur = None
            return
        size = min(self._remaining, self._chunk_size)
        self._remaining -= size
        self._cur, self._pos = bytearray(size), 0

    def _push_filled(self) -> None:
        assert self._cur is not None
        chunk = self._cur
        self._next_buffer()
        self._put(chunk)

    def _put(self, chunk: bytes | bytearray) -> None:
        """A chunk for the reader; reading pauses while two wait (a slow disk must not fill memory).

        Not over TLS when the server said it closes after this response: asyncio's and uvloop's TLS layers
        keep reading while the application is paused, and on the server's close they drop what they hold
        (up to ~256 KiB), so a whole body would look cut. Such a response is read to its end instead.
        Still needed with Python 3.11's asyncio and uvloop 0.23 (checked again for storage.http1: without
        it test_over_tls_a_server_that_closes_after_the_body_is_read_whole_by_a_slow_reader fails)."""
        self._ready.append(chunk)
        self._wake()
        keep_alive = self.head is not None and self.head.keep_alive
        if len(self._ready) >= 2 and self.transport is not None and not self._paused and (keep_alive or not self.tls):
            self._paused = True
            self.transport.pause_reading()

    # --- the reader's side --------------------------------------------------------------------------
    def _fail(self, exc: BaseException, cause: BaseException | None = None) -> None:
        if cause is not None:
            exc.__cause__ = cause
        if self._error is None:
            self._error = exc
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

    async def response(self) -> http1.Head:
        """Wait for the response head (status and headers); raise what ended the connection before it."""
        while self.state == "head" and self._error is None:
            await self._wait()
        if self.head is None:
            raise self._error or BadResponse("no response head")
        return self.head

    async def next_chunk(self) -> bytes | bytearray | None:
        while True:
            if self._ready:
                chunk = self._ready.popleft()
                if self._paused and len(self._ready) < 2 and self.transport is not None:
                    self._paused = False
                    self.rate.restart(self._loop.time())  # paused time is not the server's
                    self.transport.resume_reading()
                return chunk
            if self.state == "done":
                return None
            if self._error is not None:
                raise self._error
            await self._wait()

    def reusable(self) -> bool:
        return (
            self.state == "done"
            and self._parser.reusable
            and not self.closed
            and self._error is None
            and not self._ready
        )

    def waiting_since(self) -> float | None:
        """When the reader began waiting for bytes that have not come (None: not waiting)."""
        return self.last_io if self._waiter is not None and not self._paused else None

    def stalled(self, now: float, floor: float, window: float) -> str | None:
        """Why the transfer counts as stalled (curl's --speed-limit/--speed-time), or None."""
        if self._paused or self.state not in ("head", "body"):
            return None
        return self.rate.below(now, floor, window)


class _Rate:
    """Bytes per window since the first byte of a response: a tumbling window, restarted after a pause."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.total = 0
        self.at_start = 0

    def add(self, now: float, nbytes: int) -> None:
        if self.start is None:
            self.start = now
        self.total += nbytes

    def restart(self, now: float) -> None:
        if self.start is not None:
            self.start, self.at_start = now, self.total

    def below(self, now: float, floor: float, window: float) -> str | None:
        if self.start is None or now - self.start < window:
            return None
        got, span = self.total - self.at_start, now - self.start
        if got < floor * span:
            return f"{got} bytes in {span:.0f} s"
        self.start, self.at_start = now, self.total
        return None


@dataclass(frozen=True, slots=True)
class Limits:
    """How a pool behaves: its size, chunk size and the three ways a request gives up waiting."""

    size: int = 64
    chunk_size: int = 1 << 20
    connect_timeout: float = 10.0
    read_timeout: float = 60.0  # no byte at all for this long
    speed_limit: float = 1024.0  # fewer bytes/s than this for speed_time seconds (curl's --speed-limit); 0: off
    speed_time: float = 30.0


class Pool:
    """Keep-alive connections to one origin (scheme, host, port); ``async with``, then ``request()``."""

    def __init__(self, base_url: str, ssl_context: ssl.SSLContext | None, limits: Limits) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or ""
        default = 443 if parts.scheme == "https" else 80
        self.port = parts.port or default
        bracketed = f"[{self.host}]" if ":" in self.host else self.host
        self.netloc = bracketed if self.port == default else f"{bracketed}:{self.port}"  # Host, as botocore signs it
        self._ssl = ssl_context if parts.scheme == "https" else None
        self.limits = limits
        self._slots = asyncio.Semaphore(limits.size)
        self._idle: list[_Conn] = []
        self._busy: set[_Conn] = set()
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
        """The read timeout and the speed floor, for every busy connection at once: one timer, not one per
        socket read."""
        loop = asyncio.get_running_loop()
        limits = self.limits
        shortest = min(limits.read_timeout, limits.speed_time if limits.speed_limit > 0 else limits.read_timeout)
        period = max(0.05, min(1.0, shortest / 4))
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            for conn in list(self._busy):
                since = conn.waiting_since()
                if since is not None and now - since > limits.read_timeout:
                    conn._fail(TimeoutError(f"no data from {self.netloc} for {limits.read_timeout:g} s"))
                elif limits.speed_limit > 0 and (why := conn.stalled(now, limits.speed_limit, limits.speed_time)):
                    conn._fail(
                        Stalled(
                            f"transfer from {self.netloc} stalled: {why}, under speed_limit "
                            f"{limits.speed_limit:g} B/s for speed_time {limits.speed_time:g} s"
                        )
                    )

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Conn(loop, self.limits.chunk_size, self._ssl is not None),
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self._ssl else None,
                ),
                self.limits.connect_timeout,
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
            if (
                conn.transport is not None
                and not conn.closed
                and not conn.transport.is_closing()
                and now - conn.idle_since < _IDLE_LIMIT
            ):
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
            conn, answer = await self._answered(head)
            try:
                yield Response(conn, answer)
            finally:
                self._busy.discard(conn)
                if conn.reusable():
                    conn.idle_since = asyncio.get_running_loop().time()
                    self._idle.append(conn)
                elif conn.transport is not None:
                    conn.transport.abort()

    async def _answered(self, head: bytes) -> tuple[_Conn, http1.Head]:
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
                return conn, await conn.response()
            except BaseException as exc:
                self._busy.discard(conn)
                if conn.transport is not None:
                    conn.transport.abort()
                if fresh or not isinstance(exc, NoAnswer):
                    raise
        raise AssertionError("unreachable")
