"""What the space check counts and samples: the COCO pass (no feed), a batch of ids at a time against the
manifest, and a crashed job's estimate from its manifest alone (the feed's rows left and the records never reached)."""

from __future__ import annotations

import random
from contextlib import closing

from helpers import animl_image, write_coco

from sci_fetch.keys.mapping import Task
from sci_fetch.manifest.models import Outcome, State
from sci_fetch.manifest.store import Manifest
from sci_fetch.plan.population import Leftovers, sample_leftovers, sample_remaining
from sci_fetch.settings import load_settings

N = 1300  # over two batches of 512: duplicates and settled rows are met in later batches than their first


def job(tmp_path, images: list[dict]):
    coco = write_coco(tmp_path / "coco.json", images)
    values = {"coco": coco, "output": tmp_path / "out", "bucket": "pop-bucket", "profile": "", "space_check": True}
    return load_settings(use_files=False, overrides=values)


def records() -> list[dict]:
    images = [animl_image("pop", n.to_bytes(4, "big")) for n in range(N)]
    images[1100] = dict(images[5])  # the same id again, 1,095 records later
    images[1150] = dict(images[1150], file_name=images[7]["file_name"])  # another id, the same destination
    images[1200] = dict(images[5], file_name="pop/new/name.jpg")  # the same id again, under a new destination...
    images[1250] = dict(images[1250], file_name="pop/new/name.jpg")  # ...which a duplicate did not claim: kept
    return images


def test_the_coco_pass_counts_duplicates_and_settled_rows_across_batches(tmp_path):
    images = records()
    settings = job(tmp_path, images)
    with closing(Manifest(settings.manifest_path)) as m:
        run = m.begin_run({})
        tasks = [Task(image_id=r["id"], key=r["serving_bucket_key"], dest=r["file_name"]) for r in images[:1000]]
        m.plan([t for t in tasks if t.image_id != images[5]["id"] or t is tasks[5]], run, settings.output)
        m.record([Outcome(image_id=r["id"], state=State.done, bytes=1, attempts=1) for r in images[600:900]])
        m.record([Outcome(image_id=r["id"], state=State.missing, attempts=1) for r in images[900:910]])
    population = sample_remaining(settings, 50, random.Random(3))
    assert (population.images, population.invalid) == (N - 3, 3)
    assert (population.done, population.known_missing) == (300, 10)
    assert population.remaining == N - 3 - 310 and len(population.sample) == 50
    assert not {t.image_id for t in population.sample} & {r["id"] for r in images[600:910]}
    assert len({t.image_id for t in population.sample}) == len({t.dest for t in population.sample}) == 50
    retried = sample_remaining(settings.model_copy(update={"retry_missing": True}), 0, random.Random(3))
    assert (retried.known_missing, retried.remaining) == (0, N - 3 - 300)
    everything = sample_remaining(settings, N, random.Random(3)).sample
    assert images[1250]["id"] in {t.image_id for t in everything} and images[1150]["id"] not in {
        t.image_id for t in everything
    }


def test_a_crashed_jobs_population_comes_from_its_manifest(tmp_path):
    """The dead run reached the first 1,000 records (800 done, 200 left) and never the last 300: the count
    is the rows left plus the records never reached; the sample only rows left (the feed's first fetches)."""
    images = [animl_image("pop", n.to_bytes(4, "big")) for n in range(N)]
    settings = job(tmp_path, images)
    with closing(Manifest(settings.manifest_path)) as m:
        run = m.begin_run({})
        tasks = [Task(image_id=r["id"], key=r["serving_bucket_key"], dest=r["file_name"]) for r in images[:1000]]
        m.plan(tasks, run, settings.output)
        m.record([Outcome(image_id=r["id"], state=State.done, bytes=1, attempts=1) for r in images[:800]])
    leftovers = Leftovers((run,), (State.pending, State.failed, State.forbidden))
    assert sample_leftovers(settings, leftovers, 64, random.Random(1)) is None  # the file's count unknown: parse it
    with closing(Manifest(settings.manifest_path)) as m:
        m.set_meta("images_in_coco", str(N))
    population = sample_leftovers(settings, leftovers, 64, random.Random(1))
    assert population is not None
    assert (population.images, population.done, population.remaining) == (N, 800, 200 + 300)
    assert len(population.sample) == 64 and {t.image_id for t in population.sample} <= {
        r["id"] for r in images[800:1000]
    }
    assert population.remaining == sample_remaining(settings, 0, random.Random(1)).remaining  # what a parse counts
