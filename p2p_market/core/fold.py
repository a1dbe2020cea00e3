"""Commitment ordering: the fold that turns the signed messages of a market into
winners, slots and ask states.

It is a discrete-event replay in signed-timestamp order (ties by message id) of the
asks that have any activity, with two kinds of timers: the end of a commit window
(the attempt settles: the best valid commits win, by the one ranking rule) and an
ask's expiry. Everything it computes is a pure function of the message set and the
horizon (the later of `now` and the newest message).

`settle()` (reference.py) folds from scratch and is the reference. A node keeps
one `Fold` alive and feeds it each new message (footprints.py says when a message
that sorts before what was folded can be taken in place, `_reopen` how a
straggling commit is, and `Fold._replay_ask` how a clash within one ask is).
Why not keep refolding: it was simple, but a node's cost per message grew with its
live asks, and a 200-node simulation at 20 asks/s spent 84% of its time
refolding (0.008 simulated seconds per wall second). The kept fold is checked
against the reference after every step of random out-of-order histories
(tests/core/test_incremental_fold.py); anything it cannot prove commutes raises
`Conflict` and the node refolds, so a mistake there costs time, not agreement.

Capacity without order dependence: a prover's commit is valid only if, at the
commit's own timestamp, the prover holds fewer open commits than its bid's
capacity. A commit is open from its timestamp until it loses (its window's end) or
its task ends (proof, attestation or receipt, else the deadline). Whether an
earlier commit lost is decided by commits with even earlier timestamps, so the
rule is well-founded and needs nothing but signed timestamps.
"""

from __future__ import annotations

import heapq

from p2p_market.core.book import BidBook
from p2p_market.core.envelope import Envelope
from p2p_market.core.messages import (
    Ask,
    Award,
    Commit,
    Market,
)
from p2p_market.core.penalties import Windows
from p2p_market.core.rules import Rules
from p2p_market.core.settlement import (
    ASK_OPEN,
    EXPIRY,
    MESSAGE,
    WINDOW_END,
    AskConflict,
    CapacityCheck,
    Conflict,
    Intervals,
    Key,
    Occupancy,
    Queued,
    Settlement,
)


