"""Medians with their spread: the machine is shared and noisy, so one figure means little."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any


def summary(values: Iterable[float | None]) -> dict[str, Any]:
    """Median, min, max and count of the values that exist."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {
        "median": statistics.median(present),
        "min": min(present),
        "max": max(present),
        "n": len(present),
    }


def fmt(stat: dict[str, Any], digits: int = 0, unit: str = "") -> str:
    """'1234 [1100..1300]' (median [min..max]); a single value without brackets."""
    if stat["median"] is None:
        return "-"
    median = f"{stat['median']:.{digits}f}{unit}"
    if stat["n"] < 2:
        return median
    return f"{median} [{stat['min']:.{digits}f}..{stat['max']:.{digits}f}]"


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is 0."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator
