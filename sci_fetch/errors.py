"""The errors sci_fetch raises, as one tree, so callers catch what they can act on.

Lower-library errors (botocore, aiohttp, OSError, ijson, pydantic) are mapped to these with
``raise ... from exc`` at the edge where they happen; nothing above the storage and file layers
sees a botocore or aiohttp exception.

    SciFetchError
    ├── UsageError                 bad setting or flag; exit 2 before any work starts
    ├── InputError                 the COCO file itself is unusable (not JSON, no ``images`` array)
    ├── RecordError                one COCO record is unusable; it is skipped and listed, the run goes on
    ├── DiskError                  cannot write under the output dir (ENOSPC, EACCES, ...); stops the run
    ├── BusyError                  another download holds the output folder's job lock; nothing is done
    └── FetchError                 one operation on one object, typed as {op, src, dst, err}
        ├── RetryableError         worth another attempt (the storage layer's retry list)
        │   ├── TransientError     5xx, 503 SlowDown, timeouts, connection resets
        │   └── IntegrityError     short body, size or MD5 mismatch against ETag or image id
        ├── MissingError           404 NoSuchKey: recorded as ``missing``, never retried
        ├── ForbiddenError         403 AccessDenied on one object once others succeeded: ``forbidden``
        ├── PermanentError         any other refusal of one object: recorded as ``failed``
        └── FatalError             credentials or access to the whole bucket: stops the run
            └── UnreachableError   the endpoint cannot be reached (never was, or for longer than
                                   ``outage_limit``): stops the run, images stay pending

Anything else raised below the engine is a bug, not a property of an image: it is re-raised as it is,
and the engine logs its traceback once and stops the run (exit 70).
"""

from __future__ import annotations


class SciFetchError(Exception):
    """Base of everything sci_fetch raises on purpose."""


class UsageError(SciFetchError):
    """A setting or flag has a value sci_fetch cannot use."""


class InputError(SciFetchError):
    """The input file as a whole cannot be read."""


class RecordError(SciFetchError):
    """One record of the input is unusable; carries where it was so the user can find it."""

    def __init__(self, index: int, reason: str, record_id: str | None = None, array: str = "images") -> None:
        self.index = index
        self.reason = reason
        self.record_id = record_id
        self.array = array
        where = f"{array}[{index}]" + (f" (id {record_id!r})" if record_id else "")
        super().__init__(f"{where}: {reason}")


class DiskError(SciFetchError):
    """Writing a file failed for a reason no retry fixes (disk full, permissions)."""


class BusyError(SciFetchError):
    """Another sci-fetch download runs on the same output folder (it holds the job lock)."""


class FetchError(SciFetchError):
    """An operation on one object failed: ``op`` on ``src`` into ``dst`` because of ``err``.

    Shaped like s5cmd's ``Error{Op, Src, Dst, Err}`` so every message names what, where and why.
    """

    reason: str = "error"

    def __init__(self, op: str, src: str, dst: str | None, err: str, reason: str | None = None) -> None:
        self.op = op
        self.src = src
        self.dst = dst
        self.err = err
        if reason is not None:
            self.reason = reason  # a short word for counters: "slowdown", "timeout", "short-body", ...
        self.attempts = 0
        self.no_answer = False  # failed before any response (refused, DNS, TLS, timeout): the outage gate counts these
        super().__init__(self.__str__())

    def __str__(self) -> str:
        dst = f" -> {self.dst}" if self.dst else ""
        return f"{self.op} {self.src}{dst}: {self.err}"


class RetryableError(FetchError):
    """Another attempt may succeed."""


class TransientError(RetryableError):
    """The server or network failed this time (5xx, throttling, timeout, reset)."""

    reason = "transient"


class IntegrityError(RetryableError):
    """The bytes received are not the object's bytes (short body, size or MD5 mismatch)."""

    reason = "integrity"


class MissingError(FetchError):
    """The key does not exist (404); retrying will not make it appear."""

    reason = "missing"


class ForbiddenError(FetchError):
    """403 AccessDenied for one key: S3 says this, not 404, for a missing key when the caller may not
    list the bucket. Fatal while no object of the run has succeeded (the engine decides), else per image.
    ``hint`` says what to check when no key is readable; the storage layer that raised it knows (anonymous
    access or credentials) and fills it in."""

    reason = "forbidden"
    hint = "check the credentials, the bucket policy, the variant and the key template"


class PermanentError(FetchError):
    """The server refused this one object for a reason a retry does not fix."""

    reason = "permanent"


class FatalError(FetchError):
    """Credentials or bucket access are wrong: every other key would fail the same way."""

    reason = "fatal"


class UnreachableError(FatalError):
    """The endpoint answers no request at the connection level (refused, DNS, TLS, timeouts)."""

    reason = "unreachable"
