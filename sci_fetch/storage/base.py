"""The one interface the engine sees for object storage; S3 is its implementation (storage.s3).

Keeping the engine behind this protocol lets tests and future back-ends (local folders, GCS) plug in
without the engine knowing about botocore.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict


class ObjectInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    size: int
    etag: str | None = None
    md5: str | None = None  # of the bytes written (download) or from a plain ETag (head)
    attempts: int = 1
    checks: str | None = None  # what the bytes were checked against: "size,etag,id-md5" (no etag under SSE-KMS/SSE-C)


class Storage(Protocol):
    requests: int

    async def head(self, key: str) -> ObjectInfo:
        """Size and ETag of ``key``; raises MissingError, FatalError, ..."""

    async def download(self, key: str, dest: Path, expected_md5: str | None = None) -> ObjectInfo:
        """Fetch ``key`` into ``dest`` atomically and verified, or raise a FetchError/DiskError."""
