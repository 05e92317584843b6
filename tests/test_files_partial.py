import asyncio
import hashlib

import pytest

from sci_fetch.errors import PermanentError
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


def test_a_cancelled_spill_open_leaves_no_partial_even_when_the_loop_ends_first(tmp_path, monkeypatch):
    """The open runs in a thread; the run may end (and its loop close) before that thread finishes."""
    import threading as _threading

    from sci_fetch.files import partial as partial_module

    entered, release = _threading.Event(), _threading.Event()
    real_create = partial_module._create

    def slow_create(path):
        entered.set()
        release.wait(30)  # still creating when the task is cancelled and the loop winds down
        return real_create(path)

    monkeypatch.setattr(partial_module, "_create", slow_create)
    dest = tmp_path / "img.jpg"

    async def main():
        async def writer():
            async with PartialFile(dest, fsync=False, spill_at=10) as f:
                await f.write(b"x" * 100)  # spills: opens the .partial in a worker thread

        task = asyncio.create_task(writer())
        await asyncio.to_thread(entered.wait, 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()  # the thread now creates the file; the loop ends right after

    asyncio.run(main())  # waits for the thread pool before it returns
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_leaving_without_commit_never_turns_a_clean_up_failure_into_the_error(tmp_path):
    dest = tmp_path / "a.jpg"
    (tmp_path / "a.jpg.partial").mkdir()  # something .partial cannot be removed as a file

    async def failing():
        async with PartialFile(dest, fsync=False):
            raise ValueError("the real error")

    with pytest.raises(ValueError, match="the real error"):
        asyncio.run(failing())

    async def abandoned():
        async with PartialFile(dest, fsync=False):
            pass

    with pytest.raises(PermanentError, match="remove .*a.jpg.partial"):
        asyncio.run(abandoned())
