"""Which failures are retried, which never are, and how long to wait: the only retry policy there is.

botocore's own retries are switched off (``total_max_attempts=1``) so this table is the whole truth,
and a checksum mismatch or short body is retried exactly like a 503.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

import aiohttp
import botocore.exceptions as bce
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_random_exponential

from sci_fetch.errors import (
    FatalError,
    FetchError,
    ForbiddenError,
    MissingError,
    PermanentError,
    RetryableError,
    TransientError,
)
from sci_fetch.storage import wire
from sci_fetch.storage.region import wrong_region

# Error codes S3 (and S3-compatible servers) send that another attempt may fix.
RETRY_CODES = frozenset(
    {
        "SlowDown",
        "ServiceUnavailable",
        "InternalError",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequests",
        "BandwidthLimitExceeded",
        "500",
        "502",
        "503",
        "504",
    }
)
# Codes (and statuses) that mean "send fewer requests": they drive the run's request rate (storage.rate) down.
THROTTLE_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests", "503", "429"}
)
THROTTLE_STATUSES = frozenset({429, 503})
# Codes that mean the key is not there; never retried, recorded as ``missing``.
MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
# 403 for one key: S3 says AccessDenied, not 404, for a missing key when the caller may not list the
# bucket (scoped credentials, most public buckets). Never retried; the engine stops the run on it only
# while no object of the run has succeeded, else records the image as ``forbidden``.
FORBIDDEN_CODES = frozenset({"AccessDenied", "403"})
# Codes that mean every key would fail alike: stop the run instead of failing 110,000 keys one by one.
FATAL_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "TokenRefreshRequired",
        "InvalidToken",
        "NoSuchBucket",
        "AllAccessDisabled",
        "AccountProblem",
        "InvalidSecurity",
        "AuthorizationHeaderMalformed",
        "PermanentRedirect",
        "401",
    }
)

_CREDENTIAL_ERRORS = (
    bce.NoCredentialsError,
    bce.PartialCredentialsError,
    bce.CredentialRetrievalError,
    bce.ProfileNotFound,
    bce.TokenRetrievalError,
    bce.SSOError,
    bce.UnauthorizedSSOTokenError,
    bce.InvalidConfigError,
)
_NETWORK_ERRORS = (
    bce.EndpointConnectionError,
    bce.ConnectionClosedError,
    bce.ReadTimeoutError,
    bce.ConnectTimeoutError,
    bce.ResponseStreamingError,
    bce.IncompleteReadError,
    bce.HTTPClientError,
    aiohttp.ClientError,
    asyncio.TimeoutError,
    ConnectionError,
    wire.WireError,
)
# Failures before any response came back: what a dead endpoint or a network outage looks like. A reset
# or short body mid-transfer is not one of them (the server answered); the outage gate counts only these.
_NO_ANSWER = (
    bce.EndpointConnectionError,
    bce.ConnectTimeoutError,
    bce.ReadTimeoutError,
    bce.ConnectionClosedError,
    aiohttp.ClientOSError,
    aiohttp.ServerDisconnectedError,
    asyncio.TimeoutError,  # ClientOSError: reset before an answer
    ConnectionRefusedError,
    ConnectionResetError,
    wire.NoAnswer,
)

_SSL_ERRORS = (bce.SSLError, aiohttp.ClientSSLError, ssl.SSLError)  # no answer either: the handshake failed

_FATAL_HINTS = {
    "NoSuchBucket": "the bucket does not exist; check the bucket name and the endpoint",
    "InvalidAccessKeyId": "the access key is not known; check the profile's credentials",
    "SignatureDoesNotMatch": "the secret key is wrong; check the profile's credentials",
    "ExpiredToken": "the session token expired; refresh the credentials (aws sso login / new keys) and run again",
    "ExpiredTokenException": "the session token expired; refresh the credentials and run again",
    "AccessDenied": "these credentials may not read this bucket; check the profile and the bucket policy",
}


def forbidden_hint(anonymous: bool) -> str:
    """What to check when no key of a run is readable (403 on all): the engine and the plan say the same."""
    if anonymous:
        return (
            "this bucket may not allow anonymous reads (or the keys are wrong); check the bucket, its policy, "
            "the variant and the key template, or drop --anonymous and use a profile"
        )
    return (
        "these credentials may not read this bucket (or the keys are wrong and listing is not allowed); "
        "check the profile, the bucket policy, the variant and the key template"
    )


def classify(exc: BaseException, op: str, src: str, dst: str | None, where: str) -> FetchError | None:
    """Map a botocore/aiohttp error this table knows to sci_fetch's tree; ``where`` names bucket and
    credentials. None for anything else: a bug must surface as itself, never as a failed image."""
    if isinstance(exc, FetchError):
        return exc
    if isinstance(exc, bce.ClientError):
        moved = wrong_region(exc, op, src, dst, where)  # 301/307/400 naming another region: followed by storage.s3
        if moved is not None:
            return moved
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        message = f"{code or status} {err.get('Message', '')}".strip()
        if code in MISSING_CODES or (status == 404 and code != "NoSuchBucket"):
            return MissingError(op, src, dst, f"not found ({message})")
        if code in FORBIDDEN_CODES or (status == 403 and code not in FATAL_CODES):
            return ForbiddenError(op, src, dst, f"missing, or no permission ({message}); {where}")
        if code in FATAL_CODES or status == 401:
            hint = _FATAL_HINTS.get(code, "check the credentials, the bucket and the region")
            return FatalError(op, src, dst, f"{message}; {where}: {hint}")
        if code in RETRY_CODES or status >= 500 or status == 429:
            reason = "slowdown" if code in THROTTLE_CODES or status in THROTTLE_STATUSES else "server-error"
            return TransientError(op, src, dst, message, reason=reason)
        return PermanentError(op, src, dst, message)
    if isinstance(exc, bce.NoCredentialsError):
        return FatalError(
            op,
            src,
            dst,
            f"{exc}; {where}: set 'profile' to a profile in ~/.aws, or export "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or use --anonymous for a public bucket",
        )
    if isinstance(exc, _CREDENTIAL_ERRORS):
        return FatalError(op, src, dst, f"{exc}; {where}: check that the profile exists in ~/.aws and has credentials")
    if isinstance(exc, _SSL_ERRORS):
        if "CERTIFICATE_VERIFY_FAILED" in str(exc) or isinstance(exc, aiohttp.ClientConnectorCertificateError):
            return FatalError(
                op,
                src,
                dst,
                f"TLS: the server's certificate is not trusted ({exc}); {where}: for a "
                "private S3-compatible server, point AWS_CA_BUNDLE (or the 'ca_bundle' setting) at its CA",
            )
        return _transient(exc, op, src, dst, "connection")
    if isinstance(exc, _NETWORK_ERRORS):
        if isinstance(exc, (bce.ReadTimeoutError, bce.ConnectTimeoutError, asyncio.TimeoutError)):
            return _transient(exc, op, src, dst, "timeout")
        if isinstance(exc, (bce.IncompleteReadError, bce.ResponseStreamingError)):
            return _transient(exc, op, src, dst, "short-body")
        if isinstance(exc, wire.Stalled):
            return _transient(exc, op, src, dst, "stalled")
        return _transient(exc, op, src, dst, "connection")
    return None


def _transient(exc: BaseException, op: str, src: str, dst: str | None, reason: str) -> TransientError:
    text = f"{type(exc).__name__}: {exc}".rstrip(": ")
    error = TransientError(op, src, dst, text, reason=reason)
    error.no_answer = isinstance(exc, _NO_ANSWER + _SSL_ERRORS)
    return error


def reason_of(exc: BaseException | None) -> str:
    """A short word for the retry counters: which kind of fault the attempt hit."""
    return exc.reason if isinstance(exc, FetchError) else type(exc).__name__


class Budget:
    """One key's attempts. An attempt lost to an outage (see storage.reachability) is given back, so a
    long outage never uses up a key's attempts, and no backoff is slept for it (the outage gate waits).
    At most ``MAX_GIVE_BACKS`` times per key, so an endpoint that answers probes but never this key
    cannot keep it going for ever."""

    MAX_GIVE_BACKS = 20
    MAX_FORGIVEN = 10

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.given_back = 0
        self.forgiven = 0
        self.last_given_back = False

    def last_attempt(self) -> bool:
        return self.used - self.given_back - self.forgiven >= self.limit

    def forgive(self) -> None:
        """A throttled attempt (SlowDown): the run's request rate was cut for it (storage.rate), so it does not use
        up the key's attempts; it still waits its backoff and is still counted. At most ``MAX_FORGIVEN`` per key,
        so a server that throttles for ever still ends the key."""
        if self.forgiven < self.MAX_FORGIVEN:
            self.forgiven += 1

    def can_give_back(self) -> bool:
        return self.given_back < self.MAX_GIVE_BACKS

    def give_back(self) -> None:
        self.given_back += 1
        self.last_given_back = True

    def counted(self) -> int:
        return self.used - self.given_back


def retrying(
    max_attempts: int,
    base_delay: float,
    max_delay: float,
    on_retry: Callable[[str], None] | None = None,
    budget: Budget | None = None,
) -> AsyncRetrying:
    """Exponential backoff with full jitter, capped per key; only RetryableError is retried."""
    budget = budget or Budget(max_attempts)
    backoff = wait_random_exponential(multiplier=base_delay, max=max_delay)

    def _stop(state: RetryCallState) -> bool:
        return state.attempt_number - budget.given_back - budget.forgiven >= budget.limit

    def _wait(state: RetryCallState) -> float:
        if budget.last_given_back:
            budget.last_given_back = False
            return 0.0
        return backoff(state)

    def _before_sleep(state: RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None:
            on_retry(reason_of(state.outcome.exception()))

    return AsyncRetrying(
        retry=retry_if_exception_type(RetryableError),
        stop=_stop,
        wait=_wait,
        before_sleep=_before_sleep,
        reraise=True,
    )
