"""The COCO file's images as batches of tasks and rejects: read in the planning thread, or in a child process.

A resume of a million images spends about 40 % of its one planning thread reading the COCO file (ijson,
coco.guard, pydantic) and mapping its records (``make_task``), and the rest in the manifest (a stat per image,
SQLite), while the second core idles. For a big file one child process reads, validates, maps and filters
(shard, process share, ``--limit``) and sends compact batches up a pipe; the planning thread turns them into
decisions, so the two halves run on two cores. Whichever half is ahead also asks the disk for the size of
each task's file (``Sizes``), the planner's stat of every done image: the child does it for a batch while
earlier batches wait unread in the pipe (the planner is behind), else the planner does. Measured on a resume
of a million images (bench/results/2026-12-03-sizes.md): with the planner asking every size, the child
spent 14 s of CPU and 8.6 s blocked on a full pipe while the planner spent 23.5 s, 8 of them in that stat;
with the child asking every size, the child became the slower half (22.7 s against 19.1 s). ``plan_chunk``
is the one implementation of a batch: the planning thread calls it for a small file, the child for a big one,
so both paths decide the same.

The child is a fresh interpreter (the parent has threads and an event loop: never fork), started as
multiprocessing's spawn does but without its re-import of the parent's main module: a script that calls
``sci_fetch.download`` without ``if __name__ == "__main__":`` would run again in a spawned child (found
while measuring: the run stopped with a bootstrapping traceback), and the ``sci-fetch`` command's own script
would import the whole CLI there. Batches go up a pipe framed by multiprocessing's ``Connection``. The child
ignores SIGINT and SIGTERM (the parent's Stop owns signals; a terminal's Ctrl-C reaches the whole process
group), is killed and reaped on every exit of the batches' ``with`` block (the end, a stop, an error, a
generator closed early), and ends on a broken pipe when the parent is gone.
"""

from __future__ import annotations

import array
import base64
import contextlib
import fcntl
import gc
import json
import operator
import os
import pickle
import subprocess
import sys
import termios
import traceback
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from itertools import islice
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sci_fetch.coco.models import CocoImage
from sci_fetch.coco.source import iter_images
from sci_fetch.errors import InputError, RecordError, SciFetchError
from sci_fetch.fs.root import OutputRoot
from sci_fetch.keys.collisions import Reject
from sci_fetch.keys.mapping import Task, UnsafePathError, Variant, make_task
from sci_fetch.keys.shard import process_of, shard_of

if TYPE_CHECKING:  # not imported at run time: the child starts faster without pydantic-settings
    from sci_fetch.settings import Settings


BATCH = 512  # records per batch: one manifest transaction in the planner
CHILD_FROM_BYTES = 32 * 2**20
"""A COCO file at least this big (~85,000 Animl images at ~390 bytes each) is read in a child process.
Measured (bench/results/2026-12-03-reader.md): the child's first batch comes 0.41-0.51 s after its start (a
fresh interpreter importing ijson, pydantic and the COCO models; ~0.35 s of CPU), while the planning thread
has nothing to plan; after that each image costs the parent ~3 µs (unpickle, Task) instead of the ~28 µs of
reading it. So it pays from about 20,000 images (~8 MB); the threshold is a few times that, so that a small
job never waits on a process start and the SCI export (110,320 images, 43 MB) already gets the child."""
PIPE_BYTES = 2**20  # the pipe's kernel buffer: ~8 batches (~130 KB pickled each) read ahead, memory flat
BEHIND_BYTES = 32 * 2**10
"""Unread bytes in the pipe from which the child asks the next batch's Sizes itself: the planner has not taken
a quarter of a batch yet, so it is busy (a planner that waits drains each batch as it comes)."""
POLL_SECONDS = 0.2  # how often a planner waiting for a batch asks whether the run was stopped

Batch = tuple[list[Task], list[Reject]]
Sizes = dict[str, int | None]
"""A batch's destinations -> the size of the file there (None: absent, or its folder leads out of the output
dir): OutputRoot.size_of, asked by the child (when the planner is behind: BEHIND_BYTES) a few batches (at most
a pipe's worth) before the planner decides. That early is as good: a file this run writes is one the planner
already chose to fetch, and a later record of the same destination is a duplicate that needs no size; a
feed's image is planned as ``queued``, also without one."""
Read = tuple[list[Task], list[Reject], Sizes | None]  # what ``batches`` yields; sizes None: the planner asks
# A Task as the tuple of its fields in Task(*fields) order: a quarter of the pickling of the objects
_task_fields = operator.attrgetter(*Task.__match_args__)
Numbered = tuple[int, CocoImage | RecordError]


class ReaderDied(SciFetchError):
    """The child that reads the COCO file ended without saying why (killed, out of memory)."""


class ReaderBug(RuntimeError):
    """An unexpected exception in the child: a bug, re-raised in the parent with the child's traceback."""


