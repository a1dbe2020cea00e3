"""One prover's slot intervals, indexed by start, for the capacity questions.

Why: every capacity check (rules.py, `Footprints.occupied`), every no-show test
(no_show.py) and the commit policy's free slots (observation.py) count a prover's
intervals that overlap some moment. The intervals of archived asks stay until their
commits are pruned (archive.py), so a plain list grows with the retention horizon
(three lifetimes of commits) and each count scanned all of it: in the simulator at
200 nodes and 20 asks/s the scans' share of the time grew run-long, and a real
node's would grow with its market's lifetime.

How: the intervals are kept sorted by start, and `span` bounds how long any of them
lasts: an interval whose end is set, settled and not before its start (a *bounded*
one) ends at most `span` after it starts. So one that overlaps `[a, b]` starts in
`[a - span, b]`, a slice found by bisection. The others (no end yet, not settled, or
an end before the start: *loose*) are few, the slots in flight, and are always
looked at. An interval's end and settled flag are set by the fold, which tells its
prover's `Intervals` after each change (`changed`); `span` only grows, so it stays a
bound whatever the fold undoes.

The counts are the plain scans' exactly; tests/core/test_intervals.py compares
them on random intervals, and the fold's property tests run through it.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator

from p2p_market.core.settlement import INF, Occupancy


def _bounded(o: Occupancy) -> bool:
    return o.settled and o.end != INF and o.end >= o.start


class Intervals:
    """A prover's intervals: iterable like the list it replaces, with the window
    queries the capacity rules need."""

    __slots__ = ("_items", "_loose", "_starts", "span")

    def __init__(self, items: Iterable[Occupancy] = ()) -> None:
        self._items: list[Occupancy] = sorted(items, key=lambda o: o.start)
        self._starts = [o.start for o in self._items]
        """Each interval's start, in the same order (bisected without a key function)."""
        self._loose: dict[int, Occupancy] = {}
        """The loose intervals (see the module doc), by id()."""
        self.span = 0
        for o in self._items:
            self._classify(o)

    def __iter__(self) -> Iterator[Occupancy]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def _classify(self, o: Occupancy) -> None:
        if _bounded(o):
            self._loose.pop(id(o), None)
            if o.end - o.start > self.span:
                self.span = o.end - o.start
        else:
            self._loose[id(o)] = o

    def add(self, o: Occupancy) -> None:
        i = bisect_right(self._starts, o.start)
        self._starts.insert(i, o.start)
        self._items.insert(i, o)
        self._classify(o)

    def changed(self, o: Occupancy) -> None:
        """`o`'s end or settled flag was set."""
        self._classify(o)

    def remove(self, o: Occupancy) -> None:
        """Take out this very interval (by identity), if it is here."""
        items, starts = self._items, self._starts
        i = bisect_left(starts, o.start)
        while i < len(items) and starts[i] == o.start:
            if items[i] is o:
                del items[i], starts[i]
                self._loose.pop(id(o), None)
                return
            i += 1

    def overlapping(self, first: int, last: int) -> Iterator[Occupancy]:
        """Every interval that could hold a slot at some moment of `[first, last]`
        (starts at or before `last`, ends after `first`), and possibly others: the
        caller applies its own test. Each interval at most once."""
        items, loose, starts = self._items, self._loose, self._starts
        i = bisect_left(starts, first - self.span)
        j = bisect_right(starts, last)
        for k in range(i, j):
            o = items[k]
            if id(o) not in loose:
                yield o
        yield from loose.values()
