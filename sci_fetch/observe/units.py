"""Sizes and durations as people read them; pure, at the bottom of the layers so any stage may print them."""

from __future__ import annotations

import math

_UNITS = ("B", "KB", "MB", "GB", "TB", "PB")


def human_bytes(n: float) -> str:
    """Decimal units, as disks are sold and `df -H` prints: 75.8 GB."""
    if math.isinf(n):
        return "unknown"
    value, unit = float(n), 0
    while abs(value) >= 1000 and unit < len(_UNITS) - 1:
        value /= 1000
        unit += 1
    return f"{value:.0f} {_UNITS[unit]}" if unit == 0 else f"{value:.1f} {_UNITS[unit]}"


def human_duration(seconds: float | None) -> str:
    """A plan's time estimate: under 1 s, 40 s, 12 min, 3 h 05 min, 2.5 days."""
    if seconds is None:
        return "unknown"
    if seconds < 60:
        return f"{max(seconds, 0):.0f} s" if seconds >= 1 else "under 1 s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    return f"{hours / 24:.1f} days"


def format_duration(seconds: float) -> str:
    """A duration as people read it: 0.4s, 12s, 3m05s, 1h02m."""
    if seconds < 9.95:
        return f"{seconds:.1f}s"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
