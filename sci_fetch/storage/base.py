"""The one interface the engine sees for object storage: S3 is its implementation (storage.s3), an
in-memory one (storage.fake) stands in for it in unit tests.

Keeping the engine behind this protocol lets tests and future back-ends (local folders, GCS) plug in
without the engine knowing about botocore. A run opens its storage through a ``StorageFactory``: one
picklable callable, so that the children of ``--processes`` open theirs the same way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from sci_fetch.storage.options import StorageOptions
from sci_fetch.storage.rate import RequestRate
from sci_fetch.storage.reachability import Reachability


class ObjectInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    size: int
    etag: str | None = None
    md5: str | None = None  # of the bytes written (download) or from a plain ETag (head)
    attempts: int = 1
    checks: str | None = None  # what the bytes were checked against: "size,etag,id-md5" (no etag under SSE-KMS/SSE-C)


@dataclass(frozen=True, slots=True)
class Expected:
    """What the server said the object is, for the sink to check the bytes against before it keeps them."""

    source: str  # s3://bucket/key, for messages
    size: int | None  # Content-Length; None for a chunked body, whose framing marks its own end
    etag_md5: str | None  # the ETag when it is the MD5 (not multipart, not SSE-KMS/SSE-C), else None


@dataclass(frozen=True, slots=True)
class Kept:
    """What a sink kept: the MD5 of the bytes and the checks they passed ("size,etag,id-md5")."""

    md5: str
    checks: str
    size: int  # bytes kept


class Sink(Protocol):
    """Where one attempt's bytes go (s5cmd's split: the storage reads, the sink owns files and checks).
    Used as ``async with``: leaving without ``commit`` discards everything written."""

    async def __aenter__(self) -> Sink: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def write(self, data: bytes | bytearray) -> None: ...

    async def commit(self, expected: Expected) -> Kept:
        """Check the bytes against ``expected`` (raising IntegrityError / PermanentError) and keep them."""
        ...


SinkFactory = Callable[[], Sink]  # a fresh sink per attempt


class Storage(Protocol):
    """Everything the engine and the planner use of a storage back-end; used as ``async with``.

    ``requests`` counts every request sent (retries included), ``retries`` counts retries by reason, live;
    ``reachability`` is the outage gate the requests go through (``down_since`` while the endpoint is down).
    Errors are sci_fetch's FetchError tree; a ForbiddenError carries in ``hint`` what to check."""

    requests: int
    retries: Counter[str]
    reachability: Reachability
    rate: RequestRate  # the run's adaptive request rate (storage.rate): its current value and the SlowDowns seen

    async def __aenter__(self) -> Storage: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def head(self, key: str) -> ObjectInfo:
        """Size and ETag of ``key``; raises MissingError, FatalError, ..."""
        ...

    async def download(self, key: str, sink: SinkFactory) -> ObjectInfo:
        """Stream ``key`` into a sink from ``sink()``, retrying per policy, or raise a FetchError/DiskError."""
        ...


# Opens (does not enter) the storage of a run; module-level functions and classes pickle, so a spawned
# child of --processes receives the same factory as its parent.
StorageFactory = Callable[[StorageOptions], Storage]
