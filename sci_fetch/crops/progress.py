"""The one progress display of a crop run: ``progress(images_done, images_total)`` as ``run_crops`` calls it.

A bar where one renders (a terminal, or a notebook: tqdm.auto draws a widget there); elsewhere, for the
logs of long unattended runs, a line every ``interval`` seconds, or nothing when ``lines`` is off (the
Python API in a plain script, whose caller has its own output).
"""

from __future__ import annotations

import sys
import time
from typing import Never

from tqdm.auto import tqdm

from sci_fetch.observe.progress import terminal_columns


class CropProgress:
    def __init__(self, *, notebook: bool = False, lines: bool = True, interval: float = 30.0) -> None:
        self.notebook = notebook
        self.tty = bool(terminal_columns(sys.stderr))  # a terminal that reports 0 columns gets log lines
        self.lines = lines
        self.interval = interval
        self.last = time.monotonic()
        self.bar: tqdm[Never] | None = None  # once the first figures arrive

    def __call__(self, done: int, total: int) -> None:
        if self.notebook or self.tty:
            bar = self.bar
            if bar is None:
                # tqdm.auto: a widget in a notebook, a text bar on a terminal; kept on screen only in a notebook
                bar = self.bar = tqdm(total=total, unit="img", desc="crops", file=sys.stderr, leave=self.notebook)
            bar.update(done - bar.n)
        elif self.lines and time.monotonic() - self.last >= self.interval:
            self.last = time.monotonic()
            print(f"crops: {done}/{total} images", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
