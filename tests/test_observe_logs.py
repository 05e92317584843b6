"""Log lines: text for people, one JSON object per line for collectors, figures passed with extra= kept as keys."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from sci_fetch.observe.logs import JsonFormatter, configure


@pytest.fixture(autouse=True)
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("sci_fetch", logging.WARNING, __file__, 1, message, args, None)
    rec.created, rec.msecs = 1_700_000_000.0, 42.0
    rec.__dict__.update(extra)
    return rec


def test_json_lines_carry_time_level_message_and_the_extra_figures():
    line = JsonFormatter().format(record("%d images left", 7, progress={"fetched": 3}, _private=1))
    assert json.loads(line) == {
        "time": "2023-11-14T22:13:20.042Z",
        "level": "warning",
        "logger": "sci_fetch",
        "message": "7 images left",
        "progress": {"fetched": 3},
    }


def test_an_exception_is_one_field_of_the_object():
    try:
        raise ValueError("bad")
    except ValueError:
        rec = record("failed")
        rec.exc_info = sys.exc_info()
    data = json.loads(JsonFormatter().format(rec))
    assert data["message"] == "failed" and data["exception"].endswith("ValueError: bad")


def test_values_json_cannot_hold_are_written_as_text():
    assert json.loads(JsonFormatter().format(record("x", path=sys)))["path"].startswith("<module 'sys'")


def test_configure_sets_the_format_and_level_and_quiets_the_aws_libraries(capsys):
    configure("json", verbose=True)
    logging.getLogger("sci_fetch").debug("hello %s", "there", extra={"shard": "1/2"})
    logging.getLogger("botocore").info("noise")
    lines = capsys.readouterr().err.splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["hello there"]
    assert json.loads(lines[0])["shard"] == "1/2"
    configure("text")
    logging.getLogger("sci_fetch").debug("hidden")
    logging.getLogger("sci_fetch").info("shown")
    assert capsys.readouterr().err.strip().endswith(" INFO shown")
