import aiohttp
import botocore.exceptions as bce
import pytest

from sci_fetch.errors import FatalError, ForbiddenError, IntegrityError, MissingError, PermanentError, TransientError
from sci_fetch.storage.retry import Budget, classify, retrying
from sci_fetch.storage.s3 import plain_md5_etag


def client_error(code: str, status: int) -> bce.ClientError:
    return bce.ClientError(
        {"Error": {"Code": code, "Message": "msg"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject"
    )


@pytest.mark.parametrize(
    "exc,kind,reason",
    [
        (client_error("SlowDown", 503), TransientError, "slowdown"),
        (client_error("InternalError", 500), TransientError, "server-error"),
        (client_error("502", 502), TransientError, "server-error"),
        (client_error("NoSuchKey", 404), MissingError, "missing"),
        (client_error("404", 404), MissingError, "missing"),
        (client_error("NoSuchBucket", 404), FatalError, "fatal"),
        (client_error("AccessDenied", 403), ForbiddenError, "forbidden"),
        (client_error("403", 403), ForbiddenError, "forbidden"),
        (client_error("InvalidAccessKeyId", 403), FatalError, "fatal"),
        (client_error("ExpiredToken", 400), FatalError, "fatal"),
        (client_error("InvalidRange", 416), PermanentError, "permanent"),
        (bce.NoCredentialsError(), FatalError, "fatal"),
        (bce.ReadTimeoutError(endpoint_url="http://x"), TransientError, "timeout"),
        (TimeoutError(), TransientError, "timeout"),
        (bce.EndpointConnectionError(endpoint_url="http://x"), TransientError, "connection"),
        (aiohttp.ServerDisconnectedError(), TransientError, "connection"),
        (ConnectionResetError(104, "reset"), TransientError, "connection"),
        (bce.IncompleteReadError(actual_bytes=1, expected_bytes=2), TransientError, "short-body"),
    ],
)
def test_classification(exc, kind, reason):
    err = classify(exc, "get", "s3://b/k", "/out/k", "bucket 'b' with profile 'animl'")
    assert type(err) is kind and err.reason == reason
    assert "s3://b/k" in str(err)


def test_fatal_message_names_bucket_profile_and_what_to_check():
    err = classify(client_error("InvalidAccessKeyId", 403), "get", "s3://b/k", None, "bucket 'b' with profile 'animl'")
    assert "profile 'animl'" in str(err) and "bucket 'b'" in str(err) and "credentials" in str(err)


def test_etag_plain_md5_only():
    assert plain_md5_etag('"eb8dd61ce91130e41da468c2ff7c770f"') == "eb8dd61ce91130e41da468c2ff7c770f"
    assert plain_md5_etag('"eb8dd61ce91130e41da468c2ff7c770f-3"') is None
    assert plain_md5_etag(None) is None


@pytest.mark.parametrize(
    "response,is_md5",
    [
        ({}, True),
        ({"ServerSideEncryption": "AES256"}, True),  # SSE-S3 and CopyObject keep an MD5 ETag
        ({"ServerSideEncryption": "aws:kms"}, False),
        ({"ServerSideEncryption": "aws:kms:dsse"}, False),
        ({"SSECustomerAlgorithm": "AES256"}, False),
    ],
)
def test_etag_is_not_an_md5_under_sse_kms_or_sse_c(response, is_md5):
    etag = '"eb8dd61ce91130e41da468c2ff7c770f"'
    assert (plain_md5_etag(etag, response) is not None) is is_md5


def test_unknown_errors_are_not_mapped_so_bugs_surface():
    for exc in (RuntimeError("boom"), TypeError("bad arg"), KeyError("x"), ValueError("v")):
        assert classify(exc, "get", "s3://b/k", "/out/k", "bucket 'b'") is None


def test_only_failures_without_an_answer_count_for_the_outage_gate():
    where = "bucket 'b'"
    assert classify(bce.EndpointConnectionError(endpoint_url="http://x"), "get", "s", None, where).no_answer
    assert classify(bce.ConnectTimeoutError(endpoint_url="http://x"), "get", "s", None, where).no_answer
    assert not classify(bce.ResponseStreamingError(error="reset"), "get", "s", None, where).no_answer
    assert not classify(client_error("SlowDown", 503), "get", "s", None, where).no_answer


async def test_a_given_back_attempt_neither_counts_nor_sleeps():
    budget = Budget(2)
    calls = 0

    async def lost_to_outage_three_times():
        nonlocal calls
        calls += 1
        if calls <= 3:
            budget.give_back()
            raise TransientError("get", "s3://b/k", None, "refused", reason="connection")
        return "ok"

    async for attempt in retrying(2, 5.0, 5.0, budget=budget):  # a counted retry would sleep 5 s
        with attempt:
            result = await lost_to_outage_three_times()
    assert result == "ok" and calls == 4


async def test_retrying_retries_only_retryable_and_counts_reasons():
    reasons = []
    calls = 0

    async def flaky():
        nonlocal calls
        calls += 1
        if calls < 3:
            raise IntegrityError("get", "k", None, "short body", reason="short-body")
        return "ok"

    async for attempt in retrying(5, 0.001, 0.002, reasons.append):
        with attempt:
            result = await flaky()
    assert result == "ok" and calls == 3 and reasons == ["short-body", "short-body"]

    calls = 0

    async def missing():
        nonlocal calls
        calls += 1
        raise MissingError("get", "k", None, "404")

    with pytest.raises(MissingError):
        async for attempt in retrying(5, 0.001, 0.002):
            with attempt:
                await missing()
    assert calls == 1


async def test_retrying_stops_at_the_cap():
    calls = 0
    with pytest.raises(TransientError):
        async for attempt in retrying(3, 0.001, 0.002):
            with attempt:
                calls += 1
                raise TransientError("get", "k", None, "503")
    assert calls == 3