class Fold(Rules):
    """The fold, kept between settlements so a new message costs what it touches
    (footprints.py says how an out-of-order message is taken in place)."""

    def _replay_ask(self, ask_id: bytes) -> None:
        """Fold one ask again from its opening, alone, against the other asks' slot
        intervals as they stand; then carry the change of its own intervals to the
        other asks' capacity checks (as `_write_occ` does; a flipped one is a
        `Conflict`). Sound because an interval's end, once folded, only moves to
        times not before the event that moved it: a check at `t` sees the same
        count from the final intervals as it did in fold order, except at an end
        exactly at `t`, where the key of the event that set it says (`_counts_at`)."""
        ask_env = self.ask_env.get(ask_id)
        if ask_env is None:
            raise Conflict
        members = self.members.get(ask_id, [])
        commit_ids = [e.id for e in members if isinstance(e.message, Commit)]
        before = {cid: self.interval[cid] for cid in commit_ids if cid in self.interval}
        old = {cid: (p, o.start, o.end, o.end_key) for cid, (p, o) in before.items()}
        # take the ask out of the fold
        self.runs.pop(ask_id, None)
        for key in self.attempts_by_ask.pop(ask_id, ()):
            del self.attempts[key]
            self.undo.pop(key, None)
        for env in members:
            self.notes.pop(env.id, None)
        for cid, (prover, interval) in before.items():
            del self.interval[cid]
            self.occupancy[prover].remove(interval)
        for prover in {p for p, _ in before.values()} | {e.signer for e in members}:
            reads = self.occ_reads.get(prover)
            if reads:
                self.occ_reads[prover] = [r for r in reads if r.ask != ask_id]
        self.run_read.pop(ask_id, None)
        self.run_written.pop(ask_id, None)
        # its queued items go stale (skipped when they come up, not searched for)
        self.generation[ask_id] = self.generation.get(ask_id, 0) + 1
        # fold it again, in order, up to the horizon
        main, cur, past = self.heap, self.cur, self.past
        own: list[Queued] = []
        self.heap, self.past, self.replaying = own, False, True
        try:
            self.push(ask_env.message.timestamp, ASK_OPEN, ask_id, ask_env, ask_id)  # type: ignore[union-attr]
            for env in members:
                self.push(env.message.timestamp, MESSAGE, env.id, env, ask_id)  # type: ignore[union-attr]
            while own:
                t, prio, tie, _, item, _ = own[0]
                if prio < ASK_OPEN and t > self.horizon:
                    break
                heapq.heappop(own)
                self.cur = (t, prio, tie)
                self._fold_item(t, prio, item)
                # What the replay folded is folded: a later item sorting before it is
                # in the past (a window end it passed must be reopened, not skipped).
                if self.cur > self.frontier:
                    self.frontier = self.cur
        finally:
            self.heap, self.cur, self.past, self.replaying = main, cur, past, False
        for item in own:
            heapq.heappush(main, item)
        new = {
            cid: (p, o.start, o.end, o.end_key)
            for cid in commit_ids
            if cid in self.interval
            for p, o in [self.interval[cid]]
        }
        self._carry_interval_changes(ask_id, old, new)
        self._changed(ask_id)
        self.replayed += 1

    def _carry_interval_changes(
        self,
        ask_id: bytes,
        old: dict[bytes, tuple[bytes, int, int, Key]],
        new: dict[bytes, tuple[bytes, int, int, Key]],
    ) -> None:
        """Other asks' capacity checks follow the replayed ask's intervals: only an
        interval the replay changed can count differently at a check."""
        if old == new:
            return
        changed: dict[bytes, list[bytes]] = {}
        for cid in old.keys() | new.keys():
            if old.get(cid) != new.get(cid):
                prover = (old.get(cid) or new[cid])[0]
                changed.setdefault(prover, []).append(cid)
        for prover, cids in sorted(changed.items()):
            if min((old.get(c) or new[c])[1] for c in cids) <= self.occ_floor:
                # The checks this could flip may be older than the record kept
                # (forget_before): they cannot be followed, so fold everything again.
                raise Conflict
            for r in self.occ_reads.get(prover, ()):
                if r.ask == ask_id:
                    continue
                delta = sum(_counts_at(new.get(c), c, r) for c in cids)
                delta -= sum(_counts_at(old.get(c), c, r) for c in cids)
                if delta:
                    if (r.margin > 0) != (r.margin - delta > 0):
                        raise Conflict
                    r.margin -= delta

    def add(self, env: Envelope) -> None:
        """Queue a message (an ask or an ask-scoped one) for the next `advance`."""
        m = env.message
        t: int = m.timestamp  # type: ignore[union-attr]
        if isinstance(m, Ask):
            self.ask_env[env.id] = env
            self.push(t, ASK_OPEN, env.id, env, env.id)
        else:
            if isinstance(m, Commit):
                self.commit_index[env.id] = m
                self.commit_signer[env.id] = env.signer
            elif isinstance(m, Award):
                self._index_award(m)
            self.members.setdefault(m.ask, []).append(env)  # type: ignore[union-attr]
            self.push(t, MESSAGE, env.id, env, m.ask)  # type: ignore[union-attr]
        self.horizon = max(self.horizon, t)

    def _index_award(self, m: Award) -> None:
        """An award reaches back to its attempt's end (and to the ends of earlier
        attempts of its round, and to a cancel): if its ask is folded already, the
        ask is folded again before the next step."""
        self.awards.setdefault((m.ask, m.round, m.attempt), []).append(m)
        self.award_attempts.setdefault(m.ask, {}).setdefault(m.round, set()).add(m.attempt)
        if m.ask in self.runs:
            self.dirty.add(m.ask)

    def bid_added(self, prover: bytes, t: int) -> None:
        """A bid stored after the fold began: the prover's commits already folded at
        or after `t` were judged with a book that lacked it."""
        if self.occ_latest_read.get(prover, -1) >= t:
            raise Conflict

    def advance(self, horizon: int) -> None:
        """Fold every queued message and every timer due by `horizon` (or by the
        newest message, if later). Raises `Conflict`; the fold is then unusable."""
        self.horizon = horizon = max(self.horizon, horizon)
        for ask_id in sorted(self.dirty):
            if ask_id in self.runs:
                self._replay_ask(ask_id)
        self.dirty.clear()
        heap = self.heap
        while heap:
            t, prio, tie, _, item, _ = heap[0]
            if prio < ASK_OPEN and t > horizon:
                break
            if self.stale(heapq.heappop(heap)):
                continue
            key = (t, prio, tie)
            self.cur = key
            self.past = key < self.frontier
            if self.past:
                self.in_place += 1
            try:
                self._fold_item(t, prio, item)
            except AskConflict as conflict:
                # raised before the item changed anything: replay its ask with it
                self._replay_ask(conflict.ask_id)
            if not self.past:
                self.frontier = key

    def _fold_item(self, t: int, prio: int, item: object) -> None:
        """Fold one queued item at `self.cur` (the main loop and `_replay_ask`)."""
        if prio == WINDOW_END:
            self.window_end(item)  # type: ignore[arg-type]
        elif prio == EXPIRY:
            self.expiry(item, t)  # type: ignore[arg-type]
        elif prio == ASK_OPEN:
            self.open_ask(item)  # type: ignore[arg-type]
        else:
            self._dispatch(item)  # type: ignore[arg-type]

    def drop(self, ask_id: bytes, message_ids: set[bytes]) -> None:
        """Set an archived ask aside: its run, attempts and notes leave the fold; its
        provers' slot intervals stay (the capacity rule may look back at them)."""
        self.runs.pop(ask_id, None)
        for key in self.attempts_by_ask.pop(ask_id, ()):
            del self.attempts[key]
        for mid in message_ids:
            self.notes.pop(mid, None)
            self.commit_index.pop(mid, None)
            self.commit_signer.pop(mid, None)
        for round_id, numbers in self.award_attempts.pop(ask_id, {}).items():
            for number in numbers:
                self.awards.pop((ask_id, round_id, number), None)
        self.dirty.discard(ask_id)
        # Its queued timers, stale or not, find no run or attempt and do nothing.
        self.generation.pop(ask_id, None)
        for table in (self.run_read, self.run_written, self.version):
            table.pop(ask_id, None)
        self.ask_env.pop(ask_id, None)
        self.members.pop(ask_id, None)
        self.touched.discard(ask_id)
        self.archive_touched.discard(ask_id)

    def forget_before(self, t: int) -> None:
        """Drop the record of capacity checks and changes before `t`: a message in the
        past of that is a conflict, and the fold is rebuilt. The intervals themselves
        stay until their commits are pruned (forget_commits): a rebuilt fold, or a
        thawed ask's old commits, must see every interval a full fold would."""
        self.occ_floor = max(self.occ_floor, t)
        for prover, reads in list(self.occ_reads.items()):
            kept_reads = [r for r in reads if r.t > t]
            if kept_reads:
                self.occ_reads[prover] = kept_reads
            else:
                del self.occ_reads[prover]
        self.occ_ends = {k: v for k, v in self.occ_ends.items() if k[1] > t}

    def forget_commits(self, commit_ids: list[bytes]) -> None:
        """Drop the slot intervals of these (pruned, archived) commits."""
        for cid in commit_ids:
            held = self.interval.pop(cid, None)
            if held is not None:
                prover, interval = held
                kept = self.occupancy.get(prover)
                if kept is not None:
                    kept.remove(interval)
                    if not kept:
                        del self.occupancy[prover]

    def next_wakeup(self) -> int | None:
        """When the next timer is due; timers of dropped (archived) asks are discarded."""
        heap = self.heap
        while heap:
            _, prio, _, _, item, _ = heap[0]
            live = self.runs if prio == EXPIRY else self.attempts
            if item in live and not self.stale(heap[0]):
                return heap[0][0]
            heapq.heappop(heap)
        return None

    def settlement(self) -> Settlement:
        return Settlement(self.runs, self.attempts, self.occupancy, self.notes, self.next_wakeup())


