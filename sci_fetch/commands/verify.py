"""``sci-fetch verify``: re-check every ``done`` image on disk and send the bad ones back to ``pending``.

Checks (in ``sci_fetch/files/verify.py``): the file exists with the recorded size and MD5, is not an
empty or HTML/XML page, and with ``--decode`` that Pillow can decode it. Images that fail are marked
``pending`` with the reason, so the next ``sci-fetch download`` with the same COCO file fetches them
again (a file whose MD5 still matches is adopted again without a request). Every manifest in the
output dir is checked, so a sharded download is verified as one.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sci_fetch.commands.common import add_common_flags, add_output_flag
from sci_fetch.commands.status import manifests_from
from sci_fetch.engine.stats import format_duration
from sci_fetch.files.verify import Problem, check_rows
from sci_fetch.keys.mapping import STATE_DIR
from sci_fetch.manifest.models import State
from sci_fetch.manifest.store import Manifest

HELP = "re-check every downloaded image (size, MD5, optionally decoding) and mark the bad ones for download"

# A manifest written this recently is probably being written by a running download.
_RUNNING_AGE = 60.0

_KIND_TEXT = {
    "missing": "missing or unreadable",
    "size": "size differs from the manifest",
    "md5": "MD5 differs from the manifest",
    "content": "empty or an HTML/XML page",
    "decode": "Pillow cannot decode it",
}


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "verify",
        help=HELP,
        description=HELP + ". Bad images are marked pending; run the same download again to fetch them. "
        "Exit code 0 when every done image checks out, 1 when some were marked pending, 2 on a usage error.",
    )
    add_common_flags(parser)
    add_output_flag(
        parser, positional=True, what=f"the download's output folder; every manifest in OUTPUT/{STATE_DIR}/ is checked"
    )
    parser.add_argument(
        "--manifest",
        type=Path,
        action="append",
        default=None,
        help="check this manifest file instead (may be given several times; default: the settings' "
        "manifest, else every one under OUTPUT)",
    )
    parser.add_argument("--decode", action="store_true", help="also decode every image with Pillow (slower)")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="threads hashing and decoding (default: 2 per CPU, at most 8)",
    )
    parser.add_argument(
        "--errors",
        "--show",
        dest="errors",
        type=int,
        default=20,
        metavar="N",
        help="how many bad images to list in the text report (default: 20)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.set_defaults(run=run)


def verify_manifest(path: Path, root: Path, decode: bool, workers: int | None) -> dict[str, Any]:
    """Check one manifest's done rows, mark the bad ones pending; returns this manifest's part of the report."""
    manifest = Manifest(path)
    try:
        last = manifest.last_run()
        heartbeat = manifest.meta("heartbeat")
        running = bool(
            last and last["ended_at"] is None and heartbeat and time.time() - float(heartbeat) < _RUNNING_AGE
        )
        checked, problems = check_rows(root, manifest.rows([State.done]), decode=decode, workers=workers)
        # the reason per image shows in failures.csv and status; all in one transaction
        manifest.mark_pending_each((p.image_id, f"verify: {_KIND_TEXT[p.kind]}: {p.detail}") for p in problems)
    finally:
        manifest.close()
    return {"manifest": str(path), "checked": checked, "problems": problems, "running": running}


def run(args: argparse.Namespace) -> int:
    output, paths = manifests_from(args)
    started = time.monotonic()
    parts = [verify_manifest(p, output, args.decode, args.workers) for p in paths]
    problems: list[Problem] = [p for part in parts for p in part["problems"]]
    checked = sum(part["checked"] for part in parts)
    by_kind = Counter(p.kind for p in problems)
    seconds = time.monotonic() - started
    if args.json:
        print(
            json.dumps(
                {
                    "output": str(output),
                    "manifests": [part["manifest"] for part in parts],
                    "decode": args.decode,
                    "checked": checked,
                    "good": checked - len(problems),
                    "marked_pending": len(problems),
                    "by_kind": dict(by_kind),
                    "seconds": round(seconds, 2),
                    "problems": [
                        {"image_id": p.image_id, "destination": p.dest, "kind": p.kind, "detail": p.detail}
                        for p in problems
                    ],
                }
            )
        )
    else:
        for part in parts:
            if part["running"]:
                print(
                    f"warning: {part['manifest']} was written less than {_RUNNING_AGE:.0f}s ago; a download may be "
                    "running, and images it finishes meanwhile are not checked"
                )
        what = "size, MD5 and decoding" if args.decode else "size and MD5"
        print(
            f"verified {checked} done images ({what}) in {format_duration(seconds)}: {checked - len(problems)} good, {len(problems)} bad"
        )
        for kind, n in sorted(by_kind.items()):
            print(f"  {_KIND_TEXT[kind]}: {n}")
        for p in problems[: args.errors]:
            print(f"  {p.kind}: {p.dest}: {p.detail}")
        if len(problems) > args.errors:
            print(f"  ... and {len(problems) - args.errors} more (--json lists them all)")
        if problems:
            print(f"marked {len(problems)} images pending: run the same 'sci-fetch download' again to fetch them")
        if by_kind.get("decode"):
            print(
                "note: an image whose MD5 still matches but does not decode is damaged in S3 itself; "
                "downloading it again brings the same bytes"
            )
    return 1 if problems else 0
