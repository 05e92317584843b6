"""``sci-fetch filter``: turn a full Animl export into the subset the SCI work used.

Exit codes: 0 done; 1 done, but some records were broken and dropped (listed); 2 bad options or
input; 4 the output could not be written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sci_fetch.commands.common import add_common_flags
from sci_fetch.crops.options import crop_options
from sci_fetch.crops.subset import DEFAULT_EXCLUDE, filter_coco
from sci_fetch.errors import DiskError
from sci_fetch.exits import ExitCode
from sci_fetch.settings import load_settings

HELP = "write the SCI subset of a full Animl export: no empty/person/vehicle/animal labels, only images still labelled"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "filter",
        help=HELP,
        description=HELP + ". Prints the annotations per category before and after. Exit codes: 0 done, "
        "1 done but broken records were dropped, 2 bad options or input, 4 the output could not be written.",
    )
    parser.add_argument("source", type=Path, help="the full COCO export to read")
    parser.add_argument("dest", type=Path, help="the subset COCO file to write (replaced atomically)")
    add_common_flags(parser)
    parser.add_argument(
        "--exclude",
        action="append",
        default=None,
        metavar="NAMES",
        help=f"category names to drop, comma-separated or repeated; --exclude '' drops none "
        f"(default: {','.join(DEFAULT_EXCLUDE)}, the same list `crops` leaves out; settings: [crops] exclude, "
        "env SCI_FETCH_CROPS__EXCLUDE)",
    )
    parser.set_defaults(run=run)


def exclude_from(values: list[str] | None, config: Path | None = None) -> list[str]:
    """The flag, else the [crops] exclude setting (one list for both commands), whose default is the SCI list."""
    if values is None:
        return list(crop_options(load_settings(config)).exclude)
    return [part.strip() for item in values for part in item.split(",") if part.strip()]


def run(args: argparse.Namespace) -> int:
    try:
        summary = filter_coco(args.source, args.dest, exclude_from(args.exclude, args.config))
    except DiskError as exc:
        print(f"sci-fetch: error: {exc}", file=sys.stderr)
        return ExitCode.DISK
    print("\n".join(summary.lines()))
    return summary.exit_code
