"""S3 behind the Storage interface: one aioboto3 client for the whole run, retries only here.

One client means one connection pool: keep-alive connections are reused across keys, so a GET does
not pay a TCP (or TLS) handshake, which is most of the latency on a real WAN.
"""

from __future__ import annotations

import re
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path

import aioboto3
import botocore.exceptions as bce
from aiobotocore.config import AioConfig
from asyncio_throttle import Throttler
from botocore import UNSIGNED

from sci_fetch.errors import FetchError, IntegrityError, PermanentError, SciFetchError, UsageError
from sci_fetch.files.partial import PartialFile
from sci_fetch.files.verify import HEAD_BYTES, content_problem
from sci_fetch.storage.base import ObjectInfo
from sci_fetch.storage.options import StorageOptions
from sci_fetch.storage.retry import classify, retrying

_PLAIN_ETAG = re.compile(r"^[0-9a-f]{32}$")


def plain_md5_etag(etag: str | None) -> str | None:
    """The ETag when it is the object's MD5 (single-part upload, no SSE-KMS), else None."""
    if not etag:
        return None
    value = etag.strip('"').lower()
    return value if _PLAIN_ETAG.match(value) else None


class S3Storage:
    """Async S3 reader; use as ``async with S3Storage(options) as storage``."""

    def __init__(self, options: StorageOptions) -> None:
        self.options = options
        self.requests = 0  # every HTTP request sent, retries included: "zero requests on resume" is checked on this
        self.retries: Counter[str] = Counter()
        self._stack = AsyncExitStack()
        self._client = None
        self._throttler = Throttler(rate_limit=options.max_requests_per_second, period=1.0) if options.max_requests_per_second else None

    async def __aenter__(self) -> S3Storage:
        opts = self.options
        try:
            session = aioboto3.Session(profile_name=opts.profile or None, region_name=opts.region or None)
        except bce.ProfileNotFound as exc:
            raise UsageError(f"AWS profile {opts.profile!r} not found in ~/.aws/config or ~/.aws/credentials; set 'profile' to an existing profile, or to \"\" to use environment credentials") from exc
        config = AioConfig(
            max_pool_connections=max(opts.pool_size, 10),
            connect_timeout=opts.connect_timeout,
            read_timeout=opts.read_timeout,
            retries={"total_max_attempts": 1},  # retries are ours (storage.retry), not botocore's
            signature_version=UNSIGNED if opts.anonymous else None,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            tcp_keepalive=True,
        )
        try:
            self._client = await self._stack.enter_async_context(
                session.client("s3", endpoint_url=opts.endpoint_url or None, config=config)
            )
        except ValueError as exc:
            raise UsageError(f"endpoint_url {opts.endpoint_url!r} is not usable: {exc}") from exc
        self._client.meta.events.register("before-send.s3", self._count_request)
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self._stack.aclose()

    def _count_request(self, **_kwargs) -> None:
        self.requests += 1

    def _on_retry(self, reason: str) -> None:
        self.retries[reason] += 1

    async def _call(self, method: str, key: str, dst: str | None, **kwargs):
        if self._throttler is not None:
            async with self._throttler:
                pass
        try:
            return await getattr(self._client, method)(Bucket=self.options.bucket, Key=key, **kwargs)
        except FetchError:
            raise
        except Exception as exc:  # mapped, not swallowed: classify() turns it into sci_fetch's tree
            raise classify(exc, method, f"s3://{self.options.bucket}/{key}", dst, self.options.describe()) from exc

    async def head(self, key: str) -> ObjectInfo:
        async for attempt in retrying(self.options.max_attempts, self.options.retry_base_delay, self.options.retry_max_delay, self._on_retry):
            with attempt:
                resp = await self._call("head_object", key, None)
                etag = resp.get("ETag", "").strip('"')
                return ObjectInfo(size=int(resp["ContentLength"]), etag=etag, md5=plain_md5_etag(etag))
        raise AssertionError("unreachable")

    async def download(self, key: str, dest: Path, expected_md5: str | None = None) -> ObjectInfo:
        """GET ``key`` into ``dest`` verified, retrying per policy; the error carries the attempt count."""
        attempts = 0
        try:
            async for attempt in retrying(self.options.max_attempts, self.options.retry_base_delay, self.options.retry_max_delay, self._on_retry):
                with attempt:
                    attempts += 1
                    info = await self._download_once(key, dest, expected_md5)
                    return info.model_copy(update={"attempts": attempts})
        except FetchError as exc:
            exc.attempts = attempts
            raise
        raise AssertionError("unreachable")

    async def _download_once(self, key: str, dest: Path, expected_md5: str | None) -> ObjectInfo:
        src = f"s3://{self.options.bucket}/{key}"
        resp = await self._call("get_object", key, str(dest))
        body = resp["Body"]
        length = int(resp["ContentLength"])
        etag = resp.get("ETag", "").strip('"')
        chunk_size = self.options.chunk_size
        try:
            async with body:
                async with PartialFile(dest, fsync=self.options.fsync, spill_at=chunk_size) as out:
                    head = b""  # the first bytes, for content_problem()
                    while chunk := await body.read(chunk_size):
                        if len(head) < HEAD_BYTES:
                            head += chunk[: HEAD_BYTES - len(head)]
                        await out.write(chunk)

                    def check(md5: str) -> None:  # runs in commit's thread, before the rename
                        if out.size != length:
                            raise IntegrityError("get", src, str(dest), f"short body: got {out.size} of {length} bytes", reason="short-body")
                        etag_md5 = plain_md5_etag(etag)
                        if etag_md5 is not None and etag_md5 != md5:
                            raise IntegrityError("get", src, str(dest), f"MD5 {md5} does not match ETag {etag_md5}", reason="etag-mismatch")
                        if expected_md5 is not None and expected_md5 != md5:
                            raise IntegrityError("get", src, str(dest), f"MD5 {md5} does not match the md5 in the image id ({expected_md5})", reason="id-md5-mismatch")
                        problem = content_problem(head, out.size)
                        if problem is not None:  # the stored object itself is not an image: no retry fixes it
                            raise PermanentError("get", src, str(dest), problem, reason="not-an-image")

                    await out.commit(check)
                    md5 = out.md5()
        except SciFetchError:
            raise  # already typed: integrity, disk, local file
        except Exception as exc:  # network errors while streaming the body
            raise classify(exc, "get", src, str(dest), self.options.describe()) from exc
        return ObjectInfo(size=length, etag=etag, md5=md5)
