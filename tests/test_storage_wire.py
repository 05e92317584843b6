"""storage.wire against a scripted HTTP server on loopback: framing, keep-alive, and each way a response fails."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
import threading

import pytest

from sci_fetch.demo.tls import make_certs
from sci_fetch.storage.wire import BadResponse, BodyCut, Limits, NoAnswer, Pool, Stalled


class Server:
    """Answers each request with the next scripted reply: bytes to send, then "close" or "keep"."""

    def __init__(self, replies: list[tuple[list[bytes], str]]) -> None:
        self.replies = list(replies)
        self.requests: list[bytes] = []
        self.connections = 0

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.replies:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(head)
                parts, then = self.replies.pop(0)
                for part in parts:
                    writer.write(part)
                    await writer.drain()
                    await asyncio.sleep(0)
                if then == "close":
                    break
                if then == "hang":
                    await asyncio.sleep(30)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


def ok(body: bytes, extra: str = "") -> bytes:
    return f'HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nETag: "x"\r\n{extra}\r\n'.encode() + body


def pool_for(server: Server, **kw) -> Pool:
    opts = dict(size=4, chunk_size=1 << 16, connect_timeout=2.0, read_timeout=5.0) | kw
    return Pool(f"http://127.0.0.1:{server.port}/b/", None, Limits(**opts))


async def get(pool: Pool, target: str = "/b/k") -> tuple[int, dict[str, str], bytes]:
    async with pool.request(target, [("X-Test", "1")]) as resp:
        return resp.status, resp.headers, await resp.read()


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request):
    """Each test on asyncio's loop and on uvloop (what a run uses when it is installed)."""
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed (the 'fast' extra)")
        return uvloop.run
    return asyncio.run


def test_a_body_in_many_reads_and_chunks_arrives_whole_and_the_connection_is_reused(run):
    body = os.urandom(300_000)

    async def main():
        async with Server(
            [([ok(body)[:1000], ok(body)[1000:200_000], ok(body)[200_000:]], "keep"), ([ok(b"second")], "keep")]
        ) as server:
            async with pool_for(server, chunk_size=50_000) as pool:
                status, headers, got = await get(pool)
                assert (status, headers["etag"], hashlib.md5(got).digest()) == (200, '"x"', hashlib.md5(body).digest())
                assert (await get(pool))[2] == b"second"
            assert server.connections == 1
            assert server.requests[0].startswith(b"GET /b/k HTTP/1.1\r\nHost: 127.0.0.1:")
            assert b"\r\nX-Test: 1\r\n" in server.requests[0]

    run(main())


def test_chunked_bodies_interim_responses_and_trailers_are_decoded(run):
    reply = (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\n<Erro\r\n3\r\nr/>\r\n0\r\nX-Trailer: t\r\n\r\n"
    )

    async def main():
        async with Server([([reply[:40], reply[40:70], reply[70:]], "keep"), ([ok(b"after")], "keep")]) as server:
            async with pool_for(server) as pool:
                assert (await get(pool))[::2] == (404, b"<Error/>")
                assert (await get(pool))[2] == b"after"  # the chunked response ended cleanly: same connection
            assert server.connections == 1

    run(main())


def test_a_body_without_length_is_read_until_close_and_the_connection_is_not_reused(run):
    async def main():
        async with Server([([b"HTTP/1.1 200 OK\r\n\r\nuntil", b" close"], "close"), ([ok(b"next")], "keep")]) as server:
            async with pool_for(server) as pool:
                assert (await get(pool))[2] == b"until close"
                assert (await get(pool))[2] == b"next"
            assert server.connections == 2

    run(main())


def test_a_pooled_connection_the_server_closed_is_replaced_silently(run):
    async def main():
        async with Server([([ok(b"one", "Connection: keep-alive\r\n")], "close"), ([ok(b"two")], "keep")]) as server:
            async with pool_for(server) as pool:
                assert (await get(pool))[2] == b"one"
                await asyncio.sleep(
                    0.1
                )  # the server's close reaches the pooled connection (or not yet: both must work)
                assert (await get(pool))[2] == b"two"
            assert server.connections == 2

    run(main())


def test_each_failure_is_its_own_error(run):
    async def main():
        async with Server([([], "close")]) as server:  # closes before any answer
            async with pool_for(server) as pool:
                with pytest.raises(NoAnswer):
                    await get(pool)
        async with Server([([ok(b"0123456789")[:-4]], "close")]) as server:  # cut in the body
            async with pool_for(server) as pool:
                with pytest.raises(BodyCut, match="middle of the response"):
                    await get(pool)
        async with Server([([b"SSH-2.0-OpenSSH\r\n\r\n"], "close")]) as server:
            async with pool_for(server) as pool:
                with pytest.raises(BadResponse, match="status line"):
                    await get(pool)
        async with Server([([ok(b"abc") + b"garbage"], "keep"), ([ok(b"clean")], "keep")]) as server:
            async with pool_for(server) as pool:  # the body is whole; the bytes after it spoil only the connection
                assert (await get(pool))[2] == b"abc"
                assert (await get(pool))[2] == b"clean"
            assert server.connections == 2
        async with Server([([ok(b"0123456789")[:-4]], "hang")]) as server:  # a stall: the read timeout
            async with pool_for(server, read_timeout=0.3) as pool:
                with pytest.raises(TimeoutError, match="no data"):
                    await get(pool)
        async with Server([]) as server:
            port = server.port
        async with Pool(
            f"http://127.0.0.1:{port}/", None, Limits(size=1, chunk_size=1 << 16, connect_timeout=2, read_timeout=2)
        ) as pool:
            with pytest.raises(NoAnswer, match="Cannot connect to host 127.0.0.1"):
                await get(pool, "/k")

    run(main())


