"""The fault proxy itself: it passes signed requests through unchanged and breaks them as asked."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import botocore.exceptions as bce
import pytest
from botocore.config import Config
from fault_proxy import KINDS, FaultProxy

BUCKET = "test-bucket"
BODY = os.urandom(100_000)


def client(s3, url: str, read_timeout: float = 5.0, **extra):
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-west-2",
        aws_access_key_id=extra.pop("key", s3.access_key),
        aws_secret_access_key=s3.secret_key,
        config=Config(
            retries={"total_max_attempts": 1},
            read_timeout=read_timeout,
            connect_timeout=2,
            response_checksum_validation="when_required",
        ),
        **extra,
    )


@pytest.fixture(scope="module")
def obj(s3):
    key = f"proxy/{uuid.uuid4().hex}.bin"
    s3.client().put_object(Bucket=BUCKET, Key=key, Body=BODY)
    return key


def test_signed_requests_pass_through_unchanged(s3, obj):
    with FaultProxy(s3.endpoint_url) as proxy:
        c = client(s3, proxy.url)
        assert c.get_object(Bucket=BUCKET, Key=obj)["Body"].read() == BODY
        assert c.head_object(Bucket=BUCKET, Key=obj)["ContentLength"] == len(BODY)
        big = os.urandom(3_000_000)  # a PUT with Expect: 100-continue, streamed both ways
        c.put_object(Bucket=BUCKET, Key=obj + ".put", Body=big)
        assert c.get_object(Bucket=BUCKET, Key=obj + ".put")["Body"].read() == big
        with pytest.raises(bce.ClientError) as info:
            c.get_object(Bucket=BUCKET, Key="proxy/no-such-key")
        assert info.value.response["Error"]["Code"] == "NoSuchKey"  # upstream errors come through as they are
        # A wrong secret is still refused by the upstream: the proxy forwards, it does not sign.
        bad = boto3.client(
            "s3",
            endpoint_url=proxy.url,
            region_name="us-west-2",
            aws_access_key_id=s3.access_key,
            aws_secret_access_key="wrong",
            config=Config(retries={"total_max_attempts": 1}),
        )
        with pytest.raises(bce.ClientError) as info:
            bad.get_object(Bucket=BUCKET, Key=obj)
        assert info.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert proxy.stats() == {
        "requests": 6,
        "forwarded": 6,
        "refused": 0,
        "injected": {},
        "faults": 0,
        "upstream_errors": 0,
    }
    assert [(m, fate) for _, m, _, fate in proxy.history] == [
        ("GET", None),
        ("HEAD", None),
        ("PUT", None),
        ("GET", None),
        ("GET", None),
        ("GET", None),
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_each_fault_kind(s3, obj, kind):
    with FaultProxy(s3.endpoint_url, rates={kind: 1.0}, stall_seconds=3) as proxy:
        c = client(s3, proxy.url, read_timeout=0.5)
        started = time.monotonic()
        if kind == "corrupt":
            got = c.get_object(Bucket=BUCKET, Key=obj)["Body"].read()
        else:
            with pytest.raises(Exception) as info:
                c.get_object(Bucket=BUCKET, Key=obj)["Body"].read()
        took = time.monotonic() - started
        proxy.set_rates()  # faults off: the next request on a new connection goes through
        assert c.get_object(Bucket=BUCKET, Key=obj)["Body"].read() == BODY
    if kind == "corrupt":  # same length, one byte inverted in the middle
        assert len(got) == len(BODY) and [i for i in range(len(BODY)) if got[i] != BODY[i]] == [len(BODY) // 2]
        assert got[len(BODY) // 2] == BODY[len(BODY) // 2] ^ 0xFF
        assert proxy.injected == {kind: 1} and proxy.requests == 2
        return
    err = info.value
    if kind == "slowdown":
        assert err.response["Error"]["Code"] == "SlowDown" and err.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    elif kind == "internal":
        assert (
            err.response["Error"]["Code"] == "InternalError"
            and err.response["ResponseMetadata"]["HTTPStatusCode"] == 500
        )
    elif kind == "reset":
        assert isinstance(err, bce.ResponseStreamingError) and "reset" in str(err).lower()
    elif kind == "short":
        assert isinstance(err, bce.ResponseStreamingError) and "75000 bytes read, 25000 more expected" in str(err)
    else:
        # The stall lasts 3 s: only the 0.5 s read timeout firing gives a ReadTimeoutError. No upper bound on
        # ``took``: a loaded machine may be slow to notice, and that says nothing about the proxy.
        assert isinstance(err, bce.ReadTimeoutError) and took > 0.4, took
    assert proxy.injected == {kind: 1} and proxy.requests == 2


def test_faults_on_head_requests(s3, obj):
    """HEAD has no body: reset and stall break it before the head, short passes it through uncounted."""
    with FaultProxy(s3.endpoint_url, rates={"short": 1.0}, stall_seconds=2) as proxy:
        c = client(s3, proxy.url, read_timeout=0.5)
        assert c.head_object(Bucket=BUCKET, Key=obj)["ContentLength"] == len(BODY)
        assert proxy.injected == {}
        proxy.set_rates(reset=1.0)
        with pytest.raises(bce.ConnectionClosedError):
            c.head_object(Bucket=BUCKET, Key=obj)
        proxy.set_rates(slowdown=1.0)
        with pytest.raises(bce.ClientError) as info:
            c.head_object(Bucket=BUCKET, Key=obj)
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        proxy.set_rates(stall=1.0)
        with pytest.raises(bce.ReadTimeoutError):
            c.head_object(Bucket=BUCKET, Key=obj)
    assert proxy.injected == {"reset": 1, "slowdown": 1, "stall": 1}


def test_the_seed_fixes_the_sequence_of_faults(s3, obj):
    rates = {"slowdown": 0.2, "internal": 0.2, "short": 0.2}
    fates = []
    for _ in range(2):
        with FaultProxy(s3.endpoint_url, seed=42, rates=rates) as proxy:
            c = client(s3, proxy.url)
            for _ in range(40):
                try:
                    c.get_object(Bucket=BUCKET, Key=obj)["Body"].read()
                except (bce.ClientError, bce.ResponseStreamingError):
                    pass
        fates.append([fate for *_, fate in proxy.history])
        assert sum(proxy.injected.values()) == sum(f is not None for f in fates[-1])
    assert fates[0] == fates[1]
    assert {"slowdown", "internal", "short", None} == set(fates[0])
    with FaultProxy(s3.endpoint_url, seed=43, rates=rates) as other:
        c = client(s3, other.url)
        for _ in range(40):
            try:
                c.head_object(Bucket=BUCKET, Key=obj)
            except bce.ClientError:
                pass
    assert [fate for *_, fate in other.history] != fates[0]


def test_latency_is_added_accurately(s3, obj):
    """The benchmarks' '+40 ms per request' regime: the median request is 40 ms slower, give or take 10."""

    def median_head_time(url: str) -> float:
        c = client(s3, url)
        c.head_object(Bucket=BUCKET, Key=obj)  # connect first
        times = []
        for _ in range(25):
            t = time.perf_counter()
            c.head_object(Bucket=BUCKET, Key=obj)
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    with FaultProxy(s3.endpoint_url) as plain, FaultProxy(s3.endpoint_url, latency=0.040) as slow:
        added = median_head_time(slow.url) - median_head_time(plain.url)
    assert 0.035 < added < 0.050, added


