"""``sci-fetch download``: every image a COCO file names, from S3 to disk, verified and resumable."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from sci_fetch.commands.common import add_settings_flags, settings_from_args
from sci_fetch.commands.crops import for_download, run_and_report
from sci_fetch.engine.run import EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE, RunResult, run_download
from sci_fetch.errors import UsageError
from sci_fetch.manifest.report import summary_text, write_failures
from sci_fetch.keys.shard import parse_shard
from sci_fetch.manifest.store import Manifest
from sci_fetch.observe import logs
from sci_fetch.settings import Settings
from sci_fetch.storage.s3 import S3Storage

HELP = "download the images a COCO file names from S3 (run it again to resume)"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "download", help=HELP,
        description=HELP + ". Every option can also be set in settings.toml or as SCI_FETCH_<NAME>; "
        "a flag wins over the environment, which wins over the file. Exit codes: 0 all done, 1 some images "
        "failed/missing or records invalid (see failures.csv), 2 bad settings or input, 3 stopped on a credentials "
        "or access error, 4 stopped on a disk error, 130/143 stopped by SIGINT/SIGTERM.",
    )
    add_settings_flags(parser, Settings, positional="coco")
    parser.add_argument("--crops", dest="after_download", action=argparse.BooleanOptionalAction, default=None,
                        help="make the crops and the crop-label CSV when the download ends (settings: [crops] table; "
                        "env SCI_FETCH_CROPS__AFTER_DOWNLOAD)")
    parser.add_argument("--shard", default=None, metavar="K/N",
                        help="take share K of N (sets shard_index and shard_count; e.g. 0/4)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.shard:
        try:
            args.shard_index, args.shard_count = parse_shard(args.shard)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
    settings = settings_from_args(args, crops={"after_download": args.after_download})
    logs.configure(settings.log_format, getattr(args, "verbose", False))
    return download(settings)


def check_inputs(settings: Settings) -> None:
    if settings.coco is None:
        raise UsageError("no COCO file given: sci-fetch download COCO.json (or set 'coco' in settings.toml)")
    if not Path(settings.coco).is_file():
        raise UsageError(f"COCO file {settings.coco} does not exist")


def download(settings: Settings, storage_factory=S3Storage) -> int:
    """Run the download, write failures.csv and print the summary; returns the exit code."""
    check_inputs(settings)
    result: RunResult = asyncio.run(run_download(settings, storage_factory))
    failures_path = settings.state_file("failures", "csv")
    manifest = Manifest(settings.manifest_path)
    try:
        failures_count = write_failures(manifest, result.run_id, failures_path)
    finally:
        manifest.close()
    print(summary_text(result.stats, result.counts, failures_path, failures_count, settings.manifest_path, settings.dry_run))
    if result.message:
        print(f"sci-fetch: {result.message}")
    elif result.stop_reason in ("SIGINT", "SIGTERM"):
        print(f"sci-fetch: stopped by {result.stop_reason}; run the same command again to continue")
    if result.stop_reason in ("input", "usage"):
        return EXIT_USAGE
    return then_crops(settings, result.exit_code)


def then_crops(settings: Settings, code: int) -> int:
    """The post-stage, when asked for and the download ended on its own (not stopped)."""
    if not settings.crops.after_download or settings.dry_run or code not in (EXIT_OK, EXIT_INCOMPLETE):
        return code
    if settings.shard_count > 1:
        print("sci-fetch: crops are not made per shard; run `sci-fetch crops` once every shard is done")
        return code
    crop_code = run_and_report(settings.coco, settings.output, for_download(settings), settings.manifest_path)
    return code or crop_code
