"""Progress for people: a tqdm bar on a terminal, a log line every N seconds elsewhere (docker, nohup).

Refreshed on a timer, never per object, so a fast run does not spend its CPU drawing. tqdm.auto draws
a widget in a notebook (the Python API asks for the bar there) and a text bar on a terminal.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import TextIO

from tqdm.auto import tqdm

from sci_fetch.observe.stats import Stats

log = logging.getLogger("sci_fetch")


def terminal_columns(stream: TextIO) -> int | None:
    """Columns of the terminal ``stream`` writes to; None when it is not a terminal, 0 when it reports none."""
    try:
        if not stream.isatty():
            return None
    except (AttributeError, ValueError):  # not a file, or closed
        return None
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):  # a terminal that cannot say its size
        return 0


def choose_mode(setting: str, stream: TextIO | None = None) -> str:
    """auto: a bar on a terminal, log lines elsewhere; a terminal that reports 0 columns gets log lines too
    (a bar there would draw nothing at all)."""
    columns = terminal_columns(stream or sys.stderr)
    if setting == "auto":
        return "bar" if columns else "log"
    if setting == "bar" and columns == 0:
        return "log"
    return setting


async def report(stats: Stats, mode: str, log_interval: float) -> None:
    """Runs until cancelled; the engine cancels it when the run ends."""
    if mode == "off":
        return
    if mode == "log":
        try:
            while True:
                await asyncio.sleep(log_interval)
                log.info(stats.line(), extra={"progress": stats.as_dict()})
        except asyncio.CancelledError:
            return
    bar = tqdm(total=stats.total, unit="img", dynamic_ncols=True, smoothing=0.05, mininterval=0.5, file=sys.stderr)
    try:
        while True:
            bar.total = stats.total
            bar.n = stats.skipped_done + stats.finished()
            bar.set_postfix_str(
                f"{stats.mb_per_second():.1f} MB/s, failed {stats.failed}, missing {stats.missing}, "
                f"retries {sum(stats.retries.values())}",
                refresh=False,
            )
            bar.refresh()
            await asyncio.sleep(0.5)
    except asyncio.CancelledError:
        bar.n = stats.skipped_done + stats.finished()
        bar.close()
