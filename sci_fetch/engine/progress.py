"""Progress for people: a tqdm bar on a terminal, a log line every N seconds elsewhere (docker, nohup).

Refreshed on a timer, never per object, so a fast run does not spend its CPU drawing.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from tqdm import tqdm

from sci_fetch.engine.stats import Stats

log = logging.getLogger("sci_fetch")


def choose_mode(setting: str) -> str:
    if setting != "auto":
        return setting
    return "bar" if sys.stderr.isatty() else "log"


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
