"""AWS Signature Version 4 for the hot GET: the headers botocore's ``S3SigV4Auth`` would add, byte for byte.

Why not botocore's signer here: per GET it builds an ``AWSRequest``, re-parses the URL three times, checks
for IPv6, and derives the signing key with four HMACs; measured in the profile of the lean GET path
(bench/results/2026-11-30-prof3.md) that was 17% of the event loop's CPU, the largest piece left besides the
socket reads. Here the signing key is derived once per day and region and a GET costs one SHA-256 and one
HMAC. botocore stays the signer of every other request, and tests/test_storage_signing.py checks that this
module's headers equal botocore's for the same request and instant (keys with spaces, unicode, ``+``,
session tokens, ports, regions): botocore is the reference, this is only its fast path for one shape of
request.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import datetime
from typing import Protocol

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()  # a GET has no body; botocore signs its hash
_SIGNED = "host;x-amz-content-sha256;x-amz-date"


class Credentials(Protocol):
    """What botocore's frozen credentials carry."""

    access_key: str
    secret_key: str
    token: str | None


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


class GetSigner:
    """Signs GETs to one host in one region; ``headers()`` returns what goes on the request besides Host."""

    def __init__(self, region: str, host: str) -> None:
        self.region = region
        self.host = host  # as botocore puts it in the canonical request: lower case, no default port
        self._key_for: tuple[str, str] = ("", "")  # (secret, date) the cached signing key belongs to
        self._mac = hmac.new(b"", digestmod=hashlib.sha256)  # keyed with the signing key; copied per request
        self._second: tuple[float, str] = (-1.0, "")  # the last timestamp, formatted once per second

    def _signer(self, secret: str, date: str) -> hmac.HMAC:
        if self._key_for != (secret, date):
            k = _hmac(f"AWS4{secret}".encode(), date)
            for part in (self.region, "s3", "aws4_request"):
                k = _hmac(k, part)
            self._key_for, self._mac = (secret, date), hmac.new(k, digestmod=hashlib.sha256)
        return self._mac.copy()

    def _stamp(self, now: datetime | None) -> str:
        if now is not None:
            return now.strftime("%Y%m%dT%H%M%SZ")
        second = time.time() // 1
        if self._second[0] != second:
            self._second = (second, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second)))
        return self._second[1]

    def headers(self, creds: Credentials, path: str, now: datetime | None = None) -> list[tuple[str, str]]:
        """Headers for ``GET path`` (already URL-encoded, as sent), signed at ``now`` (default: the clock)."""
        stamp = self._stamp(now)
        date = stamp[:8]
        token = creds.token
        canonical_headers = f"host:{self.host}\nx-amz-content-sha256:{EMPTY_SHA256}\nx-amz-date:{stamp}\n"
        signed = _SIGNED
        if token:
            canonical_headers += f"x-amz-security-token:{' '.join(token.split())}\n"
            signed += ";x-amz-security-token"
        canonical = f"GET\n{path}\n\n{canonical_headers}\n{signed}\n{EMPTY_SHA256}"
        scope = f"{date}/{self.region}/s3/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode('utf-8')).hexdigest()}"
        mac = self._signer(creds.secret_key, date)
        mac.update(to_sign.encode("utf-8"))
        signature = mac.hexdigest()
        out = [("X-Amz-Date", stamp), ("X-Amz-Content-SHA256", EMPTY_SHA256)]
        if token:
            out.append(("X-Amz-Security-Token", token))
        out.append(
            (
                "Authorization",
                f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{scope}, SignedHeaders={signed}, Signature={signature}",
            )
        )
        return out
