"""Exit codes and stop reasons: one table for every command, documented in README.md ("Exit codes").

A command returns an ``ExitCode``; an error that reaches the CLI gets its code from ``code_for_error``; a run
that stopped early gets it from its ``StopReason`` (``STOP_CODES``), else from the manifest's counts
(``exit_code_for``).
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

from sci_fetch.errors import BusyError, DiskError, SciFetchError


class ExitCode(IntEnum):
    OK = 0  # every image done (every box cropped, every record kept)
    INCOMPLETE = 1  # finished, but some images failed/missing/forbidden or records were invalid
    USAGE = 2  # bad setting, flag or input; or the first keys fetched were all missing
    FATAL = 3  # credentials or access error, or an endpoint that cannot be reached
    DISK = 4  # a local disk error, or images that clearly do not fit
    INTERNAL = 70  # a bug (sysexits' EX_SOFTWARE): the log has its traceback
    BUSY = 75  # another download holds this output folder (sysexits' EX_TEMPFAIL: try again later)
    SIGINT = 130
    SIGTERM = 143


class StopReason(StrEnum):
    """Why a run stopped before its end; the value is what status.json and the manifest show."""

    fatal = "fatal"
    disk = "disk"
    SIGINT = "SIGINT"
    SIGTERM = "SIGTERM"
    input = "input"
    usage = "usage"
    keys = "keys"  # the first keys fetched were all missing
    internal = "internal"
    died = "died"  # a process of --processes died: its images stay pending, the counts decide


STOP_CODES: dict[StopReason, ExitCode] = {
    StopReason.fatal: ExitCode.FATAL,
    StopReason.disk: ExitCode.DISK,
    StopReason.SIGINT: ExitCode.SIGINT,
    StopReason.SIGTERM: ExitCode.SIGTERM,
    StopReason.input: ExitCode.USAGE,
    StopReason.usage: ExitCode.USAGE,
    StopReason.keys: ExitCode.USAGE,
    StopReason.internal: ExitCode.INTERNAL,
}

# Stops in which downloads in flight get the grace time; after the others (fatal, disk, a bug) they are cut.
GRACEFUL = frozenset({StopReason.SIGINT, StopReason.SIGTERM, StopReason.input, StopReason.usage, StopReason.keys})

# When several processes stop for different reasons, the run reports the most serious one (first here).
SEVERITY = (
    StopReason.internal,
    StopReason.fatal,
    StopReason.disk,
    StopReason.SIGTERM,
    StopReason.SIGINT,
    StopReason.keys,
    StopReason.usage,
    StopReason.input,
    StopReason.died,
)


def exit_code_for(stop: StopReason | None, counts: dict[str, int], invalid: int, dry_run: bool) -> ExitCode:
    """From the manifest, not from what was printed: anything not done makes it non-zero."""
    if stop is not None and stop in STOP_CODES:
        return STOP_CODES[stop]
    if dry_run:
        return ExitCode.INCOMPLETE if invalid else ExitCode.OK
    if any(counts.get(state) for state in ("failed", "missing", "forbidden", "pending")) or invalid:
        return ExitCode.INCOMPLETE
    return ExitCode.OK


def code_for_error(exc: SciFetchError) -> ExitCode:
    """The code of an error that ends a command before or outside a run (the CLI prints its one line)."""
    if isinstance(exc, BusyError):
        return ExitCode.BUSY
    if isinstance(exc, DiskError):
        return ExitCode.DISK
    return ExitCode.USAGE
