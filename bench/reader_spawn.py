"""What starting the COCO reader's child costs (engine/reader.py ``CHILD_FROM_BYTES``): wall to the first batch
and to the end, read in this thread and in the child, in turn, for one COCO file:

    python -m bench.reader_spawn FILE [--rounds 3]
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

from sci_fetch.engine import reader
from sci_fetch.engine.reader import ReadSpec
from sci_fetch.keys.mapping import Variant


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("coco", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    spec = ReadSpec(args.coco, None, Variant.original, None, True)
    for mode in ("here", "child") * args.rounds:
        reader.CHILD_FROM_BYTES = 0 if mode == "child" else 1 << 62
        start, cpu = time.perf_counter(), time.process_time()
        with reader.batches(spec, lambda: False) as batches:
            tasks, _rejects, _sizes = next(batches)
            first = time.perf_counter() - start
            count = len(tasks) + sum(len(t) for t, _, _ in batches)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        print(
            f"{mode:5s} {count} images: first batch {first:.3f} s, end {time.perf_counter() - start:.3f} s, "
            f"this process {time.process_time() - cpu:.3f} s CPU, children so far "
            f"{children.ru_utime + children.ru_stime:.2f} s CPU"
        )


if __name__ == "__main__":
    main()