def _counts_at(held: tuple[bytes, int, int, Key] | None, cid: bytes, r: CapacityCheck) -> int:
    """Whether a commit's slot interval counts at a capacity check folded at `r.key`:
    its commit was folded before the check (`Footprints.occupied`'s order) and its
    end was not yet set to the check's time or before it."""
    if held is None:
        return 0
    _, start, end, end_key = held
    t = r.t
    if (start, MESSAGE, cid) >= r.key:
        return 0
    return 1 if t < end or (t == end and end_key > r.key) else 0


def new_fold(
    market: Market,
    book: BidBook,
    asks: list[Envelope],
    events: list[Envelope],
    fixed_occupancy: dict[bytes, list[Occupancy]] | None = None,
    penalties: Windows | None = None,
) -> Fold:
    """A fold of these asks and their messages, not yet advanced. `fixed_occupancy`
    holds the (ended) slot intervals of archived asks; `penalties`, who may not win
    when (penalties.py)."""
    fold = Fold(market, book, penalties)
    for prover, intervals in (fixed_occupancy or {}).items():
        fold.occupancy[prover] = Intervals(intervals)
        for o in intervals:
            fold.interval[o.commit_id] = (prover, o)
    for env in asks:
        fold.add(env)
    for env in events:
        fold.add(env)
    return fold
