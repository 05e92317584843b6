"""Which failures are retried, which never are, and how long to wait: the only retry policy there is.

botocore's own retries are switched off (``total_max_attempts=1``) so this table is the whole truth,
and a checksum mismatch or short body is retried exactly like a 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import botocore.exceptions as bce
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from sci_fetch.errors import FatalError, FetchError, MissingError, PermanentError, RetryableError, TransientError

# Error codes S3 (and S3-compatible servers) send that another attempt may fix.
RETRY_CODES = frozenset({
    "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "RequestTimeTooSkewed",
    "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests", "BandwidthLimitExceeded",
    "500", "502", "503", "504",
})
# Codes that mean the key is not there; never retried, recorded as ``missing``.
MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
# Codes that mean every key would fail alike: stop the run instead of failing 110,000 keys one by one.
FATAL_CODES = frozenset({
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "ExpiredTokenException",
    "TokenRefreshRequired", "InvalidToken", "NoSuchBucket", "AllAccessDisabled", "AccountProblem",
    "InvalidSecurity", "AuthorizationHeaderMalformed", "PermanentRedirect", "403", "401",
})

_CREDENTIAL_ERRORS = (
    bce.NoCredentialsError, bce.PartialCredentialsError, bce.CredentialRetrievalError,
    bce.ProfileNotFound, bce.TokenRetrievalError, bce.SSOError, bce.UnauthorizedSSOTokenError,
    bce.InvalidConfigError,
)
_NETWORK_ERRORS = (
    bce.EndpointConnectionError, bce.ConnectionClosedError, bce.ReadTimeoutError, bce.ConnectTimeoutError,
    bce.ResponseStreamingError, bce.IncompleteReadError, bce.HTTPClientError,
    aiohttp.ClientError, asyncio.TimeoutError, ConnectionError,
)

_FATAL_HINTS = {
    "NoSuchBucket": "the bucket does not exist; check the bucket name and the endpoint",
    "InvalidAccessKeyId": "the access key is not known; check the profile's credentials",
    "SignatureDoesNotMatch": "the secret key is wrong; check the profile's credentials",
    "ExpiredToken": "the session token expired; refresh the credentials (aws sso login / new keys) and run again",
    "ExpiredTokenException": "the session token expired; refresh the credentials and run again",
    "AccessDenied": "these credentials may not read this bucket; check the profile and the bucket policy",
    "AuthorizationHeaderMalformed": "the region is wrong for this bucket; check the region setting",
    "PermanentRedirect": "the region is wrong for this bucket; check the region setting",
}


def classify(exc: BaseException, op: str, src: str, dst: str | None, where: str) -> FetchError:
    """Map a botocore/aiohttp/OS error to sci_fetch's tree; ``where`` names bucket and credentials."""
    if isinstance(exc, FetchError):
        return exc
    if isinstance(exc, bce.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        message = f"{code or status} {err.get('Message', '')}".strip()
        if code in MISSING_CODES or (status == 404 and code != "NoSuchBucket"):
            return MissingError(op, src, dst, f"not found ({message})")
        if code in FATAL_CODES or status in (401, 403):
            hint = _FATAL_HINTS.get(code, "check the credentials, the bucket and the region")
            return FatalError(op, src, dst, f"{message}; {where}: {hint}")
        if code in RETRY_CODES or status >= 500 or status == 429:
            reason = "slowdown" if code in ("SlowDown", "503") or status in (429, 503) else "server-error"
            return TransientError(op, src, dst, message, reason=reason)
        return PermanentError(op, src, dst, message)
    if isinstance(exc, bce.NoCredentialsError):
        return FatalError(op, src, dst, f"{exc}; {where}: set 'profile' to a profile in ~/.aws, or export "
                          "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or use --anonymous for a public bucket")
    if isinstance(exc, _CREDENTIAL_ERRORS):
        return FatalError(op, src, dst, f"{exc}; {where}: check that the profile exists in ~/.aws and has credentials")
    if isinstance(exc, _NETWORK_ERRORS):
        text = f"{type(exc).__name__}: {exc}".rstrip(": ")
        if isinstance(exc, (bce.ReadTimeoutError, bce.ConnectTimeoutError, asyncio.TimeoutError)):
            return TransientError(op, src, dst, text, reason="timeout")
        if isinstance(exc, (bce.IncompleteReadError, bce.ResponseStreamingError)):
            return TransientError(op, src, dst, text, reason="short-body")
        return TransientError(op, src, dst, text, reason="connection")
    return PermanentError(op, src, dst, f"{type(exc).__name__}: {exc}")


def reason_of(exc: BaseException | None) -> str:
    """A short word for the retry counters: which kind of fault the attempt hit."""
    return exc.reason if isinstance(exc, FetchError) else type(exc).__name__


def retrying(
    max_attempts: int, base_delay: float, max_delay: float, on_retry: Callable[[str], None] | None = None
) -> AsyncRetrying:
    """Exponential backoff with full jitter, capped per key; only RetryableError is retried."""

    def _before_sleep(state: RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None:
            on_retry(reason_of(state.outcome.exception()))

    return AsyncRetrying(
        retry=retry_if_exception_type(RetryableError),
        stop=stop_after_attempt(max_attempts),
        wait=wait_random_exponential(multiplier=base_delay, max=max_delay),
        before_sleep=_before_sleep,
        reraise=True,
    )
