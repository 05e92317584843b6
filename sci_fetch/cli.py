"""The ``sci-fetch`` command: one subcommand per file under sci_fetch/commands/.

Errors sci_fetch raises on purpose become one line and their exit code (sci_fetch.exits: 2 for bad input,
4 for a disk error, 75 when another download holds the output folder); a traceback means a bug.
"""

from __future__ import annotations

import argparse
import sys

from sci_fetch import __version__
from sci_fetch.commands import crops, demo, download, filter, gallery, plan, status, verify
from sci_fetch.errors import SciFetchError
from sci_fetch.exits import ExitCode, code_for_error
from sci_fetch.observe import logs

COMMANDS = [download, status, verify, crops, filter, demo]
COMMANDS += [plan, gallery]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sci-fetch",
        description="Download the camera-trap images a COCO file names from S3, resumably and verified, "
        "then crop every labelled box and write the crop-label CSV.",
    )
    parser.add_argument("--version", action="version", version=f"sci-fetch {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.configure("text", args.verbose)
    if not getattr(args, "run", None):
        parser.print_help()
        return ExitCode.USAGE
    try:
        code: int = args.run(args)
    except SciFetchError as exc:  # a disk error before a run (the manifest cannot be created) is 4, as in a run
        print(f"sci-fetch: error: {exc}", file=sys.stderr)
        return code_for_error(exc)
    except KeyboardInterrupt:
        print("sci-fetch: interrupted", file=sys.stderr)
        return ExitCode.SIGINT
    return code


if __name__ == "__main__":
    sys.exit(main())