class _ChildTraceback(Exception):
    """The child's traceback, as the cause of a ReaderBug, so the parent's log shows where it happened."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f"\n\n(in the COCO reader process)\n{self.text}"


@dataclass(frozen=True)
class ReadSpec:
    """What reading the file takes, picklable and small (the child is given this, not the Settings)."""

    coco: Path
    limit: int | None
    variant: Variant
    key_template: str | None
    verify_id_md5: bool
    shard: tuple[int, int] = (0, 1)  # (index, count) of --shard
    share: tuple[int, int] = (0, 1)  # (index, count) of --processes
    output: Path | None = None  # where the child asks for the files' sizes (Sizes); None: it does not
    sizes_from: int = BEHIND_BYTES  # the pipe's unread bytes from which it does (0: every batch)

    @classmethod
    def of(cls, settings: Settings, share: tuple[int, int]) -> ReadSpec:
        assert settings.coco is not None  # checked before a run starts (engine.job)
        shard = (settings.shard_index or 0, settings.shard_count)
        return cls(
            settings.coco,
            settings.limit,
            settings.variant,
            settings.key_template,
            settings.verify_id_md5,
            shard,
            share,
            settings.output.absolute(),
            BEHIND_BYTES,
        )

    def mine(self, image_id: str) -> bool:
        """Whether this shard and this process take the image."""
        (index, count), (process, processes) = self.shard, self.share
        if count > 1 and shard_of(image_id, count) != index:
            return False
        return processes <= 1 or process_of(image_id, processes) == process

    @property
    def reports_invalid(self) -> bool:
        """Invalid records are listed once, not by every shard and process."""
        return self.shard[0] == 0 and self.share[0] == 0


def plan_chunk(chunk: list[Numbered], spec: ReadSpec) -> Batch:
    """The tasks of this shard and process, and the rejects of invalid records, in the file's order."""
    tasks: list[Task] = []
    rejects: list[Reject] = []
    reports_invalid = spec.reports_invalid
    for index, item in chunk:
        if isinstance(item, RecordError):
            if reports_invalid:
                rejects.append(("invalid", f"images[{item.index}]", item.record_id, None, None, item.reason))
            continue
        if not spec.mine(item.id):
            continue
        try:
            tasks.append(make_task(item, spec.variant, spec.key_template, spec.verify_id_md5))
        except (UnsafePathError, ValueError, KeyError, IndexError) as exc:
            rejects.append(("invalid", f"images[{index}]", item.id, None, item.file_name, str(exc)))
    return tasks, rejects


def numbered(records: Iterator[CocoImage | RecordError], limit: int | None) -> Iterator[Numbered]:
    """Number the records and stop after ``limit`` valid ones (invalid ones are still reported)."""
    valid = 0
    for index, record in enumerate(records):
        if limit is not None and valid >= limit:
            return
        if not isinstance(record, RecordError):
            valid += 1
        yield index, record


def read_here(spec: ReadSpec) -> Generator[Batch, None, None]:
    """The batches, read in the calling thread. An InputError (broken JSON at record N, coco.guard's limits)
    comes after the batches before the one it cut short, which is lost whole (as the child's is)."""
    images = numbered(iter_images(spec.coco), spec.limit)
    while chunk := list(islice(images, BATCH)):
        yield plan_chunk(chunk, spec)


def uses_child(spec: ReadSpec, dry_run: bool) -> bool:
    """A child pays for a big file read by one process; ``--processes N`` already uses the cores. Not for a dry
    run: its exit code ignores the images left unread, so a reader that died there would end it with 0."""
    if spec.share[1] > 1 or dry_run:
        return False
    try:
        return os.stat(spec.coco).st_size >= CHILD_FROM_BYTES
    except OSError:  # the reader says why, as it always did
        return False


@contextlib.contextmanager
def batches(spec: ReadSpec, stopped: Callable[[], bool], dry_run: bool = False) -> Iterator[Iterator[Read]]:
    """The file's batches, from a child for a big file (with their Sizes when ``spec.output`` is set), else read
    here (no Sizes); ``stopped()`` ends a wait for the child early. The child is killed and joined when the
    block ends, however it ends."""
    if not uses_child(spec, dry_run):
        with contextlib.closing(read_here(spec)) as here:
            yield ((tasks, rejects, None) for tasks, rejects in here)
        return
    child = ChildReader(spec, stopped)
    try:
        yield iter(child)
    finally:
        child.close()


