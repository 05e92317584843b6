"""S3 behind the Storage interface: one aioboto3 client for the whole run, retries only here.

One client means one connection pool: keep-alive connections are reused across keys, so a GET does
not pay a TCP (or TLS) handshake, which is most of the latency on a real WAN.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TypeVar

import aioboto3
import botocore.exceptions as bce
from aiobotocore.config import AioConfig
from asyncio_throttle import Throttler
from botocore import UNSIGNED

from sci_fetch.errors import FetchError, IntegrityError, PermanentError, SciFetchError, TransientError, UsageError
from sci_fetch.files.partial import PartialFile
from sci_fetch.files.verify import HEAD_BYTES, content_problem
from sci_fetch.storage.base import ObjectInfo
from sci_fetch.storage.options import StorageOptions
from sci_fetch.storage.reachability import Reachability
from sci_fetch.storage.retry import Budget, classify, retrying

_PLAIN_ETAG = re.compile(r"^[0-9a-f]{32}$")
_KMS = frozenset({"aws:kms", "aws:kms:dsse"})


def plain_md5_etag(etag: str | None, response: Mapping[str, Any] | None = None) -> str | None:
    """The ETag when it is the object's MD5, else None: not for multipart uploads (``-N`` suffix), and not
    under SSE-KMS or SSE-C, where the ETag is 32 hex digits that are not the MD5 (the response says which)."""
    if not etag:
        return None
    if response is not None and (response.get("ServerSideEncryption") in _KMS or response.get("SSECustomerAlgorithm")):
        return None
    value = etag.strip('"').lower()
    return value if _PLAIN_ETAG.match(value) else None


T = TypeVar("T")


class S3Storage:
    """Async S3 reader; use as ``async with S3Storage(options) as storage``."""

    def __init__(self, options: StorageOptions) -> None:
        self.options = options
        self.requests = 0  # every HTTP request sent, retries included: "zero requests on resume" is checked on this
        self.retries: Counter[str] = Counter()
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._throttler = Throttler(rate_limit=options.max_requests_per_second, period=1.0) if options.max_requests_per_second else None
        self.reachability = Reachability(options.describe(), self._probe, threshold=min(8, max(2, options.pool_size)),
                                         outage_limit=options.outage_limit)

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

    async def __aexit__(self, *exc_info: object) -> None:
        await self.reachability.close()
        await self._stack.aclose()

    def _count_request(self, **_kwargs: Any) -> None:
        self.requests += 1

    def _on_retry(self, reason: str) -> None:
        self.retries[reason] += 1

    def _map(self, exc: Exception, op: str, key: str, dst: str | None) -> FetchError | None:
        return classify(exc, op, f"s3://{self.options.bucket}/{key}", dst, self.options.describe())

    async def _call(self, method: str, key: str, dst: str | None, **kwargs: Any) -> Any:
        if self._throttler is not None:
            async with self._throttler:
                pass
        try:
            response = await getattr(self._client, method)(Bucket=self.options.bucket, Key=key, **kwargs)
        except bce.ClientError as exc:
            self.reachability.on_answer()  # an error status is an answer: the endpoint is there
            raise self._map(exc, method, key, dst) or exc from exc
        except FetchError:
            raise
        except Exception as exc:  # mapped when known (httpx-style); a bug re-raises as itself
            mapped = self._map(exc, method, key, dst)
            if mapped is None:
                raise
            raise mapped from exc
        self.reachability.on_answer()
        return response

    async def _probe(self, key: str) -> bool:
        """One HEAD while the endpoint is down: True when the server answered anything at all."""
        try:
            await self._call("head_object", key, None)
        except TransientError as exc:
            return not exc.no_answer
        except FetchError:
            return True
        return True

    async def _with_retries(self, key: str, once: Callable[[], Awaitable[T]]) -> tuple[T, int]:
        """Run ``once`` under the retry policy and the outage gate; returns its result and the attempts counted."""
        budget = Budget(self.options.max_attempts)
        try:
            async for attempt in retrying(self.options.max_attempts, self.options.retry_base_delay,
                                          self.options.retry_max_delay, self._on_retry, budget):
                with attempt:
                    await self.reachability.ready()
                    budget.used += 1
                    try:
                        return await once(), budget.counted()
                    except TransientError as exc:
                        if exc.no_answer and budget.can_give_back():
                            if self.reachability.on_no_answer(key, exc, last_attempt=budget.last_attempt()):
                                budget.give_back()
                        raise
        except FetchError as exc:
            exc.attempts = budget.counted()
            raise
        raise AssertionError("unreachable")

    async def head(self, key: str) -> ObjectInfo:
        async def once() -> ObjectInfo:
            resp = await self._call("head_object", key, None)
            etag = resp.get("ETag", "").strip('"')
            return ObjectInfo(size=int(resp["ContentLength"]), etag=etag, md5=plain_md5_etag(etag, resp))

        info, _ = await self._with_retries(key, once)
        return info

    async def download(self, key: str, dest: Path, expected_md5: str | None = None) -> ObjectInfo:
        """GET ``key`` into ``dest`` verified, retrying per policy; the error carries the attempt count."""
        info, attempts = await self._with_retries(key, lambda: self._download_once(key, dest, expected_md5))
        return info.model_copy(update={"attempts": attempts})

    async def _download_once(self, key: str, dest: Path, expected_md5: str | None) -> ObjectInfo:
        src = f"s3://{self.options.bucket}/{key}"
        resp = await self._call("get_object", key, str(dest))
        body = resp["Body"]
        length = int(resp["ContentLength"])
        etag = resp.get("ETag", "").strip('"')
        etag_md5 = plain_md5_etag(etag, resp)
        checks = ["size", *(["etag"] if etag_md5 else []), *(["id-md5"] if expected_md5 else [])]
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
        except Exception as exc:  # network errors while streaming the body; anything unknown is a bug
            mapped = classify(exc, "get", src, str(dest), self.options.describe())
            if mapped is None:
                raise
            raise mapped from exc
        return ObjectInfo(size=length, etag=etag, md5=md5, checks=",".join(checks))