def test_a_reader_that_stops_early_closes_the_connection_instead_of_reusing_it(run):
    body = os.urandom(200_000)

    async def main():
        async with Server([([ok(body)], "keep"), ([ok(b"fresh")], "keep")]) as server:
            async with pool_for(server, chunk_size=10_000) as pool:
                async with pool.request("/b/k", []) as resp:
                    first = await anext(resp.chunks())
                    assert first == body[:10_000]
                assert (await get(pool))[2] == b"fresh"
            assert server.connections == 2

    run(main())


def test_a_slow_reader_pauses_the_socket_and_still_gets_every_byte(run):
    body = os.urandom(3_000_000)

    async def main():
        async with Server([([ok(body)], "keep"), ([ok(b"next")], "keep")]) as server:
            async with pool_for(server, chunk_size=100_000) as pool:
                got = bytearray()
                async with pool.request("/b/k", []) as resp:
                    async for chunk in resp.chunks():
                        assert len(chunk) <= 100_000
                        got += chunk
                        await asyncio.sleep(0.001)  # a disk slower than the socket
                assert hashlib.md5(got).digest() == hashlib.md5(body).digest()
                assert (await get(pool))[2] == b"next"  # resumed and reusable after the pause
            assert server.connections == 1

    run(main())


def test_a_single_large_chunk_is_passed_on_in_pieces_and_its_crlf_is_checked(run):
    body = os.urandom(300_000)
    one_chunk = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + f"{len(body):x}\r\n".encode()
        + body
        + b"\r\n0\r\n\r\n"
    )
    bad_crlf = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n"

    async def main():
        async with Server([([one_chunk], "keep"), ([bad_crlf], "keep")]) as server:
            async with pool_for(server, chunk_size=50_000) as pool:
                async with pool.request("/b/k", []) as resp:
                    assert resp.framing == "chunked"
                    pieces = [bytes(c) async for c in resp.chunks()]
                assert b"".join(pieces) == body and max(map(len, pieces)) <= 50_000
                with pytest.raises(BadResponse, match="LF after chunk data"):
                    await get(pool)

    run(main())


