"""Which keys are still to fetch, and a uniform random sample of them, in one streaming pass.

The same mapping the engine uses (COCO source, shard, ``make_task``), minus what the manifest already
holds as done (and as missing, unless ``retry_missing``): the plan is about what a run would fetch.
Reservoir sampling keeps memory at the sample's size whatever the COCO file's.
"""

from __future__ import annotations

import hashlib
import logging
import random
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice

from sci_fetch.coco.source import iter_images
from sci_fetch.errors import RecordError
from sci_fetch.keys.collisions import FoldCheck
from sci_fetch.keys.mapping import Task, UnsafePathError, make_task
from sci_fetch.keys.shard import shard_of
from sci_fetch.manifest.folds import TempFolds
from sci_fetch.manifest.models import State
from sci_fetch.manifest.sql import select_in
from sci_fetch.manifest.store import Manifest
from sci_fetch.settings import Settings

log = logging.getLogger("sci_fetch")


@dataclass
class Population:
    images: int = 0  # usable records of this shard (after --limit), duplicates counted once
    invalid: int = 0  # records the run would reject (bad record, unsafe file_name, duplicate)
    done: int = 0  # already done in the manifest
    known_missing: int = 0  # 404 in an earlier run (not asked again without retry_missing)
    remaining: int = 0  # keys a run would fetch: what the sample is drawn from
    sample: list[Task] = field(default_factory=list)


def _tasks(settings: Settings, population: Population) -> Iterator[Task]:
    """The tasks a run would plan, in COCO order; counts the records it would reject, destinations that are
    one file on macOS/Windows included (21.8: checked a batch at a time in a temporary SQLite table)."""
    claims = TempFolds()
    folds = FoldCheck(claims.claim, settings.case_insensitive_names)
    unique = _unique_tasks(settings, population)
    try:
        while batch := list(islice(unique, 512)):
            kept = folds.apply(batch)[0]
            population.invalid += len(batch) - len(kept)
            yield from kept
        folds.warn(log)
    finally:
        claims.close()


class _Seen:
    """The ids and destinations met so far, as 64-bit hashes in a private temporary database (SQLite spills
    it to a temporary file past its cache): a million of each cost its cache's memory, not the few hundred MB
    of two sets of strings. Two names with one hash (about 1 in 10^7 for a file of 7 million) would count a
    record a duplicate in this estimate only; the download checks names themselves."""

    def __init__(self) -> None:
        self._db = sqlite3.connect("", isolation_level=None)
        self._db.executescript(  # a scratch table: nothing to roll back or make durable
            "PRAGMA cache_size = -32768; PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;"
            "CREATE TABLE seen (h INTEGER PRIMARY KEY);"
        )

    def _known(self, hashes: list[int]) -> set[int]:
        return {h for (h,) in select_in(self._db, "SELECT h FROM seen WHERE h IN ({})", hashes)}

    def fresh(self, tasks: list[Task]) -> list[bool]:
        """For each task in order: whether neither its id nor its destination was met before (this batch's included)."""
        pairs = [(_hash("id:" + t.image_id), _hash("dest:" + t.dest)) for t in tasks]
        seen = self._known([h for pair in pairs for h in pair])
        kept: list[bool] = []
        for image_id, dest in pairs:
            kept.append(image_id not in seen and dest not in seen)
            if kept[-1]:  # a duplicate claims nothing: a later record may still use its other name
                seen.update((image_id, dest))
        self._db.execute("BEGIN")
        self._db.executemany(
            "INSERT INTO seen VALUES (?)", [(h,) for pair, k in zip(pairs, kept, strict=True) if k for h in pair]
        )
        self._db.execute("COMMIT")
        return kept

    def close(self) -> None:
        self._db.close()


