"""The resume of a finished job without reading the COCO file again (rsync's "quick check").

Reading, validating and planning 110,320 records costs seconds even when every image is done. When the last
run over this manifest ended with every image done, the manifest keeps a fingerprint of what that run ran on:
the COCO file's path, size and modification time, and the settings that decide keys and destinations. A run
with the same fingerprint only checks that each image of that run is still ``done`` with its file on disk at
its recorded size (a stat per image: no parse, no plan, no request) and ends there. Anything else (the file
changed, an image is missing, resized or marked pending by ``verify``, other settings) takes the full path,
which also removes the fingerprint until it ends with every image done again.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from sci_fetch.manifest.models import State
from sci_fetch.manifest.store import Manifest
from sci_fetch.observe.stats import Stats
from sci_fetch.observe.status_file import snapshot, write_final
from sci_fetch.settings import Settings

META = "finished_fingerprint"
# The settings that decide which keys a run fetches and where they go; the others (speed, logging) do not.
_KEY_SETTINGS = (
    "bucket",
    "endpoint_url",
    "variant",
    "key_template",
    "verify_id_md5",
    "limit",
    "retry_missing",
    "shard_count",
    "shard_index",
)


def fingerprint(settings: Settings) -> str | None:
    """What a finished run ran on; None when the COCO file cannot be read (the full path says why)."""
    coco = settings.coco
    if coco is None:
        return None
    try:
        info = os.stat(coco)
    except OSError:
        return None
    values = settings.model_dump(mode="json", include=set(_KEY_SETTINGS))
    return json.dumps(
        {
            "coco": os.path.abspath(coco),
            "size": info.st_size,
            "mtime_ns": info.st_mtime_ns,
            "output": os.path.abspath(settings.output),
            "settings": values,
        },
        sort_keys=True,
    )


def remember(manifest: Manifest, settings: Settings, run_id: int) -> None:
    """After a run that ended with every image done: the next run with the same fingerprint may be quick."""
    current = fingerprint(settings)
    if current is not None:
        manifest.set_meta(META, json.dumps({"fingerprint": current, "run_id": run_id}))


def forget(manifest: Manifest) -> None:
    """At the start of a full run: until it ends with every image done, no quick check."""
    manifest.delete_meta(META)


def _all_done_on_disk(manifest: Manifest, output: Path, run_id: int) -> int | None:
    """How many images that run had, when every one is done with its file at its size; else None.

    One pass: the rows of the other states are counted through the state index (none, usually), then
    the done rows are paged in manifest order and each file is stat'ed, so the cost is linear in the job."""
    if manifest.not_done(run_id):
        return None
    root = str(output) + os.sep
    done = 0
    for dest, size in manifest.done_files(run_id):
        try:
            if os.stat(root + dest).st_size != size:
                return None
        except OSError:
            return None
        done += 1
    return done


def _saved(path: Path) -> dict[str, Any] | None:
    """What the last finished run noted, read through a read-only open: a writable open first checks the
    whole manifest's pages (quick_check, seconds per million rows), and the full path opens it again."""
    manifest = Manifest(path, readonly=True)
    try:
        saved = manifest.meta(META)
    except sqlite3.OperationalError:  # no tables yet: a run killed before it made them
        return None
    finally:
        manifest.close()
    return json.loads(saved) if saved else None


async def quick_resume(settings: Settings) -> tuple[int, Stats, dict[str, int]] | None:
    """(run id, figures, counts) of a quick resume, or None when the full path is needed."""
    if settings.dry_run or not settings.manifest_path.is_file():
        return None
    current = fingerprint(settings)
    saved = _saved(settings.manifest_path) if current is not None else None
    if saved is None or saved.get("fingerprint") != current:
        return None
    manifest = Manifest(settings.manifest_path)
    try:
        done = await asyncio.to_thread(_all_done_on_disk, manifest, settings.output, saved["run_id"])
        if done is None:
            return None
        run_id = manifest.begin_run(settings.model_dump(mode="json"))
        # The trusted run's invalid and duplicate records stay listed (failures.csv) and counted.
        kinds = manifest.carry_rejects(saved["run_id"], run_id)
        invalid, duplicates = kinds.get("invalid", 0), kinds.get("duplicate", 0)
        stats = Stats(
            total=done + invalid + duplicates, planned=done, skipped_done=done, invalid=invalid, duplicates=duplicates
        )
        manifest.end_run(run_id, 0, stats.as_dict() | {"quick_check": True})
        shard = f"{settings.shard_index}/{settings.shard_count}"
        write_final(
            settings.state_file("status", "json"), snapshot(stats, (0.0, 0.0), [], "finished", shard) | {"exit_code": 0}
        )
        counts = {state.value: 0 for state in State} | {"done": done}
        return run_id, stats, counts
    finally:
        manifest.close()
