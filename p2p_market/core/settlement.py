"""What the settlement fold computes (fold.py): per ask a run of rounds, attempts and
slots, each prover's slot intervals, and why a message had no effect.

The rules that fill it are rules.py's; the fold that applies them in signed order,
incrementally, is fold.py (with footprints.py, what each event reads and writes);
the reference it is checked against, reference.py.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from p2p_market.core.envelope import Envelope
from p2p_market.core.lifecycle import AskState, Event, SlotState
from p2p_market.core.messages import Ask
from p2p_market.core.ranking import RankKey

INF = 2**63


@dataclass(slots=True)
class Occupancy:
    """One commit holding one of its prover's slots from `start` until `end`."""

    start: int
    commit_id: bytes
    end: int = INF
    settled: bool = False
    end_key: tuple[int, int, bytes] = field(default=(-1, -1, b""), compare=False)
    """Where in the fold's order `end` was set (the earliest event that set it to
    its value): a capacity check at exactly `end` counts the interval if it is
    folded before that (see `Fold._carry_interval_changes`)."""


def _bounded(o: Occupancy) -> bool:
    return o.settled and o.end != INF and o.end >= o.start


class Intervals:
    """One prover's slot intervals, indexed by start, for the capacity questions:
    iterable like the list it replaced, with the window query the rules need.

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

    __slots__ = ("_items", "_loose", "_starts", "span")

    def __init__(self, items: Iterable[Occupancy] = ()) -> None:
        self._items: list[Occupancy] = sorted(items, key=lambda o: o.start)
        self._starts = [o.start for o in self._items]
        """Each interval's start, in the same order (bisected without a key function)."""
        self._loose: dict[int, Occupancy] = {}
        """The loose intervals (see the class doc), by id()."""
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


def overlapping(
    occupancy: dict[bytes, Intervals], prover: bytes, first: int, last: int
) -> Iterable[Occupancy]:
    """`prover`'s intervals that could hold a slot in `[first, last]`
    (`Intervals.overlapping`); none if it holds no interval."""
    held = occupancy.get(prover)
    return () if held is None else held.overlapping(first, last)


@dataclass(slots=True)
class Attempt:
    round: bytes
    number: int
    window_start: int
    window_end: int
    candidates: list[tuple[RankKey, bytes, bytes]] = field(default_factory=list)
    """(rank key, prover, commit id) of every valid commit in this window."""
    winners: tuple[bytes, ...] = ()
    winner_commits: tuple[bytes, ...] = ()
    """The winners' commit ids, aligned with `winners` (what an Award names)."""
    settled: bool = False
    awarded: bool = False
    """Decided by the requester's award (of this attempt or a later one of its
    round): final. Otherwise the winners are the ranking's, tentative."""


@dataclass(slots=True)
class Round:
    id: bytes
    opened_at: int
    slots: int
    winners: list[bytes] = field(default_factory=list)

    @property
    def unfilled(self) -> int:
        return self.slots - len(self.winners)


@dataclass(slots=True)
class Slot:
    prover: bytes
    round: bytes
    attempt: int
    commit_id: bytes
    price: int
    proof_time: int
    assigned_at: int
    deadline: int
    state: SlotState = SlotState.ASSIGNED
    proof_hash: bytes | None = None
    ended_at: int | None = None
    replaced: bool = False
    """A failure receipt about it opened a round to replace it (one round per slot:
    a timed-out slot whose proof turns up and is then found invalid is not
    replaced twice)."""


@dataclass(slots=True)
class AskRun:
    id: bytes
    ask: Ask
    requester: bytes
    state: AskState = AskState.OPEN
    rounds: dict[bytes, Round] = field(default_factory=dict)
    slots: dict[bytes, Slot] = field(default_factory=dict)
    excluded: set[bytes] = field(default_factory=set)
    expired: bool = False
    history: list[tuple[int, Event, AskState]] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return sum(1 for s in self.slots.values() if s.state is SlotState.ACCEPTED)

    @property
    def busy(self) -> bool:
        return any(s.state.in_progress for s in self.slots.values())

    @property
    def seeking(self) -> bool:
        return not self.expired and any(r.unfilled > 0 for r in self.rounds.values())


@dataclass(slots=True)
class CapacityCheck:
    """A folded capacity check: when, where in the fold's order, how many free
    slots it found (<= 0: over capacity), for which ask."""

    t: int
    key: tuple[int, int, bytes]
    margin: int
    ask: bytes


def check_order(check: CapacityCheck) -> tuple[int, tuple[int, int, bytes]]:
    return (check.t, check.key)


@dataclass(slots=True)
class WindowUndo:
    """What a window's end changed, kept for a short while: a commit signed inside
    the window that arrives after it ended (the usual straggler) reopens it."""

    key: Key
    state: AskState
    history: int
    """How long the run's history was."""
    round_winners: int
    """How many winners the attempt's round had."""
    written_before: Key
    """The latest write to the ask before the window ended."""
    intervals: list[tuple[bytes, Occupancy, int, bool, Key]]
    """(prover, interval, end, settled, end key) of each candidate before the window
    ended."""
    notes: dict[bytes, str | None]


UNDO_KEEP_MS = 10_000
"""How long after a window's end it can still be reopened in place."""


@dataclass(slots=True)
class Settlement:
    runs: dict[bytes, AskRun]
    attempts: dict[tuple[bytes, bytes, int], Attempt]
    occupancy: dict[bytes, Intervals]
    notes: dict[bytes, str]
    """Why a message had no effect, by message id (absent: it took effect)."""
    next_wakeup: int | None


WINDOW_END, EXPIRY, ASK_OPEN, MESSAGE = 0, 1, 2, 3
"""The kinds of fold items, in the order they go at one millisecond."""

PENALISED = "prover penalised (equivocation or an invalid proof)"
"""The note on a commit signed while its prover is penalised (penalties.py)."""

AFTER_AWARD = "after the award"
"""The note on a commit to an attempt its requester's award decided without it."""

Key = tuple[int, int, bytes]
"""Where an event sits in the fold's order: (time, kind priority, unique tie)."""
BEFORE_ALL: Key = (-1, -1, b"")
Queued = tuple[int, int, bytes, int, object, bytes]
"""An item waiting in the fold's queue: its key, the generation of its ask it was
queued in (`Footprints.push`), the item, and the ask it is about."""


class Conflict(Exception):
    """A message arrived in the past of an event it interacts with: the fold must be
    replayed (see `Fold.advance`)."""


class AskConflict(Conflict):
    """The conflict is within one ask's run: replaying that ask may do (see
    `fold.Fold._replay_ask`)."""

    def __init__(self, ask_id: bytes) -> None:
        super().__init__(ask_id)
        self.ask_id = ask_id


def last_activity(run: AskRun, attempts: list[Attempt], events: list[Envelope]) -> int:
    """The latest moment anything about this ask happened or is scheduled to."""
    times = [run.ask.timestamp]
    times += [e.message.timestamp for e in events]  # type: ignore[union-attr]
    times += [a.window_end for a in attempts]
    for slot in run.slots.values():
        times.append(slot.deadline if slot.ended_at is None else slot.ended_at)
    if run.expired or run.state is AskState.EXPIRED:
        times.append(run.ask.expires_at)
    return max(times)
