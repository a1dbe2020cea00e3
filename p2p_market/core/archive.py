"""Finished asks, set aside so the settlement fold does not replay them forever.

The fold is a replay in signed-time order, so a message with timestamp t can only
change what happens at or after t, save an award: it decides the attempts of its
round that ended before it, so it can change what happens from its ask's first
window end on (holdings.py `_thaw_for`). An ask whose every activity (messages, windows,
deadlines, slot occupancy) lies before some time L, and that is in a terminal state,
can therefore be archived: its results are final unless a message older than L
arrives. Its provers' slot occupancy stays behind as fixed intervals, because the
capacity rule for the asks still being folded may look back at them. A message
older than an archived ask's L thaws that ask, and the next fold replays it
again, so the result is exactly that of folding everything, just cheaper.
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
    _fixed: dict[bytes, list[Occupancy]] | None = None
    _horizon: int = -1

    def __contains__(self, ask_id: object) -> bool:
        return ask_id in self.asks

    def put(self, ask_id: bytes, entry: Archived) -> None:
        self.asks[ask_id] = entry
        self.notes.update(entry.notes)
        self._fixed = None
        self._horizon = max(self._horizon, entry.last)

    def thaw(self, ask_id: bytes) -> Archived | None:
        entry = self.asks.pop(ask_id, None)
        if entry is not None:
            self._drop(entry)
        return entry

    def _drop(self, entry: Archived) -> None:
        for mid in entry.notes:
            self.notes.pop(mid, None)
        self._fixed = None

    def thaw_from(self, t: int) -> dict[bytes, Archived]:
        """Thaw every archived ask that a message timestamped `t` could affect."""
        if t > self._horizon:
            return {}
        thawed = {a: e for a, e in self.asks.items() if e.last >= t}
        for ask_id, entry in thawed.items():
            del self.asks[ask_id]
            self._drop(entry)
        self._horizon = max((e.last for e in self.asks.values()), default=-1)
        return thawed

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
