"""files.sink.VerifiedFile: what it checks, what it keeps, what it reports."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from sci_fetch.errors import IntegrityError
from sci_fetch.files.sink import VerifiedFile
from sci_fetch.storage.base import Expected

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40


async def keep(dest, data: bytes, expected: Expected, id_md5: str | None = None):
    async with VerifiedFile(dest, id_md5) as sink:
        for i in range(0, len(data), 1000):
            await sink.write(bytearray(data[i : i + 1000]))
        return await sink.commit(expected)


def test_a_chunked_body_has_no_announced_size_and_is_kept_on_its_md5(tmp_path):
    md5 = hashlib.md5(JPEG).hexdigest()
    kept = asyncio.run(keep(tmp_path / "a.jpg", JPEG, Expected("s3://b/a", None, md5), md5))
    assert (kept.size, kept.md5, kept.checks) == (len(JPEG), md5, "etag,id-md5")
    assert (tmp_path / "a.jpg").read_bytes() == JPEG


def test_a_body_shorter_than_announced_is_refused_and_nothing_is_kept(tmp_path):
    with pytest.raises(IntegrityError, match=f"short body: got {len(JPEG)} of {len(JPEG) + 1}"):
        asyncio.run(keep(tmp_path / "a.jpg", JPEG, Expected("s3://b/a", len(JPEG) + 1, None)))
    assert list(tmp_path.iterdir()) == []
