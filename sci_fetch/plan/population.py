"""Which keys are still to fetch, and a uniform random sample of them, in one streaming pass.

The same mapping the engine uses (COCO source, shard, ``make_task``), minus what the manifest already
holds as done (and as missing, unless ``retry_missing``): the plan is about what a run would fetch.
Reservoir sampling keeps memory at the sample's size whatever the COCO file's.
"""

from __future__ import annotations

import logging
import random
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


def settled_ids(settings: Settings) -> dict[str, State]:
    """image id -> done/missing from the manifest, if one exists; a run would not fetch these again."""
    if not settings.manifest_path.exists():
        return {}
    states = [State.done] if settings.retry_missing else [State.done, State.missing]
    manifest = Manifest(settings.manifest_path, readonly=True)
    try:
        return {row.image_id: row.state for row in manifest.rows(states)}
    finally:
        manifest.close()


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


def _unique_tasks(settings: Settings, population: Population) -> Iterator[Task]:
    seen_ids: set[str] = set()
    seen_dests: set[str] = set()
    assert settings.coco is not None  # a plan is made for a COCO file (checked before it starts)
    for item in islice(iter_images(settings.coco), settings.limit):
        if isinstance(item, RecordError):
            population.invalid += 1
            continue
        if settings.shard_count > 1 and shard_of(item.id, settings.shard_count) != settings.shard_index:
            continue
        try:
            task = make_task(item, settings.variant, settings.key_template, settings.verify_id_md5)
        except (UnsafePathError, ValueError, KeyError, IndexError):
            population.invalid += 1
            continue
        if task.image_id in seen_ids or task.dest in seen_dests:
            population.invalid += 1
            continue
        seen_ids.add(task.image_id)
        seen_dests.add(task.dest)
        yield task


def sample_remaining(settings: Settings, size: int, rng: random.Random) -> Population:
    """Count the keys still to fetch and draw ``size`` of them uniformly (all of them when fewer)."""
    if size < 0:
        raise ValueError("sample size must not be negative")
    settled = settled_ids(settings)
    population = Population()
    for task in _tasks(settings, population):
        population.images += 1
        state = settled.get(task.image_id)
        if state is State.done:
            population.done += 1
            continue
        if state is State.missing:
            population.known_missing += 1
            continue
        population.remaining += 1
        if len(population.sample) < size:
            population.sample.append(task)
        else:  # Algorithm R: the i-th key replaces a random slot with probability size/i
            slot = rng.randrange(population.remaining)
            if slot < size:
                population.sample[slot] = task
    return population
