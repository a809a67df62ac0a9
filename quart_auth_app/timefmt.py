"""Human durations and relative times, for pages and messages alike."""

from __future__ import annotations

import math
import time

UNITS = [(86400, "day"), (3600, "hour"), (60, "minute")]


def ago(timestamp: float, now: float | None = None) -> str:
    """'5 minutes ago' for a past timestamp."""
    seconds = max(0, int((now or time.time()) - timestamp))
    for size, unit in UNITS:
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "just now"


def duration(seconds: float) -> str:
    """'15 minutes' for 900: the largest whole unit, rounded up so nobody comes back early."""
    seconds = max(1, math.ceil(seconds))
    for size, unit in UNITS:
        if seconds >= size:
            count = math.ceil(seconds / size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"
