"""What one COCO image record costs on its way from the JSON file to a ``Task``, stage by stage.

``python -m bench.coco_path COCO.json [--limit N] [--stages ijson,guard,validate,task] [--repeats R]``
reads the ``images`` array of COCO.json once per stage, each stage adding one step of the real record
path (coco/source.py, keys/mapping.py), and prints for each: records, CPU and wall seconds, records/s,
µs per record, and the µs the step adds over the stage before it:

- ``ijson``: ``ijson.items(file, "images.item")`` on the yajl2_c backend, nothing else;
- ``guard``: the same through the ``coco.guard.GuardedReader`` coco/source.py opens (depth, long values);
- ``validate``: ``coco.source.iter_images`` (guard + ``CocoImage`` validation, what the engine reads);
- ``task``: ``keys.mapping.make_task`` over ``iter_images`` (the planner's whole record path).

Only reads COCO.json. Run it with PYTHONPATH set to another checkout to measure that code on the same
file (old vs new, interleaved). CPU is ``time.process_time`` of this process (one thread).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import ijson

STAGES = ("ijson", "guard", "validate", "task")


def _ijson(path: Path) -> Iterator[Any]:
    with open(path, "rb") as fh:
        yield from ijson.items(fh, "images.item", use_float=True)


def _guard(path: Path) -> Iterator[Any]:
    from sci_fetch.coco.source import _guarded  # the reader coco/source.py opens, old and new alike

    with _guarded(path) as fh:
        yield from ijson.items(fh, "images.item", use_float=True)


def _validate(path: Path) -> Iterator[Any]:
    from sci_fetch.coco.source import iter_images

    return iter_images(path)


def _task(path: Path) -> Iterator[Any]:
    from sci_fetch.coco.models import CocoImage
    from sci_fetch.coco.source import iter_images
    from sci_fetch.keys.mapping import UnsafePathError, make_task

    for item in iter_images(path):
        if isinstance(item, CocoImage):
            try:
                yield make_task(item)
            except UnsafePathError as exc:
                yield exc
        else:
            yield item


READERS: dict[str, Callable[[Path], Iterator[Any]]] = {
    "ijson": _ijson,
    "guard": _guard,
    "validate": _validate,
    "task": _task,
}


def measure(stage: str, path: Path, limit: int | None) -> tuple[int, float, float]:
    """Records read, CPU seconds and wall seconds of one stage over the file (or its first ``limit``)."""
    cpu, wall = time.process_time(), time.perf_counter()
    count = sum(1 for _ in islice(READERS[stage](path), limit))
    return count, time.process_time() - cpu, time.perf_counter() - wall


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("coco", type=Path)
    parser.add_argument("--limit", type=int, default=None, help="read only the first N images")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated, of " + ",".join(STAGES))
    parser.add_argument("--repeats", type=int, default=1, help="runs per stage; the lowest CPU is printed")
    args = parser.parse_args(argv)
    stages = [s for s in args.stages.split(",") if s]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stage(s) {', '.join(unknown)}; known: {', '.join(STAGES)}")
    print(f"{'stage':<9} {'records':>9} {'CPU s':>8} {'wall s':>8} {'records/s':>10} {'µs/rec':>7} {'+µs':>6}")
    before: float | None = None
    for stage in stages:
        runs = [measure(stage, args.coco, args.limit) for _ in range(max(1, args.repeats))]
        count, cpu, wall = min(runs, key=lambda r: r[1])
        per = cpu / count * 1e6 if count else 0.0
        added = f"{per - before:6.2f}" if before is not None else f"{'':>6}"
        rate = count / cpu if cpu else 0.0
        print(f"{stage:<9} {count:>9} {cpu:>8.2f} {wall:>8.2f} {rate:>10,.0f} {per:>7.2f} {added}", flush=True)
        before = per


if __name__ == "__main__":
    main()
