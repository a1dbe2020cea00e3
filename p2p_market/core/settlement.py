"""What the settlement fold computes (fold.py): per ask a run of rounds, attempts and
slots, each prover's slot intervals, and why a message had no effect.

The rules that fill it are rules.py's; the fold that applies them in signed order,
incrementally, is fold.py (with footprints.py, what each event reads and writes);
the reference it is checked against, reference.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from p2p_market.core.envelope import Envelope
from p2p_market.core.lifecycle import AskState, Event, SlotState
from p2p_market.core.messages import Ask
from p2p_market.core.ranking import RankKey

if TYPE_CHECKING:
    from p2p_market.core.intervals import Intervals

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
