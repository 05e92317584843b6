"""One table of exit codes: the enum, the stop reasons' codes, and README's table agree."""

from __future__ import annotations

import re
from pathlib import Path

from sci_fetch.errors import BusyError, DiskError, InputError, UsageError
from sci_fetch.exits import GRACEFUL, SEVERITY, STOP_CODES, ExitCode, StopReason, code_for_error, exit_code_for

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_codes() -> set[int]:
    """Every code in README's "Exit codes" table ("| 130 / 143 | ..." names two)."""
    section = README.read_text(encoding="utf-8").split("### Exit codes", 1)[1].split("\n#", 1)[0]
    codes: set[int] = set()
    for line in section.splitlines():
        cell = re.match(r"^\|\s*([\d /]+?)\s*\|", line)
        if cell:
            codes.update(int(c) for c in cell.group(1).split("/"))
    return codes


def test_readme_table_lists_exactly_the_enums_codes():
    assert readme_codes() == {int(c) for c in ExitCode}


def test_every_stop_reason_has_a_code_or_defers_to_the_counts():
    assert set(STOP_CODES) | {StopReason.died} == set(StopReason)
    assert set(SEVERITY) == set(StopReason) and GRACEFUL <= set(StopReason)


def test_exit_code_from_the_counts():
    assert exit_code_for(None, {"done": 3}, 0, False) is ExitCode.OK
    assert exit_code_for(None, {"done": 3, "pending": 1}, 0, False) is ExitCode.INCOMPLETE
    assert exit_code_for(None, {"done": 3}, 1, False) is ExitCode.INCOMPLETE
    assert exit_code_for(StopReason.died, {"done": 3, "pending": 2}, 0, False) is ExitCode.INCOMPLETE
    assert exit_code_for(StopReason.SIGTERM, {"done": 3}, 0, False) is ExitCode.SIGTERM
    assert exit_code_for(None, {"pending": 9}, 0, True) is ExitCode.OK  # a dry run fetches nothing


def test_errors_map_to_one_code():
    assert code_for_error(BusyError("x")) is ExitCode.BUSY
    assert code_for_error(DiskError("x")) is ExitCode.DISK
    assert code_for_error(UsageError("x")) is ExitCode.USAGE
    assert code_for_error(InputError("x")) is ExitCode.USAGE
