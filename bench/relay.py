"""A TCP relay in front of the S3 server that counts HTTP requests and can add latency to each.

Used to count the requests each tool sends when resuming a finished job (sci_fetch counts its own;
s5cmd and rclone do not say), and as a stand-in latency proxy when ``tests/fault_proxy.py`` is not
there. Counting is exact for the requests these tools send while downloading: GET/HEAD/LIST carry
no body, so the client's stream is a run of header blocks, one per request, each ending in a blank line.

For TLS (an ``https://`` upstream) the bytes are opaque, so the relay works by turns instead: the
latency is added whenever the client sends after the server has spoken (and to a connection's first
bytes), which for HTTP/1.1 without pipelining is once per request, plus once per handshake flight
(ClientHello, the client's Finished): a new TLS connection costs its round trips as on a WAN.
There it counts turns and connections, not requests (``requests`` is then ``null``).

As a process (so its CPU is nobody else's): ``python -m bench.relay UPSTREAM_URL [--latency 0.04]``
prints its URL on the first line (same scheme as the upstream), then
``{"requests": N, "turns": T, "connections": C}`` for every line it reads on stdin; it ends when
its stdin is closed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import threading
from urllib.parse import urlparse


class Relay:
    def __init__(self, upstream_url: str, latency: float = 0.0) -> None:
        u = urlparse(upstream_url)
        self.tls = u.scheme == "https"
        self.up_host, self.up_port = u.hostname or "127.0.0.1", u.port or (443 if self.tls else 80)
        self.latency = latency
        self.requests: int | None = None if self.tls else 0
        self.turns = 0
        self.connections = 0
        self.url: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._server: asyncio.base_events.Server | None = None

    async def _pipe_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Client to server. Requests here carry no body, so the stream is header blocks, each ending
        in a blank line: count those ends, and hold the first bytes of each request for the latency."""
        carry = b""
        at_start = True
        try:
            while data := await reader.read(1 << 16):
                if at_start and self.latency:
                    await asyncio.sleep(self.latency)
                window = carry + data
                self.requests += window.count(b"\r\n\r\n")
                at_start = window.endswith(b"\r\n\r\n")
                carry = b"" if at_start else window[-3:]
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            _close(writer)

    async def _pipe_client_turns(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server_spoke: list[bool]
    ) -> None:
        """Client to server, for opaque (TLS) bytes: latency before each client turn."""
        first = True
        try:
            while data := await reader.read(1 << 16):
                if first or server_spoke[0]:
                    first, server_spoke[0] = False, False
                    self.turns += 1
                    if self.latency:
                        await asyncio.sleep(self.latency)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            _close(writer)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server_spoke: list[bool] | None = None
    ) -> None:
        try:
            while data := await reader.read(1 << 18):
                if server_spoke is not None:
                    server_spoke[0] = True
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            _close(writer)

    async def _handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            u_reader, u_writer = await asyncio.open_connection(self.up_host, self.up_port)
        except OSError:
            c_writer.close()
            return
        try:
            if self.tls:
                spoke = [False]
                await asyncio.gather(
                    self._pipe_client_turns(c_reader, u_writer, spoke), self._pipe(u_reader, c_writer, spoke)
                )
            else:
                await asyncio.gather(self._pipe_client(c_reader, u_writer), self._pipe(u_reader, c_writer))
        except asyncio.CancelledError:  # the relay is closing
            pass

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=1024)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{port}"

    # -- in a thread ----------------------------------------------------------------------------
    def __enter__(self) -> Relay:
        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._serve())
            self._ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        if self._loop is not None:
            self._loop.close()


def _close(writer: asyncio.StreamWriter) -> None:
    """Close one side of a relayed connection; it may be gone already, which is fine here."""
    try:
        writer.close()
    except Exception:  # noqa: BLE001
        pass


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("upstream")
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with Relay(args.upstream, args.latency) as relay:
        print(relay.url, flush=True)
        for _line in sys.stdin:  # until the benchmark closes the pipe
            print(
                json.dumps({"requests": relay.requests, "turns": relay.turns, "connections": relay.connections}),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
