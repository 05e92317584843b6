"""The hot GET, without botocore's per-request pipeline.

Through the aioboto3 client a GET costs about 1.5 ms of client CPU (event hooks, request building, the
endpoint rule set evaluated per key (botocore issue 3528), signing, response parsing); measured in
bench/micro_request.py, the same request signed by botocore's own SigV4 signer and sent on a plain aiohttp
session costs about 0.35 ms. On a 2-core machine that is most of the difference to s5cmd, so the GET takes
this path, and everything else stays with aioboto3:

- the URL prefix of the bucket is resolved once, by botocore itself (a presigned URL for a probe key), so
  addressing style, region and custom endpoints follow the client's configuration;
- credentials come from the aioboto3 session's chain (profiles, environment, SSO, instance roles) and are
  refreshed by it as they expire; the signature is botocore's ``S3SigV4Auth``;
- errors come back as the same ``botocore.exceptions.ClientError`` a client raises (code and message parsed
  from S3's XML body), so ``storage.retry.classify`` stays the only place errors are mapped.
"""

from __future__ import annotations

import os
import ssl
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
import botocore.exceptions as bce
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.httpsession import get_cert_path

from sci_fetch.storage.options import StorageOptions

_PROBE_KEY = "sci-fetch-probe-key"


@dataclass(frozen=True)
class Response:
    """What the GET path needs of an answer: its headers and its body as a stream of chunks."""

    headers: dict[str, str]
    chunks: AsyncIterator[bytes]

    def get(self, name: str) -> str | None:
        return self.headers.get(name.lower())


async def bucket_url(client: Any, bucket: str) -> str:
    """The URL a key is appended to, as botocore builds it for this client (addressing style, region, endpoint)."""
    url = await client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": _PROBE_KEY}, ExpiresIn=60)
    parts = urlsplit(url)
    path = parts.path[: parts.path.rindex(_PROBE_KEY)]
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def ssl_context(options: StorageOptions) -> ssl.SSLContext:
    """Trust what botocore trusts: the ``ca_bundle`` setting, else AWS_CA_BUNDLE, else botocore's bundle."""
    cafile = options.ca_bundle or os.environ.get("AWS_CA_BUNDLE") or get_cert_path(True)
    return ssl.create_default_context(cafile=cafile)


class DirectGet:
    """GETs signed with the session's credentials, sent on one shared aiohttp session; ``async with``."""

    def __init__(self, options: StorageOptions, credentials: Any, region: str, base_url: str) -> None:
        self.options = options
        self._credentials = credentials  # refreshable: frozen per request, refreshed by botocore when due
        self._region = region
        self._base = base_url
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> DirectGet:
        opts = self.options
        connector = aiohttp.TCPConnector(limit=max(opts.pool_size, 10), ssl=ssl_context(opts), ttl_dns_cache=300,
                                         enable_cleanup_closed=True)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=opts.connect_timeout, sock_read=opts.read_timeout)
        # read_bufsize: aiohttp pauses the socket when a response holds twice this many unread bytes; at its
        # 64 KiB default a 600 KB body pauses and resumes reading several times (measured: a tenth of the
        # loop's time). One chunk keeps each body flowing in one go.
        self._http = aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False,
                                           skip_auto_headers=("User-Agent",), read_bufsize=max(opts.chunk_size, 1 << 16))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._http is not None:
            await self._http.close()

    def url(self, key: str) -> str:
        return self._base + quote(key, safe="/~")

    async def _headers(self, url: str) -> dict[str, str]:
        if self.options.anonymous:
            return {}
        if self._credentials is None:
            raise bce.NoCredentialsError()
        frozen = await self._credentials.get_frozen_credentials()
        request = AWSRequest(method="GET", url=url)
        S3SigV4Auth(frozen, "s3", self._region).add_auth(request)
        return dict(request.headers.items())

    @asynccontextmanager
    async def get(self, key: str, chunk_size: int) -> AsyncIterator[Response]:
        """The object's response; a status other than 200 raises the ClientError a botocore client would."""
        assert self._http is not None, "use DirectGet as an async context manager"
        url = self.url(key)
        headers = await self._headers(url)
        async with self._http.get(url, headers=headers, allow_redirects=False) as resp:
            if resp.status != 200:
                raise _client_error(resp.status, await resp.read(), dict(resp.headers))
            yield Response({k.lower(): v for k, v in resp.headers.items()}, resp.content.iter_chunked(chunk_size))


def _client_error(status: int, body: bytes, headers: dict[str, str]) -> bce.ClientError:
    """S3's error as botocore parses it: Code and Message from the XML body, else the status as the code."""
    code, message = str(status), ""
    try:
        root = ET.fromstring(body) if body else None
    except ET.ParseError:
        root = None
    if root is not None:
        code = root.findtext("Code") or code
        message = root.findtext("Message") or ""
    response = {"Error": {"Code": code, "Message": message},
                "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers}}
    return bce.ClientError(response, "GetObject")