def _tls_server(certs, body: bytes, ready: threading.Event, port: list[int]) -> None:
    """A blocking TLS server: one response with Connection: close, then close_notify and FIN."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.cert, certs.key)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port.append(listener.getsockname()[1])
        ready.set()
        conn, _ = listener.accept()
        tls = context.wrap_socket(conn, server_side=True)
        head = b""
        while b"\r\n\r\n" not in head:
            head += tls.recv(4096)
        tls.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        tls.unwrap().close()  # close_notify, then the TCP close


@pytest.mark.parametrize("body_size", [300_000, 2_300_000])
def test_over_tls_a_server_that_closes_after_the_body_is_read_whole_by_a_slow_reader(run, tmp_path, body_size):
    """asyncio's and uvloop's TLS layers drop what they hold when the server closes while the application
    has paused reading: the pool must not pause a response the server said it closes after."""
    certs = make_certs(tmp_path / "certs")
    body = os.urandom(body_size)
    ready, port = threading.Event(), []
    threading.Thread(target=_tls_server, args=(certs, body, ready, port), daemon=True).start()
    assert ready.wait(30)

    async def main():
        context = ssl.create_default_context(cafile=str(certs.ca))
        chunk = 64 * 1024 if body_size < 1_000_000 else 1 << 20
        async with Pool(
            f"https://127.0.0.1:{port[0]}/",
            context,
            Limits(size=1, chunk_size=chunk, connect_timeout=10, read_timeout=30),
        ) as pool:
            async with pool.request("/k", []) as resp:
                conn = next(iter(pool._busy))
                for _ in range(3000):  # a slow disk: nothing is consumed until the server's close has arrived
                    if conn.closed:
                        break
                    await asyncio.sleep(0.01)
                assert conn.closed
                got = bytearray()
                async for piece in resp.chunks():
                    got += piece
            assert len(got) == len(body) and hashlib.md5(got).digest() == hashlib.md5(body).digest()

    run(main())


def test_the_lean_get_refuses_a_200_it_cannot_tell_whole_from_cut(run):
    from sci_fetch.storage.direct import DirectGet
    from sci_fetch.storage.options import StorageOptions

    async def main():
        async with Server([([b"HTTP/1.1 200 OK\r\n\r\nno length"], "close")]) as server:
            options = StorageOptions(bucket="b", anonymous=True)
            async with DirectGet(options, None, "us-east-1", f"http://127.0.0.1:{server.port}/b/") as direct:
                with pytest.raises(BadResponse, match="neither Content-Length nor chunked"):
                    async with direct.get("k"):
                        pass

    run(main())


ODD_REPLIES = {
    "Content-Length: superscript two": (
        b"HTTP/1.1 200 OK\r\nContent-Length: \xc2\xb2\r\n\r\nab",
        "Invalid character in Content-Length",
    ),
    "two identical Content-Length": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab",
        "Duplicate Content-Length",
    ),
    "chunked with Content-Length: abc": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: abc\r\n\r\n2\r\nab\r\n0\r\n\r\n",
        "Content-Length can't be present with Transfer-Encoding",
    ),
    "xchunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\nab", "Transfer-Encoding 'xchunked'"),
    "bad chunk size after a good head": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6_4\r\n" + b"x" * 100,
        "Invalid character in chunk size",
    ),
}


@pytest.mark.parametrize("name", list(ODD_REPLIES))
def test_an_odd_reply_is_that_requests_bad_response_and_never_reaches_the_event_loop(run, name):
    reply, words = ODD_REPLIES[name]

    async def main():
        loop_errors: list[dict] = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: loop_errors.append(context))
        async with Server([([reply], "keep"), ([ok(b"next")], "keep")]) as server:
            async with pool_for(server) as pool:
                with pytest.raises(BadResponse, match=words):
                    await get(pool)
                assert (await get(pool))[2] == b"next"  # a fresh connection: the bad one is closed
            assert server.connections == 2
        assert loop_errors == []

    run(main())


def test_a_bug_inside_a_protocol_callback_is_the_requests_error_not_the_event_loops(run, monkeypatch):
    def broken(self, data):
        raise RuntimeError("a bug in the parser glue")

    monkeypatch.setattr("sci_fetch.storage.http1.ResponseParser.feed", broken)

    async def main():
        loop_errors: list[dict] = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: loop_errors.append(context))
        async with Server([([ok(b"abc")], "keep")]) as server:
            async with pool_for(server) as pool:
                with pytest.raises(RuntimeError, match="a bug in the parser glue"):
                    await get(pool)
        assert loop_errors == []

    run(main())


class Trickle(Server):
    """Sends ``head`` at once, then ``drip`` every ``every`` seconds until the client goes away."""

    def __init__(self, head: bytes, drip: bytes, every: float) -> None:
        super().__init__([])
        self.head, self.drip, self.every = head, drip, every

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            self.requests.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(self.head)
            while True:
                await writer.drain()
                await asyncio.sleep(self.every)
                writer.write(self.drip)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


@pytest.mark.parametrize(
    "head, drip",
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", b"x"),  # a body at 20 bytes/s
        (b"", b"HTTP/1.1 100 Continue\r\n\r\n"),  # interim heads, never the response
    ],
    ids=["trickling body", "endless 100 Continue"],
)
def test_a_transfer_under_the_speed_floor_for_the_window_is_cut(run, head, drip):
    async def main():
        async with Trickle(head, drip, every=0.05) as server:
            async with pool_for(server, read_timeout=30.0, speed_limit=2000.0, speed_time=0.5) as pool:
                with pytest.raises(Stalled, match=r"stalled: \d+ bytes in \d+ s, under speed_limit 2000 B/s"):
                    await get(pool)

    run(main())


def test_a_reader_that_paused_the_socket_is_not_taken_for_a_stall(run):
    body = os.urandom(1_000_000)

    async def main():
        async with Server([([ok(body)], "keep")]) as server:
            async with pool_for(server, chunk_size=50_000, speed_limit=1_000_000.0, speed_time=0.2) as pool:
                got = bytearray()
                async with pool.request("/b/k", []) as resp:
                    async for chunk in resp.chunks():
                        got += chunk
                        if len(got) == 100_000:
                            await asyncio.sleep(1.0)  # a disk that stalls: reading pauses, the floor does not apply
                assert hashlib.md5(got).digest() == hashlib.md5(body).digest()

    run(main())


@pytest.mark.parametrize(
    "exc, reason, no_answer",
    [
        (BadResponse("bad HTTP/1.1 response: Duplicate Content-Length (in the header fields)"), "connection", False),
        (Stalled("transfer from s3 stalled: 20 bytes in 30 s, under speed_limit 1024 B/s"), "stalled", False),
        (BodyCut("the server closed the connection in the middle of the response"), "connection", False),
        (NoAnswer("the server closed the connection"), "connection", True),
    ],
)
def test_wire_errors_are_retried_transient_errors_that_keep_their_words(exc, reason, no_answer):
    from sci_fetch.errors import TransientError
    from sci_fetch.storage.retry import classify

    err = classify(exc, "get", "s3://b/k", "/out/k", "bucket 'b'")
    assert type(err) is TransientError and err.reason == reason and err.no_answer is no_answer
    assert str(exc) in str(err) and type(exc).__name__ in str(err)
