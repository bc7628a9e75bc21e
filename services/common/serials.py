"""Serial intervals: the arithmetic of "which of these serials were already counted"."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from sortedcontainers import SortedDict

Interval = tuple[int, int]  # serials [start, end], inclusive


def subtract(interval: Interval, taken: Iterable[Interval]) -> list[Interval]:
    """The parts of `interval` that no interval in `taken` covers, in serial order.

    One sweep over `taken` sorted by start: O(k log k) for k intervals, whether or not
    they overlap each other."""
    start, end = interval
    pieces: list[Interval] = []
    for t_start, t_end in sorted(taken):
        if t_end < start or end < t_start:
            continue
        if start < t_start:
            pieces.append((start, t_start - 1))
        start = t_end + 1
        if start > end:
            return pieces
    pieces.append((start, end))
    return pieces


def absorb(interval: Interval, touching: Iterable[Interval]) -> Interval:
    """`interval` merged with the intervals that overlap or adjoin it: an index of maximal
    runs stays disjoint and the same whatever order its intervals came in."""
    start, end = interval
    for t_start, t_end in touching:
        start, end = min(start, t_start), max(end, t_end)
    return start, end


class Runs:
    """Disjoint maximal runs of serials in one namespace: O(log n + k) to find the k runs
    an interval meets, O(log n + k) to add one."""

    def __init__(self, runs: Iterable[Interval] = ()) -> None:
        self._ends: SortedDict = SortedDict()  # start -> end
        for run in runs:
            self.add(run)

    def meeting(self, interval: Interval) -> list[Interval]:
        """The runs that overlap `interval` (widen it by one on each side for adjoining)."""
        start, end = interval
        found: list[Interval] = []
        first = self._ends.bisect_right(start) - 1  # the run starting at or before `start`
        if first >= 0:
            s, e = self._ends.peekitem(first)
            if e >= start:
                found.append((s, e))
        found += [(s, self._ends[s]) for s in self._ends.irange(start, end, inclusive=(False, True))]
        return found

    def missing(self, interval: Interval) -> list[Interval]:
        """The parts of `interval` no run covers."""
        return subtract(interval, self.meeting(interval))

    def add(self, interval: Interval) -> None:
        start, end = interval
        touching = self.meeting((start - 1, end + 1))
        for s, _ in touching:
            del self._ends[s]
        merged = absorb(interval, touching)
        self._ends[merged[0]] = merged[1]

    def __iter__(self) -> Iterator[Interval]:
        return iter(self._ends.items())

    def __len__(self) -> int:
        return len(self._ends)
