"""S3 behind the Storage interface: one aioboto3 session and client for the whole run, retries only here.

One connection pool for the run: keep-alive connections are reused across keys, so a GET does not pay a
TCP (or TLS) handshake, which is most of the latency on a real WAN. The hot GET goes out on the lean path
of storage.direct (signed by botocore's signer, sent by aiohttp); HEAD, credentials, region and endpoint
configuration stay with the aioboto3 client. The bytes go to a sink (files.sink): this module knows
nothing of files.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aioboto3
import botocore.exceptions as bce
from aiobotocore.config import AioConfig
from asyncio_throttle import Throttler
from botocore import UNSIGNED
from botocore.utils import get_environ_proxies

from sci_fetch.errors import FetchError, ForbiddenError, SciFetchError, TransientError, UsageError
from sci_fetch.storage.attempts import with_retries
from sci_fetch.storage.base import Expected, ObjectInfo, SinkFactory
from sci_fetch.storage.direct import DirectGet, Response, bucket_url
from sci_fetch.storage.options import StorageOptions
from sci_fetch.storage.reachability import Reachability
from sci_fetch.storage.retry import classify, forbidden_hint

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


def uses_proxy(client: Any) -> bool:
    """True when botocore sends this client's requests through an HTTP proxy (HTTPS_PROXY / HTTP_PROXY without
    a NO_PROXY match, decided by botocore's own ``get_environ_proxies``, or ``proxies`` in the client config):
    the lean GET speaks only to the endpoint itself, so GETs then stay on botocore's path, which honours it."""
    url = client.meta.endpoint_url
    if getattr(client.meta.config, "proxies", None):
        return True
    return bool(get_environ_proxies(url).get(urlsplit(url).scheme))


