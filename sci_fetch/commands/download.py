"""``sci-fetch download``: every image a COCO file names, from S3 to disk, verified and resumable."""

from __future__ import annotations

import argparse

from sci_fetch.commands.common import add_settings_flags, settings_from_args
from sci_fetch.commands.crops import run_and_report
from sci_fetch.crops.options import crop_options
from sci_fetch.engine.job import download_with
from sci_fetch.exits import ExitCode, StopReason
from sci_fetch.manifest.report import summary_text
from sci_fetch.observe import logs
from sci_fetch.settings import Settings
from sci_fetch.storage.base import StorageFactory

HELP = "download the images a COCO file names from S3 (run it again to resume)"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "download",
        help=HELP,
        description=HELP + ". Every option can also be set in settings.toml or as SCI_FETCH_<NAME>; "
        "a flag wins over the environment, which wins over the file. Exit codes: 0 all done, 1 some images "
        "failed/missing/forbidden or records invalid (see failures.csv), 2 bad settings or input (or the first 20 "
        "keys all missing), 3 stopped on a credentials or access error or an endpoint that cannot be reached, "
        "4 stopped on a disk error (or the images clearly do not fit), 70 internal error, 75 another download "
        "is running on the same output folder, 130/143 stopped by SIGINT/SIGTERM.",
    )
    add_settings_flags(parser, Settings, positional="coco")
    parser.add_argument(
        "--crops",
        dest="after_download",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="make the crops and the crop-label CSV when the download ends (settings: [crops] table; "
        "env SCI_FETCH_CROPS__AFTER_DOWNLOAD)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args, crops={"after_download": args.after_download})
    crop_options(settings)  # a wrong [crops] value stops before the download, not after it
    logs.configure(settings.log_format, getattr(args, "verbose", False))
    return download(settings)


def download(settings: Settings, storage_factory: StorageFactory | None = None) -> int:
    """Run the download (engine.job's download_with), print the summary; returns the exit code.

    Bad settings or an unusable COCO file raise before anything is created; the CLI prints that one line.
    """
    result = download_with(settings, storage_factory)
    print(
        summary_text(
            result.run_stats,
            result.counts,
            result.failures_path,
            result.failures_count,
            result.manifest_path,
            settings.dry_run,
        )
    )
    if result.message:  # also logged when it happened; here it closes the summary a person reads
        print(f"sci-fetch: {result.message}")
    elif result.stop_reason in (StopReason.SIGINT, StopReason.SIGTERM):
        print(f"sci-fetch: stopped by {result.stop_reason}; run the same command again to continue")
    if result.stop_reason in (StopReason.input, StopReason.usage):
        return ExitCode.USAGE
    return then_crops(settings, result.exit_code)


def then_crops(settings: Settings, code: int) -> int:
    """The post-stage, when asked for and the download ended on its own (not stopped)."""
    options = crop_options(settings)
    if not options.after_download or settings.dry_run or code not in (ExitCode.OK, ExitCode.INCOMPLETE):
        return code
    if settings.shard_count > 1:
        print("sci-fetch: crops are not made per shard; run `sci-fetch crops` once every shard is done")
        return code
    assert settings.coco is not None  # the download that ran read it
    crop_code = run_and_report(settings.coco, settings.output, options, settings.manifest_path)
    return code or crop_code
