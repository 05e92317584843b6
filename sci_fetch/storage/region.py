"""Which region a bucket is in, read from S3's own answers, as botocore's ``S3RegionRedirectorv2`` reads them.

sci_fetch signs its hot GET itself (storage.signing) for one region and sends it to one endpoint, so botocore's
per-request redirect does not help it: a bucket in another region would answer every GET with 400
``AuthorizationHeaderMalformed`` (signed for the wrong region) or 301 ``PermanentRedirect`` (the wrong regional
endpoint). S3 names the right region in those answers, in the same places botocore looks, in its order:

1. the ``x-amz-bucket-region`` header (301, 307, 400, and HeadBucket even when it answers 403);
2. the ``<Region>`` of an ``AuthorizationHeaderMalformed`` error body;
3. else a HeadBucket, whose answer carries the header.

storage.s3 finds the region once for the whole run (before its first request on AWS, or from the first such
answer anywhere) and from then on signs for it and talks to its endpoint; these are the pure parts and the one
HeadBucket.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import botocore.exceptions as bce

from sci_fetch.errors import FatalError

REGION_HEADER = "x-amz-bucket-region"
REDIRECT_STATUSES = frozenset({301, 302, 307})
# Error codes that mean "this bucket is not where the request went", as botocore's redirector knows them.
REGION_CODES = frozenset(
    {"AuthorizationHeaderMalformed", "PermanentRedirect", "TemporaryRedirect", "IllegalLocationConstraintException"}
)


class WrongRegion(FatalError):
    """The bucket answered that the request went to (or was signed for) another region than its own.

    storage.s3 follows ``region`` when it can; when it cannot (no region named, or the one it already uses) this
    stops the run like any FatalError (exit 3), its message naming the region S3 gave."""

    reason = "wrong-region"

    def __init__(self, op: str, src: str, dst: str | None, err: str, region: str | None, answer: str = "") -> None:
        self.region = region
        self.answer = answer  # what S3 said: "AuthorizationHeaderMalformed", "PermanentRedirect", "307", ...
        super().__init__(op, src, dst, err)


def is_region_answer(status: int, code: str, headers: Mapping[str, str]) -> bool:
    """True for an answer that says the bucket is elsewhere: a redirect status, a region error code, or a bare
    400 carrying the bucket's region (a HEAD signed for the wrong region has no body to say more; a 400 WITH a
    body names its own code, as botocore's redirector also reads it)."""
    if status in REDIRECT_STATUSES or code in REGION_CODES:
        return True
    return status == 400 and code == "400" and _header(headers, REGION_HEADER) is not None


def region_in_answer(headers: Mapping[str, str], error: Mapping[str, Any]) -> str | None:
    """The region an answer names: its ``x-amz-bucket-region`` header, else the ``Region`` of its error body."""
    value = _header(headers, REGION_HEADER) or error.get("Region")
    text = str(value).strip() if value else ""
    return text or None


def wrong_region(exc: bce.ClientError, op: str, src: str, dst: str | None, where: str) -> WrongRegion | None:
    """The WrongRegion a botocore ClientError stands for, or None when it is about something else."""
    error = exc.response.get("Error", {})
    meta = exc.response.get("ResponseMetadata", {})
    code = str(error.get("Code", ""))
    status = int(meta.get("HTTPStatusCode", 0) or 0)
    headers = meta.get("HTTPHeaders", {}) or {}
    if not is_region_answer(status, code, headers):
        return None
    region = region_in_answer(headers, error)
    said = f"{code or status} {error.get('Message', '')}".strip()
    if region is None:
        hint = "the bucket is in another region, and S3 did not say which; set the region setting to the bucket's"
    else:
        hint = f'the bucket is in region {region} (S3 says so); set region = "{region}" (--region {region})'
    return WrongRegion(op, src, dst, f"{said}; {where}: {hint}", region, code or str(status))


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:  # botocore lower-cases header names; the lean GET's dict does too, but be sure
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


async def bucket_region(client: Any, bucket: str) -> str | None:
    """The bucket's region from a HeadBucket's ``x-amz-bucket-region``, read from an error answer too (S3 sends
    it with 403, 301 and 400); None when the server names none (most S3-compatible servers). Errors without an
    answer (network, credentials) are raised for the caller to map."""
    try:
        response = await client.head_bucket(Bucket=bucket)
    except bce.ClientError as exc:
        response = exc.response
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}) or {}
    return region_in_answer(headers, {})
