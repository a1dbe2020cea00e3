"""The incremental fold's bookkeeping: what each event reads and writes.

The fold, kept between settlements so a new message costs what it touches.

    Incremental by optimism. The fold processes events in key order and remembers,
    for every ask and every prover's slot occupancy, the latest key of an event
    that read it and of one that wrote it. A message that arrives later than the
    events already processed is simply folded next. One that sorts before them (the
    usual case on a network: messages arrive out of signed order) is folded where
    the fold stands, which is correct exactly when no processed later event read
    what it writes or wrote what it reads: then the two commute, and the result is
    that of folding in key order. Commits to one attempt commute with each other
    (their candidate list is sorted when the window ends), so they only read their
    ask; everything that changes an ask writes it. When they do not commute: a
    late commit reopens its window (`_reopen`), a clash within one ask's run
    replays that ask alone (`_replay_ask`), and anything else raises `Conflict`,
    and the caller folds everything again from scratch.
"""

from __future__ import annotations

import bisect
import heapq
from collections import deque

from p2p_market.core.book import BidBook
from p2p_market.core.envelope import Envelope
from p2p_market.core.lifecycle import Event, next_state
from p2p_market.core.messages import (
    Award,
    Commit,
    Market,
)
from p2p_market.core.penalties import Windows
from p2p_market.core.settlement import (
    BEFORE_ALL,
    UNDO_KEEP_MS,
    WINDOW_END,
    AskConflict,
    AskRun,
    Attempt,
    CapacityCheck,
    Conflict,
    Intervals,
    Key,
    Occupancy,
    Queued,
    Slot,
    WindowUndo,
    check_order,
    overlapping,
)


