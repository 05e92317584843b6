import hashlib

import pytest

from sci_fetch.files.partial import PartialFile


async def test_small_object_touches_the_disk_only_at_commit(tmp_path):
    dest = tmp_path / "a.jpg"
    async with PartialFile(dest, spill_at=1024) as out:
        await out.write(b"x" * 600)
        assert list(tmp_path.iterdir()) == [] and out.size == 600
        seen = []
        await out.commit(seen.append)
    assert seen == [hashlib.md5(b"x" * 600).hexdigest()] == [out.md5()]
    assert dest.read_bytes() == b"x" * 600 and list(tmp_path.iterdir()) == [dest]
    assert dest.stat().st_mode & 0o002 == 0  # not world-writable


async def test_large_object_spills_to_the_partial_file(tmp_path):
    dest = tmp_path / "b.jpg"
    data = bytes(range(256)) * 20
    async with PartialFile(dest, spill_at=1000) as out:
        for i in range(0, len(data), 700):
            await out.write(data[i : i + 700])
        assert (tmp_path / "b.jpg.partial").exists() and not dest.exists()
        await out.commit()
    assert dest.read_bytes() == data and not (tmp_path / "b.jpg.partial").exists()


@pytest.mark.parametrize("size", [10, 5000])
async def test_failure_before_commit_leaves_nothing_and_removes_a_stale_partial(tmp_path, size):
    dest = tmp_path / "c.jpg"
    (tmp_path / "c.jpg.partial").write_bytes(b"left by a killed run")
    with pytest.raises(RuntimeError):
        async with PartialFile(dest, spill_at=1000) as out:
            await out.write(b"y" * size)
            raise RuntimeError("checksum mismatch")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("size", [10, 5000])
async def test_a_refusing_check_writes_nothing_under_the_final_name(tmp_path, size):
    dest = tmp_path / "d.jpg"

    def refuse(md5: str) -> None:
        raise ValueError(f"md5 {md5} is not the one in the image id")

    with pytest.raises(ValueError, match=hashlib.md5(b"z" * size).hexdigest()):
        async with PartialFile(dest, spill_at=1000) as out:
            await out.write(b"z" * size)
            await out.commit(refuse)
    assert list(tmp_path.iterdir()) == []
