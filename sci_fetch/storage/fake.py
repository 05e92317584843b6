"""An in-memory Storage for tests: objects, ETags and scripted faults, no server (httpx's MockTransport,
s5cmd's mock storage).

``FakeBucket`` is the factory: ``download_with(settings, FakeBucket({...}))``. It is a plain dataclass, so it
pickles into the spawned children of ``--processes`` like S3Storage's factory does (each child then has its own
copy: faults scripted per key are used up per process). Requests go through the same retry loop and outage gate
as S3's (storage.attempts), and the bytes through the caller's sink, so what a unit test sees of attempts,
retries, outages and checks is what a real run does.

Faults are scripted per key and used up one per request (HEAD or GET), in order:

- ``"404"``: MissingError; ``"403"``: ForbiddenError; ``"401"``: FatalError (credentials)
- ``"503"``: TransientError (slowdown), retried
- ``"slow"``: the request waits ``slow_seconds`` first, then is answered
- ``"cut"``: half the body arrives, then the connection drops (a retried short body)
- ``"flip"``: one byte of the body is changed (the MD5 check fails it, retried)
- ``"outage"``: no answer at all (what the outage gate counts)

``offline`` (set on the storage while a test runs) makes every request, the gate's probe included, get no answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType

from sci_fetch.errors import FatalError, ForbiddenError, MissingError, TransientError
from sci_fetch.storage.attempts import with_retries
from sci_fetch.storage.base import Expected, ObjectInfo, SinkFactory
from sci_fetch.storage.options import StorageOptions
from sci_fetch.storage.rate import RequestRate, SharedRate
from sci_fetch.storage.reachability import Reachability
from sci_fetch.storage.retry import forbidden_hint

FAULTS = frozenset({"404", "403", "401", "503", "slow", "cut", "flip", "outage"})
_PLAIN = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class FakeBucket:
    """The objects of one bucket and the faults to serve; call it with StorageOptions for a FakeStorage."""

    objects: dict[str, bytes] = field(default_factory=dict)
    etags: dict[str, str] = field(default_factory=dict)  # key -> ETag, when not the MD5 (multipart, SSE-KMS)
    faults: dict[str, list[str]] = field(default_factory=dict)  # key -> faults, one used per request
    slow_seconds: float = 0.05
    chunk: int = 64 * 1024  # bytes per sink write

    def __post_init__(self) -> None:
        unknown = {f for faults in self.faults.values() for f in faults} - FAULTS
        if unknown:
            raise ValueError(f"unknown fault(s) {sorted(unknown)}; known: {sorted(FAULTS)}")

    def __call__(self, options: StorageOptions) -> FakeStorage:
        return FakeStorage(options, self)

    def etag(self, key: str) -> str:
        return self.etags.get(key) or hashlib.md5(self.objects[key]).hexdigest()


class FakeStorage:
    """The Storage contract over a FakeBucket; ``async with`` like S3Storage."""

    def __init__(self, options: StorageOptions, bucket: FakeBucket) -> None:
        self.options = options
        self.bucket = bucket
        self.requests = 0
        self.rate = RequestRate(SharedRate(1, options.max_requests_per_second))  # the fake is never throttled
        self.retries: Counter[str] = Counter()
        self.offline = False
        self.heads: list[str] = []  # keys HEADed, in order
        self.gets: list[str] = []  # keys GETted, in order (each attempt)
        self._faults = {key: list(faults) for key, faults in bucket.faults.items()}
        self.reachability = Reachability(
            options.describe(),
            self._probe,
            threshold=min(8, max(2, options.pool_size)),
            outage_limit=options.outage_limit,
        )

    async def __aenter__(self) -> FakeStorage:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.reachability.close()

    def _on_retry(self, reason: str) -> None:
        self.retries[reason] += 1

    async def _probe(self, key: str) -> bool:
        self.requests += 1
        return not self.offline

    async def _answer(self, op: str, key: str) -> str | None:
        """One request reaches the bucket: raise what the script says, else the fault left to apply to the body."""
        self.requests += 1
        src = f"s3://{self.options.bucket}/{key}"
        script = self._faults.get(key)
        fault = script.pop(0) if script else None
        if fault == "slow":
            await asyncio.sleep(self.bucket.slow_seconds)
        if self.offline or fault == "outage":
            error = TransientError(op, src, None, "ConnectionRefusedError: no answer (fake)", reason="connection")
            error.no_answer = True
            raise error
        self.reachability.on_answer()
        if fault == "404" or key not in self.bucket.objects:
            raise MissingError(op, src, None, "not found (NoSuchKey fake)")
        if fault == "403":
            error403 = ForbiddenError(
                op, src, None, f"missing, or no permission (AccessDenied); {self.options.describe()}"
            )
            error403.hint = forbidden_hint(self.options.anonymous)
            raise error403
        if fault == "401":
            raise FatalError(op, src, None, f"InvalidAccessKeyId; {self.options.describe()}: check the credentials")
        if fault == "503":
            raise TransientError(op, src, None, "SlowDown (fake)", reason="slowdown")
        return fault

    async def head(self, key: str) -> ObjectInfo:
        async def once() -> ObjectInfo:
            self.heads.append(key)
            await self._answer("head_object", key)
            etag = self.bucket.etag(key)
            return ObjectInfo(size=len(self.bucket.objects[key]), etag=etag, md5=etag if _PLAIN.match(etag) else None)

        info, _ = await with_retries(key, once, self.options, self.reachability, self._on_retry)
        return info

    async def download(self, key: str, sink: SinkFactory) -> ObjectInfo:
        info, attempts = await with_retries(
            key, lambda: self._download_once(key, sink), self.options, self.reachability, self._on_retry
        )
        return info.model_copy(update={"attempts": attempts})

    async def _download_once(self, key: str, sink: SinkFactory) -> ObjectInfo:
        self.gets.append(key)
        fault = await self._answer("get_object", key)
        data = self.bucket.objects[key]
        etag = self.bucket.etag(key)
        src = f"s3://{self.options.bucket}/{key}"
        body = data[: len(data) // 2] if fault == "cut" else data
        if fault == "flip" and body:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        async with sink() as out:
            for start in range(0, len(body), self.bucket.chunk):
                await out.write(body[start : start + self.bucket.chunk])
            if fault == "cut":
                raise TransientError(
                    "get", src, None, "BodyCut: the connection closed mid-body (fake)", reason="short-body"
                )
            kept = await out.commit(Expected(source=src, size=len(data), etag_md5=etag if _PLAIN.match(etag) else None))
        return ObjectInfo(size=kept.size, etag=etag, md5=kept.md5, checks=kept.checks)
