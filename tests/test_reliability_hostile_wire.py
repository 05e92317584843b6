"""A real ``download`` against a raw-socket S3 stand-in on loopback whose one key answers oddly (issue 21,
items 1, 2 and 4): that image ends ``failed`` with a reason naming what was wrong, every other image
``done``, exit 1, and no traceback; a trickling reply is cut by the speed floor and the run ends by itself."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable
from types import SimpleNamespace
from urllib.parse import unquote

import pytest
from helpers import animl_image, random_blobs, write_coco
from test_reliability_support import failures, rows, start

from sci_fetch.manifest.models import State

N = 20
ODD = 7  # the index of the image whose key answers oddly


class RawS3:
    """Answers ``GET /<bucket>/<key>`` from a dict; ``odd(writer)`` writes the reply of the odd key. A
    thread with its own loop, so the test can wait on a subprocess meanwhile."""

    def __init__(self, objects: dict[str, bytes], odd_key: str, odd: Callable) -> None:
        self.objects, self.odd_key, self.odd = objects, odd_key, odd
        self.odd_requests = 0
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RawS3:
        self._thread.start()
        assert self._ready.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _shutdown(self) -> None:
        """Stop serving and end every connection's task (a trickle never ends by itself)."""
        self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = unquote(head.split(b" ", 2)[1].decode())
                key = path.split("/", 2)[2] if path.count("/") >= 2 else ""
                if key == self.odd_key:
                    self.odd_requests += 1
                    await self.odd(writer)
                    return
                body = self.objects.get(key)
                if body is None:
                    writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                else:
                    etag = hashlib.md5(body).hexdigest()
                    writer.write(f'HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nETag: "{etag}"\r\n\r\n'.encode())
                    writer.write(body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def replying(raw: bytes) -> Callable:
    async def odd(writer: asyncio.StreamWriter) -> None:
        writer.write(raw)
        await writer.drain()

    return odd


def trickling(head: bytes, every: float) -> Callable:
    async def odd(writer: asyncio.StreamWriter) -> None:
        writer.write(head)
        while True:  # until the client gives up (the write fails) or the server stops
            await writer.drain()
            await asyncio.sleep(every)
            writer.write(b"x")

    return odd


@pytest.fixture
def job(tmp_path):
    blobs = random_blobs(N, seed=21, sizes=[2_000, 30_000, 200_000])
    images = [animl_image("wire", b, camera=f"CAM{i % 2}") for i, b in enumerate(blobs)]
    coco = write_coco(tmp_path / "coco.json", images)
    objects = {img["serving_bucket_key"]: b for img, b in zip(images, blobs, strict=True)}
    return SimpleNamespace(
        coco=coco, images=images, blobs=blobs, objects=objects, odd_key=images[ODD]["serving_bucket_key"]
    )


def run_against(server: RawS3, job, out, *flags: str) -> tuple[int, str]:
    creds = SimpleNamespace(access_key="AKIDRAWSERVER", secret_key="raw-server-secret")
    proc = start(creds, job.coco, out, "--max-attempts", "2", "--retry-base-delay", "0.01", *flags, endpoint=server.url)
    output, _ = proc.communicate(timeout=600)  # a bound for a hung run, never a timing
    return proc.returncode, output


def check_only_the_odd_one_failed(job, out, output: str) -> str:
    by_id = rows(out / ".sci-fetch" / "manifest.sqlite")
    for i, (image, data) in enumerate(zip(job.images, job.blobs, strict=True)):
        row = by_id[image["id"]]
        if i == ODD:
            assert row.state is State.failed, (row, output)
            assert not (out / image["file_name"]).exists()
        else:
            assert row.state is State.done, (row, output)
            assert (out / image["file_name"]).read_bytes() == data
    assert "Traceback" not in output and "Fatal error" not in output, output
    (failure,) = failures(SimpleNamespace(state_file=lambda stem, ext: out / ".sci-fetch" / f"{stem}.{ext}"))
    assert failure["key"] == job.odd_key and failure["attempts"] == "2"
    return failure["reason"]


ODD_REPLIES = {
    "Content-Length: superscript two": (
        b'HTTP/1.1 200 OK\r\nContent-Length: \xc2\xb2\r\nETag: "x"\r\n\r\nab',
        "Invalid character in Content-Length",
    ),
    "two identical Content-Length headers": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        "Duplicate Content-Length",
    ),
    "chunked with Content-Length: abc": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: abc\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "Content-Length can't be present with Transfer-Encoding",
    ),
    "Transfer-Encoding: xchunked with Content-Length": (
        b'HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\nContent-Length: 5\r\nETag: "0-2"\r\n\r\n'
        b"5\r\nhello\r\n0\r\n\r\n",
        "Content-Length can't be present with Transfer-Encoding",
    ),
    "Transfer-Encoding: xchunked alone": (
        b'HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\nETag: "0-2"\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
        "Transfer-Encoding 'xchunked'",
    ),
}


@pytest.mark.parametrize("name", list(ODD_REPLIES))
def test_one_odd_reply_fails_that_image_only_and_names_the_header(job, tmp_path, name):
    reply, words = ODD_REPLIES[name]
    out = tmp_path / "out"
    with RawS3(job.objects, job.odd_key, replying(reply)) as server:
        # --no-verify-id-md5: the odd image is checked by its size alone, as a multipart upload would be
        code, output = run_against(server, job, out, "--no-verify-id-md5")
    assert code == 1, output
    reason = check_only_the_odd_one_failed(job, out, output)
    assert "BadResponse" in reason and words in reason, reason
    assert server.odd_requests == 2  # a protocol error of one GET is retried like any other


def test_a_trickling_reply_is_cut_by_the_speed_floor_and_the_run_ends_by_itself(job, tmp_path):
    out = tmp_path / "out"
    head = b'HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nETag: "0-2"\r\n\r\n'
    with RawS3(job.objects, job.odd_key, trickling(head, every=0.2)) as server:
        code, output = run_against(
            server, job, out, "--speed-limit", "100", "--speed-time", "1", "--read-timeout", "60"
        )
    assert code == 1, output
    reason = check_only_the_odd_one_failed(job, out, output)
    assert "Stalled" in reason and "under speed_limit 100 B/s for speed_time 1 s" in reason, reason
