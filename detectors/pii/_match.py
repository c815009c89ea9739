"""Small value types shared by the pattern tier's modules."""

from __future__ import annotations

from bisect import bisect_left
from typing import NamedTuple

__all__ = ["RawMatch", "Spans"]


class RawMatch(NamedTuple):
    """One match before it becomes a :class:`detectors.base.Finding`."""

    label: str
    start: int
    end: int
    score: float
    recognizer: str
    validated: bool


class Spans:
    """Non-overlapping ``(start, end)`` spans kept sorted: O(log n) overlap tests.

    Callers add only spans that do not overlap one already present (they test
    first), so the spans are sorted by end as well as by start.
    """

    __slots__ = ("_ends", "_starts")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def __bool__(self) -> bool:
        return bool(self._starts)

    def overlaps(self, start: int, end: int) -> bool:
        i = bisect_left(self._starts, end)  # spans [0, i) start before ``end``
        return i > 0 and self._ends[i - 1] > start

    def add(self, start: int, end: int) -> None:
        i = bisect_left(self._starts, start)
        self._starts.insert(i, start)
        self._ends.insert(i, end)
