"""``sci-fetch verify``: re-check every ``done`` image on disk and send the bad ones back to ``pending``.

Checks (in ``sci_fetch/files/verify.py``): the file exists with the recorded size and MD5, is not an
empty or HTML/XML page, and with ``--decode`` that Pillow can decode it. Images that fail are marked
``pending`` with the reason, so the next ``sci-fetch download`` with the same COCO file fetches them
again (a file whose MD5 still matches is adopted again without a request). Every manifest in the
output dir is checked, so a sharded download is verified as one.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from sci_fetch.commands.common import add_common_flags, add_output_flag
from sci_fetch.commands.status import manifests_from
from sci_fetch.exits import ExitCode
from sci_fetch.files.verify import Problem, check_rows
from sci_fetch.fs.layout import STATE_DIR
from sci_fetch.manifest.models import State
from sci_fetch.manifest.store import Manifest
from sci_fetch.observe.outputs import VerifyProblem, VerifyReport
from sci_fetch.observe.units import format_duration

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


@dataclass(frozen=True)
class Checked:
    """One manifest's part of the report."""

    manifest: str
    checked: int
    problems: list[Problem]
    running: bool  # written to moments ago: a download is probably running


def verify_manifest(path: Path, root: Path, decode: bool, workers: int | None) -> Checked:
    """Check one manifest's done rows and send the bad ones back to pending, with the reason per image (it shows
    in failures.csv and status): files/verify.py finds the problems, the manifest rows are changed here."""
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
    return Checked(str(path), checked, problems, running)


def report(output: Path, parts: list[Checked], decode: bool, seconds: float) -> VerifyReport:
    """``verify --json`` (docs/schema/verify-command.json)."""
    problems = [p for part in parts for p in part.problems]
    checked = sum(part.checked for part in parts)
    return VerifyReport(
        output=str(output),
        manifests=[part.manifest for part in parts],
        decode=decode,
        checked=checked,
        good=checked - len(problems),
        marked_pending=len(problems),
        by_kind=dict(Counter(p.kind for p in problems)),
        seconds=round(seconds, 2),
        problems=[
            VerifyProblem(image_id=p.image_id, destination=p.dest, kind=p.kind, detail=p.detail) for p in problems
        ],
    )


def text_lines(result: VerifyReport, parts: list[Checked], shown: int) -> list[str]:
    """The report a person reads: a warning per manifest a download may be writing, the counts, the bad images."""
    lines = [
        f"warning: {part.manifest} was written less than {_RUNNING_AGE:.0f}s ago; a download may be "
        "running, and images it finishes meanwhile are not checked"
        for part in parts
        if part.running
    ]
    what = "size, MD5 and decoding" if result.decode else "size and MD5"
    bad = result.marked_pending
    lines.append(
        f"verified {result.checked} done images ({what}) in {format_duration(result.seconds)}: "
        f"{result.good} good, {bad} bad"
    )
    lines.extend(f"  {_KIND_TEXT[kind]}: {n}" for kind, n in sorted(result.by_kind.items()))
    lines.extend(f"  {p.kind}: {p.destination}: {p.detail}" for p in result.problems[:shown])
    if bad > shown:
        lines.append(f"  ... and {bad - shown} more (--json lists them all)")
    if bad:
        lines.append(f"marked {bad} images pending: run the same 'sci-fetch download' again to fetch them")
    if result.by_kind.get("decode"):
        lines.append(
            "note: an image whose MD5 still matches but does not decode is damaged in S3 itself; "
            "downloading it again brings the same bytes"
        )
    return lines


def run(args: argparse.Namespace) -> int:
    output, paths = manifests_from(args)
    started = time.monotonic()
    parts = [verify_manifest(p, output, args.decode, args.workers) for p in paths]
    result = report(output, parts, args.decode, time.monotonic() - started)
    print(result.to_json() if args.json else "\n".join(text_lines(result, parts, args.errors)))
    return ExitCode.INCOMPLETE if result.marked_pending else ExitCode.OK