class ChildReader:
    """The parent's end of the reading child: its batches as Tasks; its error, death or bug as one exception."""

    def __init__(self, spec: ReadSpec, stopped: Callable[[], bool]) -> None:
        self._stopped = stopped
        self._images = 0
        receive, send = os.pipe()
        self._conn = Connection(receive, writable=False)
        _widen(receive)
        try:
            self._process = subprocess.Popen(
                _child_argv(spec, send),
                pass_fds=(send,),
                stdin=subprocess.DEVNULL,
            )
        except OSError:
            self._conn.close()
            raise
        finally:
            os.close(send)  # the child holds the only write end: its death is an EOF here

    def __iter__(self) -> Iterator[Read]:
        while (message := self._receive()) is not None:
            kind = message[0]
            if kind == "batch":
                tasks = [Task(*t) for t in message[1]]
                self._images += len(tasks)
                sizes = message[3]
                yield (
                    tasks,
                    message[2],
                    None if sizes is None else dict(zip([t.dest for t in tasks], sizes, strict=True)),
                )
            elif kind == "end":
                return
            elif kind == "input":
                raise InputError(message[1])
            else:
                raise ReaderBug(f"the COCO reader process failed: {message[1]}") from _ChildTraceback(message[2])

    def _receive(self) -> tuple[Any, ...] | None:
        """The child's next message; None when the run was stopped."""
        if self._stopped():
            return None
        try:
            while not self._conn.poll(POLL_SECONDS):
                if self._stopped():
                    return None
            message: tuple[Any, ...] = self._conn.recv()
        except (EOFError, ConnectionError) as exc:
            raise self._died() from exc
        return message

    def _died(self) -> ReaderDied:
        try:
            code: int | None = self._process.wait(5)
        except subprocess.TimeoutExpired:  # it closed its end but lives on: close() kills it
            code = None
        how = "still running" if code is None else f"signal {-code}" if code < 0 else f"exit {code}"
        return ReaderDied(
            f"stopping: the COCO reader process (pid {self._process.pid}) died ({how}) after {self._images:,} "
            "of this run's images; the images not read yet are not planned: run the same command again"
        )

    def close(self) -> None:
        """Kill (it ignores SIGTERM) and reap the child, whatever state it is in; idempotent."""
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        self._conn.close()


def _widen(fd: int) -> None:
    """A bigger pipe lets the child read a few batches ahead of the planner (Linux; elsewhere the default)."""
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setsize is not None:
        with contextlib.suppress(OSError):  # above /proc/sys/fs/pipe-max-size for this user: the default is fine
            fcntl.fcntl(fd, setsize, PIPE_BYTES)


# The child's whole program: signals ignored first (a terminal's Ctrl-C reaches the process group; the parent's
# Stop owns signals and kills this process), then the parent's sys.path (as spawn gives it), so the child
# imports the sci_fetch the parent runs.
_CHILD_CODE = (
    "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "import json, sys; sys.path[:] = json.loads(sys.argv[2])\n"
    "from sci_fetch.engine.reader import child_entry; child_entry(sys.argv[1:])"
)


def _child_argv(spec: ReadSpec, send: int) -> list[str]:
    payload = base64.b64encode(pickle.dumps(spec)).decode()
    return [sys.executable, "-c", _CHILD_CODE, str(send), json.dumps(sys.path), payload]


def child_entry(argv: list[str]) -> None:
    """The child's entry: the pipe's write end, (sys.path,) and the pickled ReadSpec, from its command line."""
    spec = pickle.loads(base64.b64decode(argv[2]))
    child_main(spec, Connection(int(argv[0]), readable=False))


def child_main(spec: ReadSpec, conn: Connection) -> None:
    """The child: every batch up the pipe, then ``end``, or the InputError's line, or a bug's traceback."""
    gc.set_threshold(50_000, 20, 100)  # many short-lived records, no cycles: as the parent's quiet_gc
    last: tuple[Any, ...]
    output = None if spec.output is None else OutputRoot(spec.output)
    try:
        for tasks, rejects in read_here(spec):
            sizes = None
            if output is not None and _unread(conn) >= spec.sizes_from:  # the planner is behind: ask them here
                sizes = [output.size_of(t.dest) for t in tasks]
            if not _send(conn, ("batch", list(map(_task_fields, tasks)), rejects, sizes)):
                return  # the parent is gone or no longer reading
        last = ("end",)
    except InputError as exc:
        last = ("input", str(exc))
    except Exception as exc:  # a bug: the parent re-raises it with this traceback and stops the run (exit 70)
        last = ("bug", f"{type(exc).__name__}: {exc}", traceback.format_exc())
    _send(conn, last)
    conn.close()


def _unread(conn: Connection) -> int:
    """The bytes written to the pipe and not read yet (Linux: FIONREAD on either end; elsewhere 0 is possible,
    and then the planner asks every size, as it did before the child could)."""
    count = array.array("i", [0])
    try:
        fcntl.ioctl(conn.fileno(), termios.FIONREAD, count)
    except OSError:
        return 0
    return count[0]


def _send(conn: Connection, message: tuple[Any, ...]) -> bool:
    try:
        conn.send(message)
    except (BrokenPipeError, ConnectionResetError):
        return False
    return True
