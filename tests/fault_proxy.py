"""A fault-injecting S3 reverse proxy on loopback, for the reliability tests and the benchmarks.

    with FaultProxy(s3.endpoint_url, seed=1, rates={"slowdown": 0.02, "reset": 0.02}) as proxy:
        settings = settings_for(s3, coco, out, endpoint_url=proxy.url)
        ...
        proxy.injected   # Counter of faults injected by kind
        proxy.requests   # requests received (faulted or not)

It speaks plain HTTP/1.1 with raw asyncio streams in a background thread, so it needs neither pytest
nor any package beyond the standard library. Requests are passed on byte for byte: the ``Host``
header stays what the client signed (SigV4 signs it), only the TCP connection goes to the upstream
address. Bodies are streamed in 64 KiB pieces, never held whole. Each client connection gets its own
keep-alive upstream connection, opened on first use.

For every request one number is drawn from ``random.Random(seed)``; it picks at most one fault
with the probabilities in ``rates`` (the draw happens even when all rates are 0, so a seed gives the
same sequence of choices whatever the rates are switched to). The kinds:

==========  ==========================================================================================
slowdown    ``503 SlowDown`` with S3's XML error body; the upstream is not asked
internal    ``500 InternalError`` with S3's XML error body; the upstream is not asked
reset       the response head and half of the body are sent, then the connection is reset (TCP RST)
short       the response head and part of the body are sent, then the connection is closed cleanly:
            the body is shorter than its Content-Length
stall       the response head and half of the body are sent, then nothing for ``stall_seconds``
            (set it above the client's read timeout), then the connection is closed
corrupt     the whole response is sent, with one byte in the middle of the body inverted: same length,
            wrong bytes (a bit flip no TCP checksum caught)
==========  ==========================================================================================

On a response whose body is not framed by a Content-Length (HEAD, 204, chunked) ``reset`` and
``stall`` act before the response head, and ``short`` and ``corrupt`` pass it through uncounted
(``history`` keeps each request's draw, ``injected`` counts what was done). ``latency`` seconds are added
before every request is answered (an ``asyncio.sleep``, so it costs no CPU and is accurate to about
a millisecond). ``refuse_credentials(after=N, code=...)`` lets N more requests through and then
answers every request as S3 answers a dead credential (``ExpiredToken`` echoes the session token in
``<Token-0>`` and ``InvalidAccessKeyId`` the key id in ``<AWSAccessKeyId>``, as S3 does, so tests can
check that sci_fetch does not repeat them).

``go_down()`` starts an outage: open connections are dropped and every new one is reset before a byte is
read (``outage_refused`` counts them) until ``come_up()``. ``forbid(*fragments)`` answers requests whose
target contains one of the fragments with ``403 AccessDenied`` (how S3 answers a missing key to a caller
that may not list the bucket); ``forbid("")`` refuses everything. ``set_encryption("aws:kms")`` (or
``"sse-c"``) makes GET and HEAD responses look like an SSE-KMS (SSE-C) object: the ETag becomes 32 hex
digits that are not the MD5 of the body, and the encryption header is added.

``limit_rate(n)`` answers ``503 SlowDown`` to every request above ``n`` per second, as a prefix of S3 does when it
is asked too much: a token bucket filled at ``n`` per second holding at most ``burst`` (default ``n / 10``, at
least 1), one token per request let through; ``limit_rate(None)`` lifts it, and it may be called mid-run to
lower the limit. ``injected["over-rate"]`` counts those answers.

``bucket_region("eu-west-1", mode)`` makes the proxy answer as S3's regional endpoints do for a bucket in
another region, judged by the region in the request's SigV4 credential scope (``Credential=AKID/date/REGION/...``):
``mode="400"`` answers a request signed for another region ``400 AuthorizationHeaderMalformed`` with
``<Region>`` in the XML and ``x-amz-bucket-region`` (a HEAD gets no body, as from S3); ``"301"`` answers
``301 PermanentRedirect`` with its XML and the header, ``"301-bare"`` the same without a body, ``"307"``
``307 TemporaryRedirect``; ``"307-always"`` answers 307 even to a request signed for the right region (a
redirect that cannot be followed). A HeadBucket gets ``x-amz-bucket-region`` as from S3; ``injected["wrong-region"]``
counts the refusals; ``bucket_region(None)`` turns it off.

Run ``python tests/fault_proxy.py --upstream http://127.0.0.1:8333 --latency 0.04`` for a standalone
proxy (it prints its URL, then a JSON line of counters when stopped with Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import signal
import socket
import struct
import sys
import threading
import uuid
from collections import Counter, deque
from typing import Any
from urllib.parse import unquote, urlsplit
from xml.sax.saxutils import escape

__all__ = ["KINDS", "FaultProxy"]

KINDS = ("slowdown", "internal", "reset", "short", "stall", "corrupt")
_PIECE = 1 << 16
_LIMIT = 1 << 20  # longest request or response head accepted

_SERVER_ERRORS = {
    "slowdown": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
    "internal": (500, "Internal Server Error", "InternalError", "We encountered an internal error. Please try again."),
}
_REFUSALS = {
    "ExpiredToken": (400, "Bad Request", "The provided token has expired."),
    "InvalidAccessKeyId": (403, "Forbidden", "The AWS Access Key Id you provided does not exist in our records."),
    "SignatureDoesNotMatch": (
        403,
        "Forbidden",
        "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
    ),
    "AccessDenied": (403, "Forbidden", "Access Denied"),
}
_CREDENTIAL = re.compile(rb"Credential=([^/,\s]+)/")
_SCOPE_REGION = re.compile(rb"Credential=[^/,\s]+/\d{8}/([^/,\s]+)/")
_REGION_MODES = {  # mode: (status, phrase, code or None for no body, answers even the right region)
    "400": (400, "Bad Request", "AuthorizationHeaderMalformed", False),
    "301": (301, "Moved Permanently", "PermanentRedirect", False),
    "301-bare": (301, "Moved Permanently", None, False),
    "307": (307, "Temporary Redirect", "TemporaryRedirect", False),
    "307-always": (307, "Temporary Redirect", "TemporaryRedirect", True),
}


class _Sink:
    """Collects bytes like a StreamWriter would send them (for request bodies)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(data)

    async def drain(self) -> None:
        return None