class S3Storage:
    """Async S3 reader; use as ``async with S3Storage(options) as storage``."""

    def __init__(self, options: StorageOptions) -> None:
        self.options = options
        self.requests = 0  # every HTTP request sent, retries included: "zero requests on resume" is checked on this
        self.retries: Counter[str] = Counter()
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._direct: DirectGet | None = None
        self._throttler = (
            Throttler(rate_limit=options.max_requests_per_second, period=1.0)
            if options.max_requests_per_second
            else None
        )
        self.reachability = Reachability(
            options.describe(),
            self._probe,
            threshold=min(8, max(2, options.pool_size)),
            outage_limit=options.outage_limit,
        )

    async def __aenter__(self) -> S3Storage:
        opts = self.options
        try:
            session = aioboto3.Session(profile_name=opts.profile or None, region_name=opts.region or None)
        except bce.ProfileNotFound as exc:
            raise UsageError(
                f"AWS profile {opts.profile!r} not found in ~/.aws/config or ~/.aws/credentials; set 'profile' to an existing profile, or to \"\" to use environment credentials"
            ) from exc
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
                session.client(
                    "s3",
                    endpoint_url=opts.endpoint_url or None,
                    config=config,
                    verify=str(opts.ca_bundle) if opts.ca_bundle else None,
                )
            )
        except ValueError as exc:
            raise UsageError(f"endpoint_url {opts.endpoint_url!r} is not usable: {exc}") from exc
        self._client.meta.events.register("before-send.s3", self._count_request)
        if opts.direct_get and not uses_proxy(self._client):
            credentials = None if opts.anonymous else await session.get_credentials()
            if credentials is None and not opts.anonymous:
                return self  # no credentials: the client's GET raises NoCredentialsError, mapped to one clear stop
            base = await bucket_url(self._client, opts.bucket)
            region = self._client.meta.region_name or opts.region or "us-east-1"
            self._direct = await self._stack.enter_async_context(DirectGet(opts, credentials, region, base))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.reachability.close()
        await self._stack.aclose()

    def _count_request(self, **_kwargs: Any) -> None:
        self.requests += 1

    def _on_retry(self, reason: str) -> None:
        self.retries[reason] += 1

    def _map(self, exc: Exception, op: str, key: str, dst: str | None) -> FetchError | None:
        mapped = classify(exc, op, f"s3://{self.options.bucket}/{key}", dst, self.options.describe())
        if isinstance(mapped, ForbiddenError):  # what to check travels on the error, for the engine and the plan
            mapped.hint = forbidden_hint(self.options.anonymous)
        return mapped

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
        return await with_retries(key, once, self.options, self.reachability, self._on_retry)

    async def head(self, key: str) -> ObjectInfo:
        async def once() -> ObjectInfo:
            resp = await self._call("head_object", key, None)
            etag = resp.get("ETag", "").strip('"')
            return ObjectInfo(size=int(resp["ContentLength"]), etag=etag, md5=plain_md5_etag(etag, resp))

        info, _ = await self._with_retries(key, once)
        return info

    async def download(self, key: str, sink: SinkFactory) -> ObjectInfo:
        """Stream ``key`` into a fresh sink per attempt, retrying per policy; the error carries the attempt
        count (the caller names the destination in it: ``dst``)."""
        info, attempts = await self._with_retries(key, lambda: self._download_once(key, sink, None))
        return info.model_copy(update={"attempts": attempts})

    def _get(self, key: str, dst: str | None) -> AbstractAsyncContextManager[Response]:
        return self._get_direct(key, dst) if self._direct is not None else self._get_client(key, dst)

    @asynccontextmanager
    async def _get_direct(self, key: str, dst: str | None) -> AsyncIterator[Response]:
        """The lean GET; its errors are mapped exactly as the client's (see _call)."""
        assert self._direct is not None
        if self._throttler is not None:
            async with self._throttler:
                pass
        self.requests += 1
        try:
            async with self._direct.get(key) as resp:
                self.reachability.on_answer()
                yield resp
        except bce.ClientError as exc:
            self.reachability.on_answer()
            raise self._map(exc, "get_object", key, dst) or exc from exc

    @asynccontextmanager
    async def _get_client(self, key: str, dst: str | None) -> AsyncIterator[Response]:
        """The same GET through the aioboto3 client (direct_get = false)."""
        resp = await self._call("get_object", key, dst)
        body = resp["Body"]
        headers = {k.lower(): v for k, v in resp["ResponseMetadata"].get("HTTPHeaders", {}).items()}
        headers.setdefault("content-length", str(resp["ContentLength"]))
        headers.setdefault("etag", resp.get("ETag", ""))

        async def chunks() -> AsyncIterator[bytes]:
            while chunk := await body.read(self.options.chunk_size):
                yield chunk

        async with body:
            yield Response(headers, chunks())

    async def _download_once(self, key: str, sink: SinkFactory, dst: str | None) -> ObjectInfo:
        src = f"s3://{self.options.bucket}/{key}"
        try:
            async with self._get(key, dst) as resp, sink() as out:
                etag = (resp.get("etag") or "").strip('"')
                sse = {
                    "ServerSideEncryption": resp.get("x-amz-server-side-encryption"),
                    "SSECustomerAlgorithm": resp.get("x-amz-server-side-encryption-customer-algorithm"),
                }
                announced = resp.get("content-length")
                if announced is not None and not (announced.isascii() and announced.isdigit()):
                    raise TransientError("get", src, dst, f"Content-Length {announced[:40]!r} is not a number")
                length = int(announced) if announced is not None else None
                async for chunk in resp.chunks:
                    await out.write(chunk)
                kept = await out.commit(Expected(source=src, size=length, etag_md5=plain_md5_etag(etag, sse)))
        except SciFetchError:
            raise  # already typed: integrity, disk, local file, a mapped S3 error
        except Exception as exc:  # network errors while streaming the body; anything unknown is a bug
            mapped = classify(exc, "get", src, dst, self.options.describe())
            if mapped is None:
                raise
            raise mapped from exc
        return ObjectInfo(size=kept.size, etag=etag, md5=kept.md5, checks=kept.checks)