def test_refusing_credentials_after_n_requests_looks_like_s3(s3, obj):
    with FaultProxy(s3.endpoint_url) as proxy:
        c = client(s3, proxy.url, aws_session_token="FQoGZXIvYXdzEXAMPLETOKEN")
        proxy.refuse_credentials(after=2, code="ExpiredToken")
        for _ in range(2):  # passed on (SeaweedFS refuses session tokens itself: it has no STS)
            with pytest.raises(bce.ClientError) as info:
                c.get_object(Bucket=BUCKET, Key=obj)
            assert info.value.response["Error"]["Code"] == "InvalidAccessKeyId"
        with pytest.raises(bce.ClientError) as info:
            c.get_object(Bucket=BUCKET, Key=obj)
        error = info.value.response["Error"]
        assert error["Code"] == "ExpiredToken" and info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert error["Token-0"] == "FQoGZXIvYXdzEXAMPLETOKEN"  # S3 echoes the token; sci_fetch must not repeat it
        proxy.refuse_credentials(code="InvalidAccessKeyId")
        with pytest.raises(bce.ClientError) as info:
            client(s3, proxy.url).head_object(Bucket=BUCKET, Key=obj)
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        with pytest.raises(bce.ClientError) as info:
            client(s3, proxy.url).get_object(Bucket=BUCKET, Key=obj)
        assert info.value.response["Error"]["AWSAccessKeyId"] == s3.access_key
        proxy.accept_credentials()
        assert client(s3, proxy.url).get_object(Bucket=BUCKET, Key=obj)["Body"].read() == BODY
    assert proxy.refused == 3 and proxy.forwarded == 3


def test_bad_parameters_are_refused(s3):
    with pytest.raises(ValueError, match="unknown fault kinds"):
        FaultProxy(s3.endpoint_url, rates={"teapot": 0.1})
    with pytest.raises(ValueError, match="add up to"):
        FaultProxy(s3.endpoint_url, rates={"reset": 0.6, "short": 0.6})
    with pytest.raises(ValueError, match="http://"):
        FaultProxy("https://s3.amazonaws.com")


def test_runs_standalone_for_the_benchmarks(s3, obj):
    script = Path(__file__).with_name("fault_proxy.py")
    proc = subprocess.Popen(
        [sys.executable, str(script), "--upstream", s3.endpoint_url, "--latency", "0.01", "--slowdown", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert client(s3, url).get_object(Bucket=BUCKET, Key=obj)["Body"].read() == BODY
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert json.loads(out.strip().splitlines()[-1])["forwarded"] == 1