def _parse_head(head: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    lines = head[:-4].split(b"\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.strip(), value.strip()))
    return lines[0], headers


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _framing(headers: list[tuple[bytes, bytes]], no_body: bool) -> tuple[str, int]:
    """How the body of a message ends: ('none'|'length'|'chunked'|'close', length)."""
    if no_body:
        return "none", 0
    te = _header(headers, b"transfer-encoding")
    if te is not None and b"chunked" in te.lower():
        return "chunked", 0
    cl = _header(headers, b"content-length")
    if cl is not None:
        return "length", int(cl)
    return "close", 0


async def _relay_exact(reader: asyncio.StreamReader, writer: Any, n: int) -> None:
    while n > 0:
        piece = await reader.read(min(n, _PIECE))
        if not piece:
            raise asyncio.IncompleteReadError(b"", n)
        writer.write(piece)
        await writer.drain()
        n -= len(piece)


async def _relay_chunked(reader: asyncio.StreamReader, writer: Any) -> None:
    while True:
        line = await reader.readuntil(b"\r\n")
        writer.write(line)
        size = int(line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while True:  # trailers, then the empty line
                trailer = await reader.readuntil(b"\r\n")
                writer.write(trailer)
                if trailer == b"\r\n":
                    await writer.drain()
                    return
        await _relay_exact(reader, writer, size + 2)


async def _relay_to_eof(reader: asyncio.StreamReader, writer: Any) -> None:
    while piece := await reader.read(_PIECE):
        writer.write(piece)
        await writer.drain()


async def _flushed(writer: asyncio.StreamWriter) -> None:
    """Wait until what was written has left the process (not just the high-water mark)."""
    await writer.drain()
    while writer.transport.get_write_buffer_size():
        await asyncio.sleep(0.001)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST instead of a FIN."""
    sock = writer.get_extra_info("socket")
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.transport.abort()


def _close(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None:
        writer.transport.abort()


class FaultProxy:
    """A loopback reverse proxy that injects S3-like faults; a context manager (or start()/stop())."""

    def __init__(
        self,
        upstream_url: str,
        seed: int = 0,
        rates: dict[str, float] | None = None,
        latency: float = 0.0,
        stall_seconds: float = 5.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        parts = urlsplit(upstream_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http:// URL, got {upstream_url!r}")
        self.upstream = (parts.hostname, parts.port or 80)
        self.host = host
        self.port = port
        self.seed = seed
        self.latency = float(latency)
        self.stall_seconds = float(stall_seconds)
        self._rng = random.Random(seed)
        self._thresholds: list[tuple[float, str]] = []
        self.set_rates(**(rates or {}))
        self._refuse_from: int | None = None
        self._refuse_code = "ExpiredToken"
        self._down = False
        self.outage_refused = 0  # connections reset because of go_down()
        self._forbidden: tuple[str, ...] | None = None
        self._encryption: str | None = None
        self._rate_limit: float | None = None
        self._tokens = (0.0, 0.0, 0.0)  # (tokens, at loop time, burst): the rate limit's bucket
        self._region: tuple[str, str] | None = None  # (bucket's region, mode)
        self.requests = 0  # requests received, faulted or not
        self.forwarded = 0  # requests sent on to the upstream
        self.refused = 0  # requests answered with a credential refusal
        self.injected: Counter[str] = Counter()  # faults injected, by kind
        self.upstream_errors = 0  # the upstream could not be reached (client connection dropped)
        self.history: deque[tuple[int, str, str, str | None]] = deque(maxlen=100_000)  # (n, method, target, fate)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task] = set()

    # ---- control (callable from any thread) -------------------------------------------------------
    def set_rates(self, **rates: float) -> None:
        """Replace the per-request probability of each fault kind (unnamed kinds become 0)."""
        unknown = set(rates) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {KINDS}")
        total, thresholds = 0.0, []
        for kind in KINDS:
            rate = float(rates.get(kind, 0.0))
            if rate < 0:
                raise ValueError(f"rate of {kind} is negative")
            if rate:
                total += rate
                thresholds.append((total, kind))
        if total > 1.0 + 1e-9:
            raise ValueError(f"fault rates add up to {total} > 1")
        self._thresholds = thresholds  # one assignment: the proxy thread sees the old or the new list

    def set_latency(self, seconds: float) -> None:
        self.latency = float(seconds)

    def refuse_credentials(self, after: int = 0, code: str = "ExpiredToken") -> None:
        """Let ``after`` more requests through, then refuse every request with S3's ``code`` error."""
        if code not in _REFUSALS:
            raise ValueError(f"unknown refusal {code!r}; known: {sorted(_REFUSALS)}")
        self._refuse_code = code
        self._refuse_from = self.requests + after

    def accept_credentials(self) -> None:
        self._refuse_from = None

    def go_down(self) -> None:
        """An outage: drop open connections, reset new ones, until come_up()."""
        self._down = True
        if self._loop is not None:

            def drop() -> None:
                for task in list(self._connections):
                    task.cancel()

            self._loop.call_soon_threadsafe(drop)

    def come_up(self) -> None:
        self._down = False

    def forbid(self, *fragments: str) -> None:
        """403 AccessDenied for every request whose target contains one of ``fragments``."""
        self._forbidden = tuple(fragments) if fragments else None

    def set_encryption(self, kind: str | None) -> None:
        """'aws:kms' or 'sse-c': responses look like an encrypted object (ETag not the MD5); 'none': the same
        ETag without the encryption header (an ETag that lies); None: responses as they are."""
        if kind not in (None, "aws:kms", "sse-c", "none"):
            raise ValueError(f"unknown encryption {kind!r}")
        self._encryption = kind

    def limit_rate(self, per_second: float | None, burst: float | None = None) -> None:
        """503 SlowDown for every request above ``per_second`` (a token bucket holding ``burst``); None: no limit."""
        self._rate_limit = float(per_second) if per_second else None
        if self._rate_limit is not None:
            size = burst if burst is not None else max(1.0, self._rate_limit / 10)
            self._tokens = (min(self._tokens[0], size), self._tokens[1], size)

    def bucket_region(self, region: str | None, mode: str = "400") -> None:
        """Answer as S3 does for a bucket in ``region`` (see the module docstring for the modes); None: off."""
        if mode not in _REGION_MODES:
            raise ValueError(f"unknown region mode {mode!r}; known: {sorted(_REGION_MODES)}")
        self._region = (region, mode) if region else None

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "forwarded": self.forwarded,
            "refused": self.refused,
            "injected": dict(self.injected),
            "faults": sum(self.injected.values()),
            "upstream_errors": self.upstream_errors,
        }

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ---- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._serve, self.host, self.port, limit=_LIMIT, reuse_address=True)
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # reported to start()'s caller
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name=f"fault-proxy-{self.seed}", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return

        async def shutdown() -> None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---- the proxy ----------------------------------------------------------------------------------
    def _decide(self, start: bytes) -> str | None:
        """Count the request and draw its fate: None, a fault kind, or 'refuse'."""
        self.requests += 1
        draw = self._rng.random()
        fate = None
        if self._refuse_from is not None and self.requests > self._refuse_from:
            fate = "refuse"
        else:
            for threshold, kind in self._thresholds:
                if draw < threshold:
                    fate = kind
                    break
        method, _, rest = start.decode("latin-1").partition(" ")
        target = rest.rsplit(" ", 1)[0]
        if fate is None and self._forbidden is not None and any(f in unquote(target) for f in self._forbidden):
            fate = "forbid"
        self.history.append((self.requests, method, target, fate))
        return fate

    async def _serve(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if self._down:  # an outage: no answer at all
            self.outage_refused += 1
            _reset(cwriter)
            return
        self._connections.add(task)
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                try:
                    head = await creader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                start, headers = _parse_head(head)
                method = start.split(b" ", 1)[0].upper()
                if _header(headers, b"expect") is not None:
                    # Answer the 100-continue here and drop Expect (SigV4 never signs it).
                    cwriter.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    headers = [(k, v) for k, v in headers if k.lower() != b"expect"]
                    head = start + b"\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in headers) + b"\r\n"
                body = _Sink()
                kind, length = _framing(headers, no_body=False)
                if kind == "length":
                    await _relay_exact(creader, body, length)
                elif kind == "chunked":
                    await _relay_chunked(creader, body)
                fault = self._decide(start)
                if self.latency:
                    await asyncio.sleep(self.latency)
                client_close = (_header(headers, b"connection") or b"").lower() == b"close"
                policy = self._policy(headers) if fault is None else None
                if policy is not None:
                    cwriter.write(policy if method != b"HEAD" else policy.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n")
                    await cwriter.drain()
                    if client_close:
                        return
                    continue
                if fault in ("refuse", "forbid") or fault in _SERVER_ERRORS:
                    cwriter.write(self._error_response(fault, method, headers))
                    await cwriter.drain()
                    if client_close:
                        return
                    continue
                try:
                    upstream, rhead = await self._forward(upstream, head + b"".join(body.parts))
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    self.upstream_errors += 1
                    return
                self.forwarded += 1
                if self._region is not None and method == b"HEAD" and _is_bucket_root(start):
                    rhead = rhead[:-2] + f"x-amz-bucket-region: {self._region[0]}\r\n\r\n".encode()
                keep = await self._respond(method, rhead, upstream, cwriter, fault)
                if keep is not True:
                    _close(upstream[1])
                    upstream = None
                if keep is False or client_close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        except asyncio.CancelledError:
            return  # stop(): end quietly (3.11's stream callback logs a cancelled handler as an error)
        finally:
            if upstream is not None:
                _close(upstream[1])
            if not cwriter.transport.is_closing():
                cwriter.transport.close()
            self._connections.discard(task)

    async def _forward(self, upstream, request: bytes):
        """Send the request on the kept upstream connection (a fresh one if it was closed meanwhile)."""
        for attempt in (0, 1):
            if upstream is None:
                upstream = await asyncio.open_connection(*self.upstream, limit=_LIMIT)
            ureader, uwriter = upstream
            try:
                uwriter.write(request)
                await uwriter.drain()
                return upstream, await ureader.readuntil(b"\r\n\r\n")
            except (ConnectionError, asyncio.IncompleteReadError):
                _close(uwriter)
                upstream = None
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")

    async def _respond(self, method: bytes, rhead: bytes, upstream, cwriter: asyncio.StreamWriter, fault: str | None):
        """Relay one response, or break it as ``fault`` says. Returns True to keep both connections,
        'drop-upstream' to keep only the client's, False to close both."""
        ureader, _ = upstream
        start, rheaders = _parse_head(rhead)
        status = int(start.split(b" ", 2)[1])
        no_body = method == b"HEAD" or status in (204, 304) or 100 <= status < 200
        kind, length = _framing(rheaders, no_body)
        if fault in ("reset", "short", "stall") and kind == "length" and length >= 2:
            cut = length - max(1, length // 4) if fault == "short" else length // 2
            cwriter.write(rhead)
            await _relay_exact(ureader, cwriter, cut)
            await _flushed(cwriter)
            self.injected[fault] += 1
            if fault == "reset":
                await asyncio.sleep(0.005)  # let the client read the half body before the RST lands
                _reset(cwriter)
            elif fault == "short":
                cwriter.close()
            else:
                _close(upstream[1])
                await asyncio.sleep(self.stall_seconds)
                cwriter.transport.abort()
            return False
        if fault == "corrupt" and kind == "length" and length >= 1:
            self.injected[fault] += 1
            cwriter.write(rhead)
            await _relay_exact(ureader, cwriter, length // 2)
            cwriter.write(bytes([(await ureader.readexactly(1))[0] ^ 0xFF]))
            await _relay_exact(ureader, cwriter, length - length // 2 - 1)
            await cwriter.drain()
            return "drop-upstream" if (_header(rheaders, b"connection") or b"").lower() == b"close" else True
        if fault in ("reset", "stall"):  # a response without a body: break it before its head
            self.injected[fault] += 1
            if fault == "stall":
                _close(upstream[1])
                await asyncio.sleep(self.stall_seconds)
                cwriter.transport.abort()
            else:
                _reset(cwriter)
            return False
        cwriter.write(self._encrypted(rhead) if self._encryption and status == 200 else rhead)
        if kind == "length":
            await _relay_exact(ureader, cwriter, length)
        elif kind == "chunked":
            await _relay_chunked(ureader, cwriter)
        elif kind == "close":
            await _relay_to_eof(ureader, cwriter)
            await cwriter.drain()
            return False
        await cwriter.drain()
        if (_header(rheaders, b"connection") or b"").lower() == b"close":
            return "drop-upstream"
        return True

    def _policy(self, headers: list[tuple[bytes, bytes]]) -> bytes | None:
        """The answer of a bucket in another region, or of a prefix asked too much; None to pass the request on."""
        if self._region is not None:
            region, mode = self._region
            status, phrase, code, always = _REGION_MODES[mode]
            found = _SCOPE_REGION.search(_header(headers, b"authorization") or b"")
            signed_for = found.group(1).decode("latin-1") if found else None
            if always or (signed_for is not None and signed_for != region):
                self.injected["wrong-region"] += 1
                return _region_response(status, phrase, code, region, signed_for)
        if self._rate_limit is not None:
            now = asyncio.get_running_loop().time()
            tokens, at, burst = self._tokens
            tokens = min(burst, tokens + (now - at) * self._rate_limit) if at else burst
            if tokens < 1.0:
                self._tokens = (tokens, now, burst)
                self.injected["over-rate"] += 1
                return self._error_response("slowdown", b"GET", [], count=False)
            self._tokens = (tokens - 1.0, now, burst)
        return None

    def _encrypted(self, rhead: bytes) -> bytes:
        """The response head of the same object stored under SSE-KMS / SSE-C: another ETag, the SSE header."""
        start, headers = _parse_head(rhead)
        etag = uuid.uuid4().hex.encode()  # 32 hex digits, not the body's MD5
        headers = [(k, b'"' + etag + b'"' if k.lower() == b"etag" else v) for k, v in headers]
        if self._encryption == "none":
            pass
        elif self._encryption == "aws:kms":
            headers.append((b"x-amz-server-side-encryption", b"aws:kms"))
            headers.append(
                (b"x-amz-server-side-encryption-aws-kms-key-id", b"arn:aws:kms:us-west-2:111122223333:key/test")
            )
        else:
            headers.append((b"x-amz-server-side-encryption-customer-algorithm", b"AES256"))
            headers.append((b"x-amz-server-side-encryption-customer-key-MD5", b"dGVzdC1rZXktbWQ1LXRlc3Q="))
        return start + b"\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in headers) + b"\r\n"

    def _error_response(
        self, fault: str, method: bytes, headers: list[tuple[bytes, bytes]], count: bool = True
    ) -> bytes:
        request_id = uuid.uuid4().hex[:16].upper()
        extra = ""
        if fault == "forbid":
            code = "AccessDenied"
            status, phrase, message = _REFUSALS[code]
            self.injected[fault] += 1
        elif fault == "refuse":
            code = self._refuse_code
            status, phrase, message = _REFUSALS[code]
            self.refused += 1
            if code == "ExpiredToken":
                token = _header(headers, b"x-amz-security-token")
                if token:
                    extra = f"<Token-0>{escape(token.decode('latin-1'))}</Token-0>"
            elif code in ("InvalidAccessKeyId", "SignatureDoesNotMatch"):
                found = _CREDENTIAL.search(_header(headers, b"authorization") or b"")
                if found:
                    extra = f"<AWSAccessKeyId>{escape(found.group(1).decode('latin-1'))}</AWSAccessKeyId>"
        else:
            status, phrase, code, message = _SERVER_ERRORS[fault]
            self.injected[fault] += count
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{escape(message)}</Message>'
            f"{extra}<RequestId>{request_id}</RequestId><HostId>fault-proxy</HostId></Error>"
        ).encode()
        if method == b"HEAD":
            body = b""
        head = (
            f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}\r\n"
            f"x-amz-request-id: {request_id}\r\nServer: fault-proxy\r\n\r\n"
        ).encode()
        return head + body


def _is_bucket_root(start: bytes) -> bool:
    """A request for the bucket itself (HeadBucket), path style: ``HEAD /bucket`` with no key."""
    target = start.split(b" ")[1].split(b"?", 1)[0]
    return target.strip(b"/").count(b"/") == 0 and target.strip(b"/") != b""


def _region_response(status: int, phrase: str, code: str | None, region: str, signed_for: str | None) -> bytes:
    """What S3 answers for a bucket in ``region``: the status, ``x-amz-bucket-region``, and (unless bare) the XML."""
    request_id = uuid.uuid4().hex[:16].upper()
    body = b""
    if code == "AuthorizationHeaderMalformed":
        message = f"The authorization header is malformed; the region '{signed_for}' is wrong; expecting '{region}'"
        body = _xml(code, message, f"<Region>{region}</Region>", request_id)
    elif code is not None:
        message = "The bucket you are attempting to access must be addressed using the specified endpoint."
        body = _xml(code, message, f"<Endpoint>s3.{region}.amazonaws.com</Endpoint>", request_id)
    head = (
        f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}\r\n"
        f"x-amz-bucket-region: {region}\r\nx-amz-request-id: {request_id}\r\nServer: fault-proxy\r\n\r\n"
    ).encode()
    return head + body


def _xml(code: str, message: str, extra: str, request_id: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{escape(message)}</Message>'
        f"{extra}<RequestId>{request_id}</RequestId><HostId>fault-proxy</HostId></Error>"
    ).encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A fault-injecting S3 reverse proxy on loopback.")
    parser.add_argument("--upstream", required=True, help="the S3 endpoint to forward to, e.g. http://127.0.0.1:8333")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    parser.add_argument("--stall-seconds", type=float, default=5.0)
    for kind in KINDS:
        parser.add_argument(f"--{kind}", type=float, default=0.0, help=f"probability of a {kind} fault per request")
    args = parser.parse_args(argv)
    rates = {kind: getattr(args, kind) for kind in KINDS}
    proxy = FaultProxy(
        args.upstream,
        seed=args.seed,
        rates=rates,
        latency=args.latency,
        stall_seconds=args.stall_seconds,
        port=args.port,
    ).start()
    print(proxy.url, flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    proxy.stop()
    print(json.dumps(proxy.stats()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
