"""The sink the storage layer streams an object into: a ``.partial`` file, checked, then renamed into place.

This is the "local temp file and rename" half of s5cmd's doDownload; the storage layer (the "remote read"
half) knows nothing of files. The checks live here because they are about the bytes kept: the size the
server announced, the ETag when it is an MD5, the md5 inside an Animl image id, and that the bytes are not
an empty object or an HTML/XML error page.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from sci_fetch.errors import IntegrityError, PermanentError
from sci_fetch.files.partial import PartialFile
from sci_fetch.files.verify import HEAD_BYTES, content_problem
from sci_fetch.storage.base import Expected, Kept


class VerifiedFile:
    """One attempt at one image: ``async with VerifiedFile(dest, md5) as sink``; write, then commit."""

    def __init__(
        self, dest: Path, expected_md5: str | None = None, fsync: bool = False, spill_at: int = 1 << 20
    ) -> None:
        self.dest = dest
        self.expected_md5 = expected_md5
        self._file = PartialFile(dest, fsync=fsync, spill_at=spill_at)
        self._head = b""  # the first bytes, for content_problem()

    async def __aenter__(self) -> VerifiedFile:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._file.__aexit__(exc_type, exc, tb)

    async def write(self, data: bytes | bytearray) -> None:
        if len(self._head) < HEAD_BYTES:
            self._head += data[: HEAD_BYTES - len(self._head)]
        await self._file.write(data)

    async def commit(self, expected: Expected) -> Kept:
        checks = [
            *(["size"] if expected.size is not None else []),
            *(["etag"] if expected.etag_md5 else []),
            *(["id-md5"] if self.expected_md5 else []),
        ]
        await self._file.commit(lambda md5: self._check(md5, expected))
        return Kept(md5=self._file.md5(), checks=",".join(checks), size=self._file.size)

    def _check(self, md5: str, expected: Expected) -> None:
        """Runs in commit's thread, before anything is under the final name."""
        src, dst, size = expected.source, str(self.dest), self._file.size
        if expected.size is not None and size != expected.size:
            raise IntegrityError(
                "get", src, dst, f"short body: got {size} of {expected.size} bytes", reason="short-body"
            )
        if expected.etag_md5 is not None and expected.etag_md5 != md5:
            raise IntegrityError(
                "get", src, dst, f"MD5 {md5} does not match ETag {expected.etag_md5}", reason="etag-mismatch"
            )
        if self.expected_md5 is not None and self.expected_md5 != md5:
            raise IntegrityError(
                "get",
                src,
                dst,
                f"MD5 {md5} does not match the md5 in the image id ({self.expected_md5})",
                reason="id-md5-mismatch",
            )
        problem = content_problem(self._head, size)
        if problem is not None:  # the stored object itself is not an image: no retry fixes it
            raise PermanentError("get", src, dst, problem, reason="not-an-image")
