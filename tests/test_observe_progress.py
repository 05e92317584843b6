"""Progress for people: which display a stream gets, log lines with the figures, a bar that ends at the count."""

from __future__ import annotations

import asyncio
import io
import logging

import pytest
from helpers import wait_until

from sci_fetch.observe.progress import choose_mode, report, terminal_columns
from sci_fetch.observe.stats import Stats


def test_a_stream_that_is_not_a_terminal_has_no_columns(tmp_path):
    assert terminal_columns(io.StringIO()) is None
    with open(tmp_path / "f", "w") as closed:
        pass
    assert terminal_columns(closed) is None  # isatty() on a closed file raises ValueError
    assert terminal_columns(object()) is None  # type: ignore[arg-type]  # not a file at all


@pytest.mark.parametrize(("setting", "expected"), [("auto", "log"), ("bar", "bar"), ("log", "log"), ("off", "off")])
def test_an_explicit_choice_stands_off_a_terminal(setting, expected):
    assert choose_mode(setting, io.StringIO()) == expected


async def test_log_mode_writes_the_progress_line_with_the_figures_as_fields(caplog):
    caplog.set_level(logging.INFO, logger="sci_fetch")
    stats = Stats(total=10, done=4)
    task = asyncio.create_task(report(stats, "log", 0.01))
    try:
        await asyncio.to_thread(wait_until, lambda: caplog.records, "a progress line", 30.0)
    finally:
        task.cancel()
        await task  # the reporter ends quietly when cancelled
    first = caplog.records[0]
    assert first.getMessage().startswith("images 4/10 done (0 already), ")
    assert first.progress["fetched"] == 4 and first.progress["total_records"] == 10  # type: ignore[attr-defined]


async def test_off_draws_nothing(capsys):
    await report(Stats(total=3), "off", 0.01)
    assert capsys.readouterr() == ("", "")


async def test_the_bar_ends_at_the_images_finished(capsys):
    stats = Stats(total=5, skipped_done=1, done=2, failed=1, bytes=3_000_000)
    task = asyncio.create_task(report(stats, "bar", 30.0))
    await asyncio.to_thread(wait_until, lambda: "retries 0" in capsys.readouterr().err, "the bar drawn once", 30.0)
    stats.done = 3
    task.cancel()
    await task
    err = capsys.readouterr().err
    assert "5/5" in err  # 1 already + 3 fetched + 1 failed, drawn when the run ends
