"""Finished asks, set aside so the settlement fold does not replay them forever.

The fold is a replay in signed-time order, so a message with timestamp t can only
change what happens at or after t, save an award: it decides the attempts of its
round that ended before it, and a commit to one of those it does not name never
held a slot, so it can change what happens from the earliest such commit on
(holdings.py `_award_reach`). An ask whose every activity (messages, windows,
deadlines, slot occupancy) lies before some time L, and that is in a terminal state,
can therefore be archived: its results are final unless a message older than L
arrives. Its provers' slot occupancy stays behind as fixed intervals, because the
capacity rule for the asks still being folded may look back at them. A message
older than an archived ask's L thaws that ask, and the next fold replays it
again, so the result is exactly that of folding everything, just cheaper.

Watched entries: an ask archived while the node's current fold lives has left its
capacity checks in that fold, which keeps their margins up to date and raises a
conflict for any message that would flip one (footprints.py). A message about
another ask can change an archived ask only through such a check (or a bid the
fold also answers for, `Fold.bid_added`), so a watched entry stays archived while
the fold takes the message in; if the fold gives up (a conflict) and is rebuilt
from scratch, the rebuild first thaws what the message could have affected, as
for any entry (holdings.py `_settle`). At 200 nodes and 20 asks/s, awards that
reach back past the archive line thawed ~40 asks each and made every node rebuild
its fold about twice per simulated second.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from p2p_market.core.settlement import AskRun, Attempt, Occupancy


@dataclass(slots=True)
class Archived:
    run: AskRun
    attempts: dict[tuple[bytes, bytes, int], Attempt]
    notes: dict[bytes, str]
    occupancy: list[tuple[bytes, Occupancy]]
    last: int
    """The latest time at which anything about this ask happened or could happen."""
    announced: dict[tuple[bytes, int], tuple[bytes, ...]] = field(default_factory=dict)
    """What the node had told its shell about this ask's attempts (local, not state)."""


@dataclass(slots=True)
class Archive:
    asks: dict[bytes, Archived] = field(default_factory=dict)
    notes: dict[bytes, str] = field(default_factory=dict)
    """Why each archived message had no effect, by id (as Settlement.notes)."""
    watched: set[bytes] = field(default_factory=set)
    """Archived while the node's current fold lived: that fold still holds their
    capacity checks and reports a message that would change one as a conflict, so
    they need not be thawed ahead of it (holdings.py `_thaw_for`)."""
    _fixed: dict[bytes, list[Occupancy]] | None = None
    _horizon: int = -1
    """The latest `last` of the entries not watched."""
    _horizon_watched: int = -1

    def __contains__(self, ask_id: object) -> bool:
        return ask_id in self.asks

    def put(self, ask_id: bytes, entry: Archived, watched: bool = False) -> None:
        self.asks[ask_id] = entry
        self.notes.update(entry.notes)
        self._fixed = None
        if watched:
            self.watched.add(ask_id)
            self._horizon_watched = max(self._horizon_watched, entry.last)
        else:
            self._horizon = max(self._horizon, entry.last)

    def thaw(self, ask_id: bytes) -> Archived | None:
        entry = self.asks.pop(ask_id, None)
        if entry is not None:
            self._drop(ask_id, entry)
        return entry

    def _drop(self, ask_id: bytes, entry: Archived) -> None:
        for mid in entry.notes:
            self.notes.pop(mid, None)
        self.watched.discard(ask_id)
        self._fixed = None

    def thaw_from(self, t: int, watched: bool = True) -> dict[bytes, Archived]:
        """Thaw every archived ask that a message timestamped `t` could affect; with
        `watched` false, only those the current fold does not watch."""
        if t > (max(self._horizon, self._horizon_watched) if watched else self._horizon):
            return {}
        thawed = {
            a: e for a, e in self.asks.items() if e.last >= t and (watched or a not in self.watched)
        }
        for ask_id, entry in thawed.items():
            del self.asks[ask_id]
            self._drop(ask_id, entry)
        self._horizon = max(
            (e.last for a, e in self.asks.items() if a not in self.watched), default=-1
        )
        self._horizon_watched = max((self.asks[a].last for a in self.watched), default=-1)
        return thawed

    def watches_from(self, t: int) -> bool:
        """Whether a watched entry could be affected by a message timestamped `t`."""
        return t <= self._horizon_watched

    def unwatch_all(self) -> None:
        """The fold that watched them is gone (rebuilt from scratch)."""
        if self.watched:
            self.watched.clear()
            self._horizon = max(self._horizon, self._horizon_watched)
            self._horizon_watched = -1

    def fixed_occupancy(self) -> dict[bytes, list[Occupancy]]:
        if self._fixed is None:
            fixed: dict[bytes, list[Occupancy]] = {}
            for entry in self.asks.values():
                for prover, occ in entry.occupancy:
                    fixed.setdefault(prover, []).append(occ)
            self._fixed = fixed
        return self._fixed

    # Fixed intervals are never dropped by age, only with their ask (`thaw`, when the
    # ask is pruned): a thawed ask replays its old commits, whose capacity checks look
    # back at every interval that held their prover then, however long ago it ended.
    # Dropping those that ended before the settle line (as this module once did) let
    # a receipt for an archived ask revive a commit that had been over capacity.
