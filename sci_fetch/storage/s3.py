"""S3 behind the Storage interface: one aioboto3 session and client for the whole run; its attempts go
through storage.attempts (the one retry loop) and its errors are mapped once, in ``_map``.

One connection pool for the run: keep-alive connections are reused across keys, so a GET does not pay a
TCP (or TLS) handshake, which is most of the latency on a real WAN. The hot GET goes out on the lean path
of storage.direct (signed by storage.signing, sent on storage.wire's pool, its reply read by storage.http1 on
llhttp); HEAD, credentials, region and endpoint configuration stay with the aioboto3 client. The bytes go to a sink (files.sink): this module knows
nothing of files.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aioboto3
import botocore.exceptions as bce
from aiobotocore.config import AioConfig
from asyncio_throttle.throttler import Throttler
from botocore import UNSIGNED
from botocore.utils import get_environ_proxies

from sci_fetch.errors import FetchError, ForbiddenError, SciFetchError, TransientError, UsageError
from sci_fetch.storage.attempts import with_retries
from sci_fetch.storage.base import Expected, ObjectInfo, SinkFactory
from sci_fetch.storage.direct import DirectGet, Response, bucket_url
from sci_fetch.storage.options import StorageOptions
from sci_fetch.storage.rate import RequestRate, SharedRate
from sci_fetch.storage.reachability import Reachability
from sci_fetch.storage.region import WrongRegion, bucket_region
from sci_fetch.storage.retry import classify, forbidden_hint

_PLAIN_ETAG = re.compile(r"^[0-9a-f]{32}$")
_KMS = frozenset({"aws:kms", "aws:kms:dsse"})
log = logging.getLogger("sci_fetch")


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


def _ceiling(cap: float | None, members: int) -> Throttler | None:
    """The fixed cap (``max_requests_per_second``), the ceiling of the adaptive rate, as this process's share of
    it: asyncio-throttle counts whole requests per period, so a fractional share lengthens the period."""
    if not cap:
        return None
    share = cap / members
    whole = max(1, int(share))
    return Throttler(rate_limit=whole, period=whole / share)


class S3Storage:
    """Async S3 reader; use as ``async with S3Storage(options) as storage``.

    ``rate``: the run's shared request rate (storage.rate), created by the run's owner when several processes
    share one run; without it this storage keeps a rate of its own."""

    MAX_REGION_SWITCHES = 3  # a bucket that keeps naming other regions stops the run instead of ping-ponging

    def __init__(self, options: StorageOptions, rate: SharedRate | None = None) -> None:
        self.options = options
        self.requests = 0  # every HTTP request sent, retries included: "zero requests on resume" is checked on this
        self.retries: Counter[str] = Counter()
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._direct: DirectGet | None = None
        shared = rate or SharedRate(1, options.max_requests_per_second)
        self.rate = RequestRate(shared)
        self._throttler = _ceiling(options.max_requests_per_second, shared.members)
        self._session: Any = None
        self._credentials: Any = None
        self._region_lock = asyncio.Lock()
        self._region_checked = False
        self._region_switches = 0
        self.reachability = Reachability(
            options.describe(),
            self._probe,
            threshold=min(8, max(2, options.pool_size)),
            outage_limit=options.outage_limit,
        )

    async def __aenter__(self) -> S3Storage:
        opts = self.options
        try:
            self._session = aioboto3.Session(profile_name=opts.profile or None, region_name=opts.region or None)
        except bce.ProfileNotFound as exc:
            raise UsageError(
                f"AWS profile {opts.profile!r} not found in ~/.aws/config or ~/.aws/credentials; set 'profile' to an existing profile, or to \"\" to use environment credentials"
            ) from exc
        self._client = await self._open_client(opts.region or None)
        if opts.direct_get and not uses_proxy(self._client):
            self._credentials = None if opts.anonymous else await self._session.get_credentials()
            if self._credentials is None and not opts.anonymous:
                return self  # no credentials: the client's GET raises NoCredentialsError, mapped to one clear stop
            self._direct = await self._open_direct(self._client)
        return self

    async def _open_client(self, region: str | None) -> Any:
        """An aioboto3 client for ``region`` (the run's one; a second only when the bucket is elsewhere)."""
        opts = self.options
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
            client = await self._stack.enter_async_context(
                self._session.client(
                    "s3",
                    region_name=region,
                    endpoint_url=opts.endpoint_url or None,
                    config=config,
                    verify=str(opts.ca_bundle) if opts.ca_bundle else None,
                )
            )
        except ValueError as exc:
            raise UsageError(f"endpoint_url {opts.endpoint_url!r} is not usable: {exc}") from exc
        client.meta.events.register("before-send.s3", self._count_request)
        return client

    async def _open_direct(self, client: Any) -> DirectGet:
        """The lean GET for ``client``'s region: its bucket URL, signed for its region."""
        base = await bucket_url(client, self.options.bucket)
        region = client.meta.region_name or self.options.region or "us-east-1"
        return await self._stack.enter_async_context(DirectGet(self.options, self._credentials, region, base))

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
        self.rate.answered()
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
        return await with_retries(
            key, lambda: self._in_region(once), self.options, self.reachability, self._on_retry, self
        )

    async def before(self) -> float:
        """Pacer: the bucket's region is known, then a slot of the run's request rate; returns when it was sent."""
        await self._region_ready()
        return await self._pace()

    def throttled(self, sent: float) -> None:
        """Pacer: a SlowDown cuts the run's request rate."""
        self.rate.throttled(sent)

    async def _pace(self) -> float:
        """Wait for this request's turn: the fixed cap (asyncio-throttle), then the run's adaptive rate
        (storage.rate); returns when it was sent, so a throttle answer to it cuts the rate at most once."""
        if self._throttler is not None:
            async with self._throttler:
                pass
        return await self.rate.wait()

    # ---- the bucket's region -----------------------------------------------------------------------
    @property
    def region(self) -> str | None:
        """The region requests are signed for now (the bucket's, once known)."""
        return self._client.meta.region_name if self._client is not None else self.options.region

    async def _region_ready(self) -> None:
        """Before the run's first request, once: on AWS, or with no region set, ask the bucket's region
        (HeadBucket) so the hot GET signs for it from the start. An S3-compatible server with a region set is
        not asked (most have no regions); a wrong region there is still followed from its first answer."""
        if self._region_checked:
            return
        async with self._region_lock:
            if self._region_checked:
                return
            self._region_checked = True
            if self.options.endpoint_url and self.options.region:
                return
            found = await self._head_bucket_region()
            if found is None:
                return
            if found != self.region:
                await self._use_region(found, "HeadBucket's x-amz-bucket-region")
            else:
                log.info("bucket %r is in region %s (S3's x-amz-bucket-region)", self.options.bucket, found)

    async def _head_bucket_region(self) -> str | None:
        """HeadBucket's region; None when the server names none or does not answer (the run then finds out)."""
        try:
            return await bucket_region(self._client, self.options.bucket)
        except Exception as exc:  # mapped when known (network, credentials); a bug re-raises as itself
            mapped = self._map(exc, "head_bucket", "", None)
            if mapped is None:
                raise
            log.debug("the bucket's region could not be asked: %s", mapped)
            return None

    async def _in_region(self, once: Callable[[], Awaitable[T]]) -> T:
        """``once()``, again in the bucket's region when the answer says it is elsewhere (a 301, 307 or 400
        naming the region): the whole run moves there, once; what cannot be followed stops the run (exit 3)."""
        while True:
            sent = self.region
            try:
                return await once()
            except WrongRegion as exc:
                if not await self._follow(exc, sent):
                    raise

    async def _follow(self, exc: WrongRegion, sent: str | None) -> bool:
        """Move the run to the region ``exc`` names; True when the request should go again."""
        async with self._region_lock:
            if self.region != sent:
                return True  # another request moved the run meanwhile
            region = exc.region or await self._head_bucket_region()
            if region is None or region == sent or self._region_switches >= self.MAX_REGION_SWITCHES:
                return False
            await self._use_region(region, f"its {exc.answer} answer")
            return True

    async def _use_region(self, region: str, source: str) -> None:
        """Sign for and talk to ``region`` from now on: a client for it (HEADs), the lean GET's URL and signer."""
        before = self.region
        self._region_switches += 1
        client = await self._open_client(region)
        direct = await self._open_direct(client) if self._direct is not None else None
        self._client, self._direct = client, direct
        log.warning(
            "bucket %r is in region %s, not %s (the region setting), from %s: using %s for the rest of this run; "
            'set region = "%s" (--region %s) to skip this detour',
            self.options.bucket,
            region,
            before,
            source,
            region,
            region,
            region,
        )

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
        direct = self._direct
        assert direct is not None
        self.requests += 1
        try:
            async with direct.get(key) as resp:
                self.reachability.on_answer()
                self.rate.answered()
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
