"""The planning transactions of a resume alone: ``Manifest.plan_checked`` over every batch of a job's COCO file.

The full path's wall and CPU move by ±25 % from run to run on a shared machine; the part a manifest change
touches is the planner's transactions, and this times only those (the thread's CPU and the wall clock
around each ``plan_checked`` call), with the COCO file read, validated and mapped outside the timing, as the
engine does it. The run is a real resume of the job (a new run id, rows and flags written as a download
writes them), so pairs of trees can be interleaved on one job like the full path's:

    python -m bench.plan_pass /tmp/folds/w/finished-1000000                # this tree
    python -m bench.plan_pass /tmp/folds/w/finished-1000000 --tree OLD     # another (git archive) tree
    python -m bench.plan_pass /tmp/folds/w/finished-1000000 --fresh DIR    # a fresh download's planning:
                                                                           # a new manifest, no file on disk

``--tree`` puts that folder first on ``sys.path`` with the worktree's editable finder taken out (as
bench/tree_launcher.py does), so its ``sci_fetch`` is the one imported.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from itertools import islice
from pathlib import Path

BATCH = 512  # engine.pipeline.BATCH


def _use_tree(tree: str) -> None:
    sys.meta_path[:] = [
        f
        for f in sys.meta_path
        if "__editable__" not in str(getattr(f, "__module__", "")) and "__editable__" not in type(f).__module__
    ]
    sys.path.insert(0, str(Path(tree).resolve()))


def plan_pass(job: Path, fresh: Path | None = None) -> tuple[float, float, int]:
    """(CPU s, wall s, images skipped as done or to fetch) of the plan_checked calls of one resume of ``job``,
    or with ``fresh`` of a first download of its COCO file into that (emptied) folder."""
    from sci_fetch.coco.source import iter_images
    from sci_fetch.keys.collisions import FoldCheck
    from sci_fetch.keys.mapping import make_task
    from sci_fetch.manifest.models import Action
    from sci_fetch.manifest.store import Manifest

    out = job / "images"
    if fresh is not None:
        shutil.rmtree(fresh, ignore_errors=True)
        out = fresh
    manifest = Manifest(out / ".sci-fetch" / "manifest.sqlite")
    run_id = manifest.begin_run({"bench": "plan_pass"})
    check = FoldCheck(lambda pairs: [])  # plan_checked claims with its own, in its transaction
    records = (r for r in iter_images(job / "job.json") if not isinstance(r, Exception))
    cpu = wall = 0.0
    planned = 0
    while chunk := list(islice(records, BATCH)):
        tasks = [make_task(r) for r in chunk]
        c0, w0 = time.thread_time(), time.perf_counter()
        decisions, _rejects = manifest.plan_checked(tasks, run_id, out, False, check)
        cpu += time.thread_time() - c0
        wall += time.perf_counter() - w0
        planned += sum(d.action in (Action.skip_done, Action.fetch) for d in decisions)
    manifest.end_run(run_id, 0, {})
    manifest.close()
    return cpu, wall, planned


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", type=Path, help="a job folder of bench.scale (job.json, images/)")
    parser.add_argument("--tree", default="", help="a folder holding another sci_fetch package")
    parser.add_argument("--fresh", type=Path, help="plan a first download into this folder (emptied first)")
    args = parser.parse_args(argv)
    if args.tree:
        _use_tree(args.tree)
    cpu, wall, planned = plan_pass(args.job, args.fresh)
    print(f"plan_checked: {cpu:.2f} s CPU, {wall:.2f} s wall, {planned} images already done or to fetch", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
