"""storage.signing against its reference: botocore's S3SigV4Auth, same request, same instant."""

from __future__ import annotations

from datetime import datetime
from unittest import mock
from urllib.parse import quote

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from sci_fetch.storage.signing import GetSigner
from sci_fetch.storage.wire import Limits, Pool

KEYS = [
    "original/5f3a:0123456789abcdef0123456789abcdef-original.jpg",
    "dir with spaces/and+plus/ümlaut ñ/文件.JPG",
    "a~b_c-d.e/!$&'()*,;=@/%20literal",
]
BASES = [
    "http://127.0.0.1:8333/bucket/",
    "https://bucket.s3.us-west-2.amazonaws.com/",
    "https://S3.Example.org:443/b/",
    "http://[::1]:9000/b/",
]


def botocore_headers(creds: Credentials, region: str, url: str, when: datetime) -> dict[str, str]:
    request = AWSRequest(method="GET", url=url)
    with mock.patch("botocore.auth.get_current_datetime", return_value=when):
        S3SigV4Auth(creds.get_frozen_credentials(), "s3", region).add_auth(request)
    return dict(request.headers.items())


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("token", [None, "FQoGZXIvYXdzE  token/with+slash="])
@pytest.mark.parametrize("key", KEYS)
def test_the_headers_are_botocores_byte_for_byte(base, token, key):
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    when = datetime(2026, 11, 30, 23, 59, 59)
    url = base + quote(key, safe="/~")
    pool = Pool(base, None, Limits(size=1))
    path = url[url.index("/", url.index("//") + 2) :]
    ours = dict(GetSigner("us-west-2", pool.netloc).headers(creds.get_frozen_credentials(), path, when))
    theirs = botocore_headers(creds, "us-west-2", url, when)
    assert ours == theirs
    assert ours["Authorization"].startswith(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261130/us-west-2/s3/aws4_request"
    )


def test_the_cached_signing_key_follows_the_day_and_the_secret():
    signer = GetSigner("eu-central-1", "example.com")
    one = Credentials("AK", "secret-one").get_frozen_credentials()
    two = Credentials("AK", "secret-two").get_frozen_credentials()
    for creds, when in [
        (one, datetime(2026, 1, 1, 12)),
        (one, datetime(2026, 1, 2, 0, 0, 1)),
        (two, datetime(2026, 1, 2, 0, 0, 1)),
    ]:
        ours = dict(signer.headers(creds, "/k", when))
        assert ours == botocore_headers(
            Credentials(creds.access_key, creds.secret_key), "eu-central-1", "https://example.com/k", when
        )


def test_without_an_instant_the_clock_signs_and_the_signature_is_botocores_for_that_second():
    import time as _time

    creds = Credentials("AK", "secret").get_frozen_credentials()
    before = _time.time()
    ours = dict(GetSigner("us-west-2", "example.com").headers(creds, "/k"))
    after = _time.time()
    stamp = datetime.strptime(ours["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    assert int(before) <= (stamp - datetime(1970, 1, 1)).total_seconds() <= after
    assert ours == botocore_headers(Credentials("AK", "secret"), "us-west-2", "https://example.com/k", stamp)
