"""OHLC bars: their intervals, where a trade's bar starts, and the VWAP rule.

A trade belongs to the bar of each interval that contains its journal time (its
envelope's `occurred_at`, UTC); bars align to the epoch, so a 1d bar is a UTC day.
"""

from __future__ import annotations

INTERVALS: dict[str, int] = {"1m": 60, "1h": 3_600, "1d": 86_400}  # name -> seconds


def bar_starts(seconds: int) -> tuple[list[str], list[int]]:
    """The bars a trade at `seconds` (since the epoch) falls in: (intervals, starts)."""
    names = list(INTERVALS)
    return names, [seconds - seconds % INTERVALS[name] for name in names]


def vwap(notional: int, volume: int) -> int | None:
    """Volume-weighted average price in integer minor units: notional / volume rounded
    to the nearest minor unit, a half rounded up (prices are positive). None without volume."""
    if volume <= 0:
        return None
    return (2 * notional + volume) // (2 * volume)
