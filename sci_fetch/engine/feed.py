"""The feed of a resumed run: fetch what the manifest knows is left while the COCO file is still being planned.

A crashed job of a million images whose last 10 % are pending used to plan 900,000 done images (about a
minute) before its first GET. When the run before this one ran on the same COCO file (path, size,
mtime) with the same key settings, its rows that are not done are exactly what this run's plan would
fetch, with the same keys and destinations: the feed hands them to the workers at once, a page at a
time, claimed in the manifest (``Manifest.claim``), so the COCO pass that runs beside it plans them as
``queued`` instead of fetching them again. Records that run never reached, and anything that changed
(another COCO file, other settings), are planned by the COCO pass as always.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import TypeVar

from sci_fetch.engine import quick
from sci_fetch.keys.mapping import Task, Variant, animl_md5
from sci_fetch.manifest.models import Action, Decision, State
from sci_fetch.manifest.store import Manifest
from sci_fetch.settings import Settings

META = "run_fingerprint"
PLANNED_PER_FED = 8  # planned batches (mostly skips on a resume) per fed page of fetches
KEEP_RUNS = 20  # runs in a row over one fingerprint whose rows the feed hands out
T = TypeVar("T")


def earlier_runs(manifest: Manifest, settings: Settings) -> list[int]:
    """The ids of the runs in a row, up to the last one, that ran on what this run runs on (call before
    this run starts); empty when the last run ran on anything else. A job that crashed twice has rows
    left by both runs: the feed hands out all of them."""
    current = quick.fingerprint(settings)
    saved = manifest.meta(META)
    if current is None or saved is None:
        return []
    try:
        data = json.loads(saved)
    except ValueError:  # a damaged value: no feed, the COCO pass plans everything
        return []
    if not isinstance(data, dict) or data.get("fingerprint") != current:
        return []
    return [int(run) for run in data.get("runs", [])]


def started(manifest: Manifest, settings: Settings, run_id: int, earlier: list[int]) -> None:
    """Note what this run runs on, so the next run can feed from it (and the runs before it) if it does not end."""
    current = quick.fingerprint(settings)
    if current is None:
        manifest.delete_meta(META)
    else:
        runs = [*earlier, run_id][-KEEP_RUNS:]
        manifest.set_meta(META, json.dumps({"fingerprint": current, "runs": runs}))


def fetchable(settings: Settings) -> list[State]:
    """The states a plan fetches again (missing only with --retry-missing); pending first: never tried."""
    states = [State.pending, State.failed, State.forbidden]
    return [*states, State.missing] if settings.retry_missing else states


def decisions(manifest: Manifest, settings: Settings, run_id: int, earlier: list[int]) -> Iterator[list[Decision]]:
    """Pages of decisions for the rows run ``earlier`` left, claimed for ``run_id``; adopt when a file is there."""
    root = str(settings.output) + os.sep
    check_md5 = settings.verify_id_md5 and settings.variant is Variant.original
    for rows in manifest.claim(run_id, earlier, fetchable(settings)):
        page = []
        for row in rows:
            expected = animl_md5(row.image_id) if check_md5 else None
            task = Task(image_id=row.image_id, key=row.key, dest=row.dest, expected_md5=expected)
            action = Action.adopt if os.path.exists(root + row.dest) else Action.fetch
            page.append(Decision(task=task, action=action))
        yield page


def interleave(fed: Iterator[T], planned: Iterator[T], ahead: int = PLANNED_PER_FED) -> Iterator[T]:
    """A fed page first (the first GET waits for no planning), then up to ``ahead`` planned batches per fed
    page: the producer waits on the queue only for batches with work in them, so the COCO pass keeps well
    ahead of the workers and is mostly done by the time the feed runs dry."""
    fed_left = True
    while True:
        if fed_left:
            page = next(fed, None)
            if page is None:
                fed_left = False
            else:
                yield page
        for _ in range(ahead if fed_left else 1):
            batch = next(planned, None)
            if batch is None:
                yield from fed  # the COCO pass ended first: the rest of the feed
                return
            yield batch