class Footprints:
    """The fold's state and its footprints (see the module's docstring); the rules
    that use them are rules.py's, the driver fold.py's."""

    def __init__(self, market: Market, book: BidBook, penalties: Windows | None = None) -> None:
        self.window = market.commit_window_ms
        self.skew = market.skew_ms
        self.book = book
        self.penalties: Windows = penalties or {}
        """Who may not win when (penalties.py); fixed for this fold: a change refolds."""
        self.runs: dict[bytes, AskRun] = {}
        self.attempts: dict[tuple[bytes, bytes, int], Attempt] = {}
        self.attempts_by_ask: dict[bytes, list[tuple[bytes, bytes, int]]] = {}
        self.occupancy: dict[bytes, Intervals] = {}
        self.interval: dict[bytes, tuple[bytes, Occupancy]] = {}
        """(prover, interval) of every valid commit, by commit id."""
        self.notes: dict[bytes, str] = {}
        self.heap: list[Queued] = []
        self.generation: dict[bytes, int] = {}
        """How many times each ask was replayed alone: its items queued before the
        last replay are stale and skipped when they come up."""
        self.commit_index: dict[bytes, Commit] = {}
        self.commit_signer: dict[bytes, bytes] = {}
        self.awards: dict[tuple[bytes, bytes, int], list[Award]] = {}
        """Stored awards by (ask, round, attempt): a set-wide index, not fold state,
        so a window's end knows its award whenever the award arrived."""
        self.award_attempts: dict[bytes, dict[bytes, set[int]]] = {}
        """The awarded attempts of each round, by ask and round."""
        self.dirty: set[bytes] = set()
        """Asks to fold again before the next step: an award reaches back to events
        already folded (its attempt's end, earlier attempts' ends, a cancel)."""
        self.horizon = -1
        self.frontier: Key = BEFORE_ALL
        """The latest key processed so far."""
        self.cur: Key = BEFORE_ALL
        self.past = False
        self.run_read: dict[bytes, Key] = {}
        self.run_written: dict[bytes, Key] = {}
        self.occ_reads: dict[bytes, list[CapacityCheck]] = {}
        """Every folded capacity check, by prover, sorted by (time, key)."""
        self.occ_latest_read: dict[bytes, int] = {}
        self.occ_ends: dict[tuple[bytes, int], Key] = {}
        """The latest key of an event that ended one of a prover's intervals at a
        time, by (prover, time): a check at exactly that time may depend on it."""
        self.occ_floor = -1
        """Capacity checks and changes before this time were forgotten."""
        self.undo: dict[tuple[bytes, bytes, int], WindowUndo] = {}
        self.undo_order: deque[tuple[int, tuple[bytes, bytes, int]]] = deque()
        self.reopened = 0
        """Windows reopened in place for a late commit (a benchmark figure)."""
        self.in_place = 0
        """Items folded in the past of later ones, in place (a benchmark figure)."""
        self.ask_env: dict[bytes, Envelope] = {}
        self.members: dict[bytes, list[Envelope]] = {}
        """The ask-scoped messages given to the fold, by ask (for `_replay_ask`)."""
        self.replaying = False
        self.replayed = 0
        """Asks replayed alone after a conflict within their run (a benchmark figure)."""
        self.archive_touched: set[bytes] = set()
        """As `touched`, drained by the archive's pass instead."""
        self.touched: set[bytes] = set()
        """Asks whose run or attempts changed since the owner last drained this."""
        self.version: dict[bytes, int] = {}
        """A counter per ask, bumped by every change to its run or attempts."""

    def push(self, t: int, prio: int, tie: bytes, item: object, ask_id: bytes) -> None:
        """Queue an item of `ask_id`'s in the ask's current generation. Its key,
        `(t, prio, tie)`, is unique within a generation, so the item and the ask are
        never compared."""
        heapq.heappush(self.heap, (t, prio, tie, self.generation.get(ask_id, 0), item, ask_id))

    def stale(self, queued: Queued) -> bool:
        """Whether a queued item belongs to an earlier generation of its ask: a
        replay of the ask (`Fold._replay_ask`) queued its items again."""
        return queued[3] != self.generation.get(queued[5], 0)

    def _read_run(self, ask_id: bytes) -> None:
        cur = self.cur
        if self.past:
            if self.run_written.get(ask_id, BEFORE_ALL) > cur:
                raise AskConflict(ask_id)
            if self.run_read.get(ask_id, BEFORE_ALL) > cur:
                return
        self.run_read[ask_id] = cur

    def _write_run(self, ask_id: bytes) -> None:
        cur = self.cur
        if self.past and (
            self.run_written.get(ask_id, BEFORE_ALL) > cur
            or self.run_read.get(ask_id, BEFORE_ALL) > cur
        ):
            raise AskConflict(ask_id)
        self.run_written[ask_id] = cur
        self._changed(ask_id)

    def _changed(self, ask_id: bytes) -> None:
        self.touched.add(ask_id)
        self.archive_touched.add(ask_id)
        self.version[ask_id] = self.version.get(ask_id, 0) + 1

    def _check_occ(self, prover: bytes, t: int) -> None:
        """Before a capacity check (or book lookup) of `prover` at time `t` in the
        past: slot intervals only ever shrink, and a change made while folding time
        u ends an interval no earlier than u, so a change folded later alters the
        count at `t` only if it ends an interval exactly at `t`. (Intervals created
        later are told apart by their commit's key, see `occupied`.)"""
        if self.past and (
            t <= self.occ_floor or self.occ_ends.get((prover, t), BEFORE_ALL) > self.cur
        ):
            raise Conflict

    def _record_check(self, prover: bytes, t: int, margin: int, ask_id: bytes) -> None:
        """`margin`: free slots the check found (<= 0: over capacity); a later
        change in the past of this check flips its verdict only from 1 or 0."""
        check = CapacityCheck(t, self.cur, margin, ask_id)
        bisect.insort(self.occ_reads.setdefault(prover, []), check, key=check_order)
        if t > self.occ_latest_read.get(prover, -1):
            self.occ_latest_read[prover] = t

    def _write_occ(self, prover: bytes, lo: int, hi: int, delta: int) -> None:
        """The count of `prover`'s held slots changes by `delta` (+1 or -1) over
        [lo, hi). In the past of checks already folded, it is a conflict only if
        it flips one; otherwise their margins follow."""
        cur = self.cur
        if self.past:
            if lo <= self.occ_floor:
                raise Conflict
            reads = self.occ_reads.get(prover, [])
            hits = []
            for i in range(
                bisect.bisect_left(reads, (lo, BEFORE_ALL), key=check_order), len(reads)
            ):
                r = reads[i]
                if r.t >= hi:
                    break
                if r.key > cur:
                    hits.append(r)
            flips = 1 if delta > 0 else 0
            if any(r.margin == flips for r in hits):
                raise Conflict
            for r in hits:
                r.margin -= delta
        if delta < 0:
            at = (prover, lo)
            if self.occ_ends.get(at, BEFORE_ALL) < cur:
                self.occ_ends[at] = cur

    def _keep_undo(
        self,
        key: tuple[bytes, bytes, int],
        run: AskRun,
        att: Attempt,
        written_before: Key,
        awarded: set[bytes],
    ) -> None:
        intervals = [
            (p, o, o.end, o.settled, o.end_key)
            for _, p, cid in att.candidates
            for o in [self.interval[cid][1]]
        ]
        notes = {cid: self.notes.get(cid) for _, _, cid in att.candidates}
        notes.update((cid, self.notes.get(cid)) for cid in awarded)
        self.undo[key] = WindowUndo(
            self.cur,
            run.state,
            len(run.history),
            len(run.rounds[att.round].winners),
            written_before,
            intervals,
            notes,
        )
        order = self.undo_order
        order.append((att.window_end, key))
        while order and order[0][0] < att.window_end - UNDO_KEEP_MS:
            self.undo.pop(order.popleft()[1], None)

    def _reopen(self, key: tuple[bytes, bytes, int]) -> None:
        """Undo the end of this window, if it is the only thing folded about its ask
        since the late commit's time (and nothing read the ask after it); the end is
        then folded again, after the commit. Otherwise leave it: a conflict."""
        undo = self.undo.get(key)
        ask_id = key[0]
        if (
            undo is None
            or self.run_written.get(ask_id) != undo.key
            or undo.written_before > self.cur
            or self.run_read.get(ask_id, BEFORE_ALL) > undo.key
        ):
            return
        cur, past = self.cur, self.past
        self.cur, self.past = undo.key, True
        for prover, interval, end, _, _ in undo.intervals:
            if interval.end != end:  # give back what the window's end took
                self._write_occ(prover, interval.end, end, +1)
        self.cur, self.past = cur, past
        for prover, interval, end, settled, end_key in undo.intervals:
            self._set_end(prover, interval, end, settled, end_key)
        for cid, note in undo.notes.items():
            if note is None:
                self.notes.pop(cid, None)
            else:
                self.notes[cid] = note
        # The window's end only added: slots for its winners, them to its round, and
        # one move of the ask; nothing has changed the run since (checked above).
        run = self.runs[ask_id]
        att = self.attempts[key]
        for prover in att.winners:
            del run.slots[prover]
        del run.rounds[att.round].winners[undo.round_winners :]
        del run.history[undo.history :]
        run.state = undo.state
        att.settled, att.winners, att.winner_commits, att.awarded = False, (), (), False
        self.run_written[ask_id] = undo.written_before
        del self.undo[key]
        self.push(undo.key[0], WINDOW_END, undo.key[2], key, ask_id)
        self._changed(ask_id)
        self.reopened += 1

    def move(self, run: AskRun, t: int, event: Event) -> bool:
        new = next_state(run.state, event)
        if new is None:
            return False
        run.state = new
        run.history.append((t, event, new))
        return True

    def occupied(self, prover: bytes, t: int, commit_id: bytes) -> int:
        """Slots `prover` holds at `t` in the view of its commit `commit_id`: an
        interval counts if its own commit comes first in the fold's order."""
        return sum(
            1
            for o in overlapping(self.occupancy, prover, t, t)
            if t < o.end and (o.start < t or (o.start == t and o.commit_id < commit_id))
        )

    def _set_end(
        self, prover: bytes, interval: Occupancy, end: int, settled: bool, end_key: Key
    ) -> None:
        """Set an interval's end, settled flag and end key, and tell its prover's
        `Intervals` (whose index depends on them)."""
        interval.end, interval.settled, interval.end_key = end, settled, end_key
        held = self.occupancy.get(prover)
        if held is not None:
            held.changed(interval)

    def end_slot(self, slot: Slot, t: int) -> None:
        slot.ended_at = t if slot.ended_at is None else min(slot.ended_at, t)
        held = self.interval.get(slot.commit_id)
        # Every event that ends a slot writes its ask's run, so they are folded in
        # their order (a straggler replays the ask): the first to end it at `t`
        # is the earliest, and its key is the one `end_key` keeps.
        if held is not None and held[1].end > t:
            self._write_occ(slot.prover, t, held[1].end, -1)
            self._set_end(slot.prover, held[1], t, held[1].settled, self.cur)
