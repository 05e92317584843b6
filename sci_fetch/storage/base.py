"""The one interface the engine sees for object storage; S3 is its implementation (storage.s3).

Keeping the engine behind this protocol lets tests and future back-ends (local folders, GCS) plug in
without the engine knowing about botocore.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from pydantic import BaseModel, ConfigDict


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

    async def write(self, data: bytes) -> None: ...

    async def commit(self, expected: Expected) -> Kept:
        """Check the bytes against ``expected`` (raising IntegrityError / PermanentError) and keep them."""
        ...


SinkFactory = Callable[[], Sink]  # a fresh sink per attempt


class Storage(Protocol):
    requests: int

    async def head(self, key: str) -> ObjectInfo:
        """Size and ETag of ``key``; raises MissingError, FatalError, ..."""
        ...

    async def download(self, key: str, sink: SinkFactory) -> ObjectInfo:
        """Stream ``key`` into a sink from ``sink()``, retrying per policy, or raise a FetchError/DiskError."""
        ...