def _hash(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


def _unique_tasks(settings: Settings, population: Population) -> Iterator[Task]:
    """The mapped tasks, less the later records of an id or a destination met before (counted invalid)."""
    seen = _Seen()
    try:
        mapped = _mapped_tasks(settings, population)
        while batch := list(islice(mapped, 512)):
            for task, fresh in zip(batch, seen.fresh(batch), strict=True):
                if fresh:
                    yield task
                else:
                    population.invalid += 1
    finally:
        seen.close()


def _mapped_tasks(settings: Settings, population: Population) -> Iterator[Task]:
    assert settings.coco is not None  # a plan is made for a COCO file (checked before it starts)
    for item in islice(iter_images(settings.coco), settings.limit):
        if isinstance(item, RecordError):
            population.invalid += 1
            continue
        if settings.shard_count > 1 and shard_of(item.id, settings.shard_count) != settings.shard_index:
            continue
        try:
            yield make_task(item, settings.variant, settings.key_template, settings.verify_id_md5)
        except (UnsafePathError, ValueError, KeyError, IndexError):
            population.invalid += 1


def sample_remaining(settings: Settings, size: int, rng: random.Random) -> Population:
    """Count the keys still to fetch and draw ``size`` of them uniformly (all of them when fewer).

    The manifest is asked about each batch of 512 tasks in one query (``Manifest.states_of``), so memory
    stays at a batch's whatever the size of the COCO file and the manifest."""
    if size < 0:
        raise ValueError("sample size must not be negative")
    population = Population()
    manifest = Manifest(settings.manifest_path, readonly=True) if settings.manifest_path.exists() else None
    try:
        tasks = _tasks(settings, population)
        while batch := list(islice(tasks, 512)):
            settled = manifest.states_of([t.image_id for t in batch]) if manifest is not None else {}
            for task in batch:
                _count(population, task, settled.get(task.image_id), settings.retry_missing, size, rng)
    finally:
        if manifest is not None:
            manifest.close()
    return population


def _count(
    population: Population, task: Task, state: State | None, retry_missing: bool, size: int, rng: random.Random
) -> None:
    """One task of the COCO pass: done, known missing (not asked again without retry_missing), or left."""
    population.images += 1
    if state is State.done:
        population.done += 1
        return
    if state is State.missing and not retry_missing:
        population.known_missing += 1
        return
    population.remaining += 1
    if len(population.sample) < size:
        population.sample.append(task)
    else:  # Algorithm R: the i-th key replaces a random slot with probability size/i
        slot = rng.randrange(population.remaining)
        if slot < size:
            population.sample[slot] = task


@dataclass(frozen=True)
class Leftovers:
    """What a crashed job's feed resumes from (engine.feed): the earlier runs on the same COCO file and key
    settings, and the states a run fetches again."""

    runs: tuple[int, ...]
    states: tuple[State, ...]


def sample_leftovers(settings: Settings, leftovers: Leftovers, size: int, rng: random.Random) -> Population | None:
    """The population of a crashed job from its manifest alone: no COCO parse, memory the sample's size.

    The sample is drawn uniformly from the rows the earlier runs left in a fetchable state: what the feed
    fetches first. The count of keys left is ``max(rows left, images - settled)``, with ``images`` the
    COCO file's count (the meta ``images_in_coco``, kept by the runs on this file) and ``settled`` the
    manifest's done rows (and missing ones without retry_missing). Every image a run would fetch is a row
    left or a record the crashed run never reached; ``images - settled`` counts both when the manifest
    holds only this file's rows (a job that crashed on its first file: exact, but for invalid records).
    Rows of another file or older settings can only make it smaller, never larger, so the refusal, which
    needs even the low end of the estimate over the free space, never refuses a run that would fit; and
    ``rows left`` is a floor it never goes under. The sizes of the keys never reached are taken to be
    like those of the rows left (the same file, cut at the point the crash stopped it).
    None when the manifest does not know the file's count (the run died before counting): parse the file."""
    manifest = Manifest(settings.manifest_path, readonly=True)
    try:
        total = manifest.meta(f"images_in_coco{settings.shard_suffix}")
        if total is None:
            return None
        counts = manifest.counts()
        rows, left = manifest.sample_left(leftovers.runs, leftovers.states, size, rng)
    finally:
        manifest.close()
    missing = 0 if settings.retry_missing else counts[State.missing.value]
    sample = [Task(image_id=r.image_id, key=r.key, dest=r.dest) for r in rows]
    remaining = max(left, int(total) - counts[State.done.value] - missing)
    return Population(int(total), 0, counts[State.done.value], missing, remaining, sample)
