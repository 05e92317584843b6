"""The hot GET, without botocore's per-request pipeline and without aiohttp's response machinery.

Through the aioboto3 client a GET costs about 1.5 ms of client CPU (event hooks, request building, the
endpoint rule set evaluated per key (botocore issue 3528), signing, response parsing); measured in
bench/micro_request.py, the same request signed by botocore's own SigV4 signer and sent on a plain aiohttp
session costs about 0.35 ms. On a 2-core machine that is most of the difference to s5cmd, so the GET takes
this path, and everything else stays with aioboto3. The request goes out on storage.wire's keep-alive pool,
which reads each body straight into its buffer (why not aiohttp: see there).

- the URL prefix of the bucket is resolved once, by botocore itself (a GetObject for a probe key, built and
  stopped before it is sent), so addressing style, region and custom endpoints follow the client's
  configuration;
- credentials come from the aioboto3 session's chain (profiles, environment, SSO, instance roles) and are
  refreshed by it as they expire; the signature is botocore's ``S3SigV4Auth``'s, computed by
  storage.signing's fast path for this one request shape (tested equal to botocore's);
- errors come back as the same ``botocore.exceptions.ClientError`` a client raises (code and message parsed
  from S3's XML body), so ``storage.retry.classify`` stays the only place errors are mapped.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import botocore.exceptions as bce
from botocore.httpsession import get_cert_path

from sci_fetch.storage.options import StorageOptions
from sci_fetch.storage.signing import GetSigner
from sci_fetch.storage.wire import BadResponse, Limits, Pool

_PROBE_KEY = "sci-fetch-probe-key"


@dataclass(frozen=True)
class Response:
    """What the GET path needs of an answer: its headers and its body as a stream of chunks."""

    headers: dict[str, str]
    chunks: AsyncIterator[bytes | bytearray]

    def get(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class _Captured(Exception):  # noqa: N818 - not an error: carries the URL out of botocore's pipeline
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


async def bucket_url(client: Any, bucket: str) -> str:
    """The URL a key is appended to, exactly as this client would send a GetObject (addressing style, region,
    endpoint, FIPS/dual-stack): the request is built and signed by botocore, then stopped at ``before-send``
    before anything goes on the network. (A presigned URL is not the same: for the aws partition botocore
    presigns against the legacy global host ``<bucket>.s3.amazonaws.com``, which buckets in regions opened
    since 2019 refuse with IllegalLocationConstraintException.)"""

    def capture(request: Any, **_: Any) -> None:
        raise _Captured(request.url)

    client.meta.events.register_first("before-send.s3.GetObject", capture)
    try:
        await client.get_object(Bucket=bucket, Key=_PROBE_KEY)
    except _Captured as captured:
        url = captured.url
    else:  # pragma: no cover - the handler always raises
        raise AssertionError("before-send did not run")
    finally:
        client.meta.events.unregister("before-send.s3.GetObject", capture)
    parts = urlsplit(url)
    path = parts.path[: parts.path.rindex(_PROBE_KEY)]
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def ssl_context(options: StorageOptions) -> ssl.SSLContext:
    """Trust what botocore trusts: the ``ca_bundle`` setting, else AWS_CA_BUNDLE, else botocore's bundle."""
    cafile = options.ca_bundle or os.environ.get("AWS_CA_BUNDLE") or get_cert_path(True)
    return ssl.create_default_context(cafile=cafile)


class DirectGet:
    """GETs signed with the session's credentials, sent on one keep-alive pool; ``async with``."""

    FROZEN_FOR = 1.0  # seconds one frozen copy of refreshable credentials is reused (they refresh minutes early)

    def __init__(self, options: StorageOptions, credentials: Any, region: str, base_url: str) -> None:
        self.options = options
        self._credentials = credentials  # refreshable: frozen per second, refreshed by botocore when due
        self._frozen: Any = None
        self._frozen_at = -1e9
        self.region = (
            region  # the region every GET is signed for (storage.s3 replaces the whole DirectGet to change it)
        )
        self._base = base_url
        self._path = urlsplit(base_url).path
        self._pool: Pool | None = None
        self._signer: GetSigner | None = None

    async def __aenter__(self) -> DirectGet:
        opts = self.options
        context = ssl_context(opts) if self._base.startswith("https:") else None
        limits = Limits(
            size=max(opts.pool_size, 10),
            chunk_size=opts.chunk_size,
            connect_timeout=opts.connect_timeout,
            read_timeout=opts.read_timeout,
            speed_limit=opts.speed_limit,
            speed_time=opts.speed_time,
        )
        self._pool = Pool(self._base, context, limits)
        await self._pool.__aenter__()
        self._signer = GetSigner(self.region, self._pool.netloc)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._pool is not None:
            await self._pool.__aexit__(*exc_info)

    async def _headers(self, path: str) -> list[tuple[str, str]]:
        if self.options.anonymous:
            return []
        if self._credentials is None:
            raise bce.NoCredentialsError()
        now = asyncio.get_running_loop().time()
        if now - self._frozen_at > self.FROZEN_FOR:
            self._frozen = await self._credentials.get_frozen_credentials()
            self._frozen_at = now
        assert self._signer is not None
        return self._signer.headers(self._frozen, path)

    @asynccontextmanager
    async def get(self, key: str) -> AsyncIterator[Response]:
        """The object's response; a status other than 200 raises the ClientError a botocore client would."""
        assert self._pool is not None, "use DirectGet as an async context manager"
        path = self._path + quote(key, safe="/~")
        async with self._pool.request(path, await self._headers(path)) as resp:
            if resp.status != 200:
                raise _client_error(resp.status, await resp.read(), resp.headers)
            if resp.framing == "close":  # a cut body and a whole one would look alike
                raise BadResponse(
                    f"the 200 for {path} has neither Content-Length nor chunked framing, so a cut body "
                    "cannot be told from a whole one; a proxy re-framing responses? direct_get = false "
                    "sends GETs through botocore instead"
                )
            yield Response(resp.headers, resp.chunks())


def _client_error(status: int, body: bytes, headers: dict[str, str]) -> bce.ClientError:
    """S3's error as botocore parses it: Code and Message from the XML body, else the status as the code."""
    error: dict[str, str] = {"Code": str(status), "Message": ""}
    try:
        root = ET.fromstring(body) if body else None
    except ET.ParseError:
        root = None
    if root is not None:  # every child as botocore keeps it: Region (a wrong region), Endpoint (a redirect), ...
        error.update({child.tag: child.text or "" for child in root if len(child) == 0})
        error["Code"] = error.get("Code") or str(status)
        error.setdefault("Message", "")
    response: Any = {  # botocore's parsed-error shape (a TypedDict in its stubs)
        "Error": error,
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers},
    }
    return bce.ClientError(response, "GetObject")
