"""``sci-fetch plan``: before a long run, how many keys exist, how many bytes, whether they fit, how long.

It HEADs a random sample of the keys a download would still fetch (the manifest's done ones left out),
GETs a few of them into a temp folder to time the bytes, and prints the estimate with its range.
Exit codes: 0 it fits (or may), 1 none of the sampled keys exists or answered, 2 bad settings or input, 3 a
credentials or access error, 4 the estimate clearly exceeds the free space.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

from sci_fetch.commands.common import add_settings_flags, settings_from_args
from sci_fetch.errors import FatalError, UsageError
from sci_fetch.exits import ExitCode
from sci_fetch.settings import Settings
from sci_fetch.storage.base import StorageFactory
from sci_fetch.storage.factory import s3_storage

if TYPE_CHECKING:
    from sci_fetch.plan.check import Plan

HELP = "estimate a download before starting it: HEAD a random sample of the keys left; bytes, free space, time"

# The settings a plan reads: what to fetch, where from, how hard to push.
PLAN_SETTINGS = {
    "case_insensitive_names",
    "coco",
    "output",
    "manifest",
    "variant",
    "key_template",
    "verify_id_md5",
    "limit",
    "retry_missing",
    "bucket",
    "region",
    "profile",
    "endpoint_url",
    "anonymous",
    "concurrency",
    "max_requests_per_second",
    "max_attempts",
    "retry_base_delay",
    "retry_max_delay",
    "connect_timeout",
    "read_timeout",
    "shard_count",
    "shard_index",
}


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "plan",
        help=HELP,
        description=HELP + ". Takes the same settings as `download`. Exit codes: 0 it fits, 1 none of the sampled "
        "keys exists or answered, 2 bad settings or input, 3 credentials or access error, 4 clearly more than the free space.",
    )
    add_settings_flags(parser, Settings, positional="coco", only=PLAN_SETTINGS)
    parser.add_argument(
        "--sample",
        type=int,
        default=200,
        metavar="N",
        help="how many random keys to HEAD (default: 200; every key when fewer are left)",
    )
    parser.add_argument(
        "--gets",
        type=int,
        default=8,
        metavar="K",
        help="how many of the keys found to GET into a temp folder to time the bytes (default: 8; 0: none)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the random sample, to repeat a plan exactly")
    parser.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.sample < 1 or args.gets < 0:
        raise UsageError("--sample must be at least 1 and --gets at least 0")
    settings = settings_from_args(args)
    if settings.coco is None:
        raise UsageError("no COCO file given: sci-fetch plan COCO.json --output DIR")
    if not settings.coco.is_file():
        raise UsageError(f"COCO file {settings.coco} does not exist")
    return plan(settings, args.sample, args.gets, args.seed, args.json)


def plan(
    settings: Settings,
    sample: int = 200,
    gets: int = 8,
    seed: int | None = None,
    as_json: bool = False,
    storage_factory: StorageFactory = s3_storage,
) -> int:
    """Print the plan; returns its exit code."""
    from sci_fetch.plan.check import make_plan
    from sci_fetch.plan.report import plan_json, plan_lines

    async def go() -> Plan:
        async with storage_factory(settings.storage_options()) as storage:
            return await make_plan(settings, storage, sample=sample, gets=gets, seed=seed)

    try:
        result = asyncio.run(go())
    except FatalError as exc:
        print(f"sci-fetch: stopped: {exc}")
        return ExitCode.FATAL
    print(plan_json(result).to_json() if as_json else "\n".join(plan_lines(result)))
    return result.exit_code
