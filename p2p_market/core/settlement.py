"""Commitment ordering: the fold that turns the signed messages of a market into
winners, slots and ask states.

It is a discrete-event replay in signed-timestamp order (ties by message id) of the
asks that have any activity, with two kinds of timers: the end of a commit window
(the attempt settles: the best valid commits win, by the one ranking rule) and an
ask's expiry. Everything it computes is a pure function of the message set and the
horizon (the later of `now` and the newest message).

`settle()` folds from scratch and is the reference. A node keeps one `Fold` alive
and feeds it each new message (see `Fold` for when a message that sorts before
what was folded can be taken in place, and `Fold._reopen` for the straggling
commit). Why not keep refolding: it was simple, but a node's cost per message grew
with its live asks, and a 200-node simulation at 20 asks/s spent 84% of its time
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

import bisect
import heapq
from collections import deque
from dataclasses import dataclass, field

from p2p_market.core.book import BidBook
from p2p_market.core.envelope import Envelope
from p2p_market.core.lifecycle import AskState, Event, SlotState, next_state
from p2p_market.core.messages import (
    Ask,
    Award,
    Cancel,
    Commit,
    InvalidInputs,
    Market,
    Outcome,
    Prefer,
    Proof,
    Receipt,
)
from p2p_market.core.ranking import RankKey, rank_key

INF = 2**63


@dataclass(slots=True)
class Occupancy:
    """One commit holding one of its prover's slots from `start` until `end`."""

    start: int
    commit_id: bytes
    end: int = INF
    settled: bool = False


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


def _check_order(check: CapacityCheck) -> tuple[int, tuple[int, int, bytes]]:
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
    intervals: list[tuple[bytes, Occupancy, int, bool]]
    """(prover, interval, end, settled) of each candidate before the window ended."""
    notes: dict[bytes, str | None]


UNDO_KEEP_MS = 10_000
"""How long after a window's end it can still be reopened in place."""


@dataclass(slots=True)
class Settlement:
    runs: dict[bytes, AskRun]
    attempts: dict[tuple[bytes, bytes, int], Attempt]
    occupancy: dict[bytes, list[Occupancy]]
    notes: dict[bytes, str]
    """Why a message had no effect, by message id (absent: it took effect)."""
    next_wakeup: int | None


_WINDOW_END, _EXPIRY, _ASK_OPEN, _MESSAGE = 0, 1, 2, 3

AFTER_AWARD = "after the award"
"""The note on a commit to an attempt its requester's award decided without it."""

Key = tuple[int, int, bytes]
"""Where an event sits in the fold's order: (time, kind priority, unique tie)."""
BEFORE_ALL: Key = (-1, -1, b"")


class Conflict(Exception):
    """A message arrived in the past of an event it interacts with: the fold must be
    replayed (see `Fold.advance`)."""


class AskConflict(Conflict):
    """The conflict is within one ask's run: replaying that ask may do (see
    `Fold._replay_ask`)."""

    def __init__(self, ask_id: bytes) -> None:
        super().__init__(ask_id)
        self.ask_id = ask_id


class Fold:
    """The fold, kept between settlements so a new message costs what it touches.

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

    def __init__(self, market: Market, book: BidBook) -> None:
        self.window = market.commit_window_ms
        self.skew = market.skew_ms
        self.book = book
        self.runs: dict[bytes, AskRun] = {}
        self.attempts: dict[tuple[bytes, bytes, int], Attempt] = {}
        self.attempts_by_ask: dict[bytes, list[tuple[bytes, bytes, int]]] = {}
        self.occupancy: dict[bytes, list[Occupancy]] = {}
        self.interval: dict[bytes, tuple[bytes, Occupancy]] = {}
        """(prover, interval) of every valid commit, by commit id."""
        self.notes: dict[bytes, str] = {}
        self.heap: list[tuple[int, int, bytes, object]] = []
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

    def push(self, t: int, prio: int, tie: bytes, item: object) -> None:
        heapq.heappush(self.heap, (t, prio, tie, item))

    # -- footprints: what each event reads and writes ---------------------------------
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
        bisect.insort(self.occ_reads.setdefault(prover, []), check, key=_check_order)
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
                bisect.bisect_left(reads, (lo, BEFORE_ALL), key=_check_order), len(reads)
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
            (p, o, o.end, o.settled)
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
        for prover, interval, end, _ in undo.intervals:
            if interval.end != end:  # give back what the window's end took
                self._write_occ(prover, interval.end, end, +1)
        self.cur, self.past = cur, past
        for _, interval, end, settled in undo.intervals:
            interval.end, interval.settled = end, settled
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
        self.push(undo.key[0], _WINDOW_END, undo.key[2], key)
        self._changed(ask_id)
        self.reopened += 1

    def _replay_ask(self, ask_id: bytes) -> None:
        """Fold one ask again from its opening, alone, against the other asks' slot
        intervals as they stand; then carry the change of its own intervals to the
        other asks' capacity checks (as `_write_occ` does; a flipped one is a
        `Conflict`). Sound because an interval's end, once folded, only moves to
        times not before the event that moved it: a check at `t` sees the same
        count from the final intervals as it did in fold order, except at an end
        exactly at `t`, which is refused (a `Conflict`) rather than guessed."""
        ask_env = self.ask_env.get(ask_id)
        if ask_env is None:
            raise Conflict
        members = self.members.get(ask_id, [])
        commit_ids = [e.id for e in members if isinstance(e.message, Commit)]
        before = {cid: self.interval[cid] for cid in commit_ids if cid in self.interval}
        old = {cid: (p, o.start, o.end) for cid, (p, o) in before.items()}
        # take the ask out of the fold
        self.runs.pop(ask_id, None)
        for key in self.attempts_by_ask.pop(ask_id, ()):
            del self.attempts[key]
            self.undo.pop(key, None)
        for env in members:
            self.notes.pop(env.id, None)
        for cid, (prover, interval) in before.items():
            del self.interval[cid]
            self.occupancy[prover] = [o for o in self.occupancy[prover] if o is not interval]
        for prover in {p for p, _ in before.values()} | {e.signer for e in members}:
            reads = self.occ_reads.get(prover)
            if reads:
                self.occ_reads[prover] = [r for r in reads if r.ask != ask_id]
        self.run_read.pop(ask_id, None)
        self.run_written.pop(ask_id, None)
        self.heap[:] = [item for item in self.heap if _ask_of(item) != ask_id]  # in place:
        heapq.heapify(self.heap)  # `advance` holds this list
        # fold it again, in order, up to the horizon
        main, cur, past = self.heap, self.cur, self.past
        own: list[tuple[int, int, bytes, object]] = []
        self.heap, self.past, self.replaying = own, False, True
        try:
            self.push(ask_env.message.timestamp, _ASK_OPEN, ask_id, ask_env)  # type: ignore[union-attr]
            for env in members:
                self.push(env.message.timestamp, _MESSAGE, env.id, env)  # type: ignore[union-attr]
            while own:
                t, prio, tie, item = own[0]
                if prio < _ASK_OPEN and t > self.horizon:
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
            cid: (self.interval[cid][0], self.interval[cid][1].start, self.interval[cid][1].end)
            for cid in commit_ids
            if cid in self.interval
        }
        self._carry_interval_changes(ask_id, old, new)
        self._changed(ask_id)
        self.replayed += 1

    def _carry_interval_changes(
        self,
        ask_id: bytes,
        old: dict[bytes, tuple[bytes, int, int]],
        new: dict[bytes, tuple[bytes, int, int]],
    ) -> None:
        """Other asks' capacity checks follow the replayed ask's intervals."""
        if old == new:
            return
        for prover in {v[0] for v in old.values()} | {v[0] for v in new.values()}:
            mine_old = [(s, e) for p, s, e in old.values() if p == prover]
            mine_new = [(s, e) for p, s, e in new.values() if p == prover]
            if sorted(mine_old) == sorted(mine_new):
                continue
            edges = {x for iv in mine_old + mine_new for x in iv}
            for r in self.occ_reads.get(prover, ()):
                if r.ask == ask_id:
                    continue
                t = r.t
                if t in edges:
                    raise Conflict  # an interval starting or ending exactly there
                delta = sum(1 for s, e in mine_new if s <= t < e)
                delta -= sum(1 for s, e in mine_old if s <= t < e)
                if delta:
                    if (r.margin > 0) != (r.margin - delta > 0):
                        raise Conflict
                    r.margin -= delta

    # -- helpers ----------------------------------------------------------------
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
            for o in self.occupancy.get(prover, ())
            if t < o.end and (o.start < t or (o.start == t and o.commit_id < commit_id))
        )

    def end_slot(self, slot: Slot, t: int) -> None:
        slot.ended_at = t if slot.ended_at is None else min(slot.ended_at, t)
        held = self.interval.get(slot.commit_id)
        if held is not None and held[1].end > t:
            self._write_occ(slot.prover, t, held[1].end, -1)
            held[1].end = t

    # -- handlers ---------------------------------------------------------------
    def open_ask(self, env: Envelope) -> None:
        ask = env.message
        assert isinstance(ask, Ask)
        self._write_run(env.id)
        run = AskRun(id=env.id, ask=ask, requester=env.signer)
        self.runs[env.id] = run
        self._open_round(run, Round(id=env.id, opened_at=ask.timestamp, slots=ask.replicas))
        self.push(ask.expires_at, _EXPIRY, env.id, env.id)

    def commit(self, env: Envelope) -> None:
        c = env.message
        assert isinstance(c, Commit)
        if self.past and self.run_written.get(c.ask, BEFORE_ALL) > self.cur:
            self._reopen((c.ask, c.round, c.attempt))
        self._read_run(c.ask)
        why = self._commit_invalid(env, c)
        if why:
            self.notes[env.id] = why
            return
        run = self.runs[c.ask]
        att = self._attempt(run.rounds[c.round], c.ask, c.attempt)
        self._changed(c.ask)
        rk = rank_key(run.ask.prefer == Prefer.COST.value, c.price, c.proof_time, c.ask, env.signer)
        att.candidates.append((rk, env.signer, env.id))
        self._write_occ(env.signer, c.timestamp, INF, +1)
        interval = Occupancy(c.timestamp, env.id)
        self.occupancy.setdefault(env.signer, []).append(interval)
        self.interval[env.id] = (env.signer, interval)

    def _attempt(self, rnd: Round, ask_id: bytes, number: int) -> Attempt:
        """The attempt, created with its window's end scheduled if it is new."""
        key = (ask_id, rnd.id, number)
        att = self.attempts.get(key)
        if att is None:
            start = rnd.opened_at + number * self.window
            att = Attempt(rnd.id, number, start, start + self.window)
            self.attempts[key] = att
            self.attempts_by_ask.setdefault(ask_id, []).append(key)
            tie = ask_id + rnd.id + number.to_bytes(8, "big")
            self.push(att.window_end, _WINDOW_END, tie, key)
        return att

    def _open_round(self, run: AskRun, rnd: Round) -> None:
        """A round opens; its awarded attempts must end even if no commit to them is
        valid in this node's view (an award is final whatever the view)."""
        run.rounds[rnd.id] = rnd
        for number in sorted(self.award_attempts.get(run.id, {}).get(rnd.id, ())):
            self._attempt(rnd, run.id, number)

    def _commit_invalid(self, env: Envelope, c: Commit) -> str:
        run = self.runs.get(c.ask)
        if run is None:
            return "unknown ask"
        if run.state is not AskState.OPEN:
            return f"ask is {run.state.value}"
        t, prover = c.timestamp, env.signer
        if t >= run.ask.expires_at:
            return "after expiry"
        rnd = run.rounds.get(c.round)
        if rnd is None:
            return "unknown round"
        start = rnd.opened_at + c.attempt * self.window
        if not start <= t < start + self.window:
            return "outside its commit window"
        if self._decided(c, env.id, rnd):
            return AFTER_AWARD
        if rnd.unfilled <= 0:
            return "round already filled"
        if prover in run.excluded or prover in run.slots:
            return "prover excluded from this ask"
        if (run.ask.allow and prover not in run.ask.allow) or prover in run.ask.deny:
            return "prover not allowed by the ask"
        stored = self.book.by_id.get(c.bid)
        if stored is None:
            return "unknown bid"
        bid = stored.bid
        # The book is read here; a bid stored later is checked by `bid_added`.
        self._check_occ(prover, t)
        if not bid.timestamp <= t < bid.expires_at or self.book.newer_seq_at(prover, bid.seq, t):
            self._record_check(prover, t, INF, c.ask)
            return "bid not live at commit time"
        if self.replaying and any(o.end == t for o in self.occupancy.get(prover, ())):
            raise Conflict  # which side of `t` that end falls on depends on fold order
        margin = bid.capacity - self.occupied(prover, t, env.id)
        self._record_check(prover, t, margin, c.ask)
        if margin <= 0:
            return "over capacity"
        return ""

    def window_end(self, key: tuple[bytes, bytes, int]) -> None:
        att = self.attempts.get(key)
        if att is None:
            return  # its ask was archived (or thawed and refolded): nothing to settle
        written_before = self.run_written.get(key[0], BEFORE_ALL)
        self._write_run(key[0])
        run = self.runs[key[0]]
        rnd = run.rounds[att.round]
        awarded = self._award_of(key, rnd)
        self._keep_undo(key, run, att, written_before, awarded or set())
        att.settled = True
        e = att.window_end
        ranked = sorted(att.candidates)
        att.awarded = awarded is not None
        winners: list[tuple[RankKey, bytes, bytes]] = []
        if awarded is None:  # tentative: the ranking decides
            if run.state is AskState.OPEN:
                for cand in ranked:
                    if len(winners) >= rnd.unfilled:
                        break
                    if cand[1] not in run.slots and all(w[1] != cand[1] for w in winners):
                        winners.append(cand)
            lost = "lost" if run.state is AskState.OPEN else f"ask is {run.state.value}"
        else:  # final: the requester's award decides, whatever else was signed
            if run.state in (AskState.OPEN, AskState.INVALID_INPUTS):
                for cand in self._awarded_ranked(run, att, awarded):
                    if len(winners) >= rnd.unfilled:
                        break
                    prover = cand[1]
                    taken = prover in run.slots or prover in run.excluded
                    if not taken and all(w[1] != prover for w in winners):
                        winners.append(cand)
            lost = "not awarded"
        won = {w[2] for w in winners}
        for _, prover, cid in ranked:
            if cid not in won:
                self._release(prover, cid, e)
                self.notes[cid] = lost
        if not winners:
            return
        att.winners = tuple(w[1] for w in winners)
        att.winner_commits = tuple(w[2] for w in winners)
        for _, prover, cid in winners:
            rnd.winners.append(prover)
            price, proof_time = self._commit_terms(cid)
            deadline = e + self.skew + proof_time  # proving starts once the win is certain
            run.slots[prover] = Slot(
                prover, att.round, att.number, cid, price, proof_time, e, deadline
            )
            self.notes.pop(cid, None)  # an awarded commit takes effect, whatever it was
            held = self.interval.get(cid)
            if held is not None:
                interval = held[1]
                self._write_occ(prover, deadline, interval.end, -1)
                interval.end, interval.settled = deadline, True
        self.move(run, e, Event.SLOTS_SHORT if run.seeking else Event.SLOTS_FILLED)

    def _award_of(self, key: tuple[bytes, bytes, int], rnd: Round) -> set[bytes] | None:
        """The commits the requester awarded in this attempt (None: no award decides
        it). An award counts once its attempt's window has ended (it is signed at or
        after the end). An award of a later attempt of the round closes this one
        with no winners: the requester moved on, so nothing signed for it later can
        win."""
        ask_id, round_id, number = key
        named: set[bytes] | None = None
        for award in self.awards.get(key, ()):
            if award.timestamp >= rnd.opened_at + (number + 1) * self.window:
                named = (named or set()) | set(award.commits)
        if named is not None:
            return named
        for later in self.award_attempts.get(ask_id, {}).get(round_id, ()):
            if later > number and any(
                a.timestamp >= rnd.opened_at + (later + 1) * self.window
                for a in self.awards[(ask_id, round_id, later)]
            ):
                return set()
        return None

    def _awarded_ranked(
        self, run: AskRun, att: Attempt, awarded: set[bytes]
    ) -> list[tuple[RankKey, bytes, bytes]]:
        """The awarded commits that can hold a slot, best first by the ranking rule.
        Only what the requester could check itself is checked: the commit was
        signed inside this window and before expiry by a prover the ask allows.
        Whether it was valid in this node's tentative view (capacity, a newer bid)
        does not matter: the requester's signed word is final."""
        ask = run.ask
        out = []
        for cid in awarded:
            c = self.commit_index.get(cid)
            prover = self.commit_signer.get(cid)
            if c is None or prover is None:
                continue
            if not att.window_start <= c.timestamp < att.window_end:
                continue
            if c.timestamp >= ask.expires_at:
                continue
            if (ask.allow and prover not in ask.allow) or prover in ask.deny:
                continue
            rk = rank_key(ask.prefer == Prefer.COST.value, c.price, c.proof_time, run.id, prover)
            out.append((rk, prover, cid))
        return sorted(out)

    def _decided(self, c: Commit, commit_id: bytes, rnd: Round) -> bool:
        """The commit's attempt was decided by an award that does not name it."""
        awarded = self._award_of((c.ask, c.round, c.attempt), rnd)
        return awarded is not None and commit_id not in awarded

    def _release(self, prover: bytes, cid: bytes, t: int) -> None:
        interval = self.interval[cid][1]
        self._write_occ(prover, t, interval.end, -1)
        interval.end, interval.settled = t, True

    def _commit_terms(self, cid: bytes) -> tuple[int, int]:
        c = self.commit_index[cid]
        return c.price, c.proof_time

    def expiry(self, ask_id: bytes, t: int) -> None:
        run = self.runs.get(ask_id)
        if run is None:
            return  # archived
        self._write_run(ask_id)
        run.expired = True
        self.move(run, t, Event.EXPIRE_BUSY if run.busy else Event.EXPIRE_IDLE)

    def _owned_run(self, env: Envelope, ask_id: bytes) -> AskRun | None:
        """The ask a requester's message is about, if it exists and is the signer's."""
        self._write_run(ask_id)
        run = self.runs.get(ask_id)
        if run is None:
            self.notes[env.id] = "unknown ask"
        elif env.signer != run.requester:
            self.notes[env.id] = "not the ask's owner"
            run = None
        return run

    def cancel(self, env: Envelope) -> None:
        c = env.message
        assert isinstance(c, Cancel)
        run = self._owned_run(env, c.ask)
        if run is None:
            return
        if run.slots:
            self.notes[env.id] = "cancel after assignment"
            return
        if c.ask in self.award_attempts:
            self.notes[env.id] = "cancel after assignment"  # the requester awarded it
            return
        if not self.move(run, c.timestamp, Event.CANCEL):
            self.notes[env.id] = f"ask is {run.state.value}"

    def proof(self, env: Envelope) -> None:
        p = env.message
        assert isinstance(p, Proof)
        self._write_run(p.ask)
        run = self.runs.get(p.ask)
        slot = run.slots.get(env.signer) if run else None
        if run is None or slot is None:
            self.notes[env.id] = "not a winner of this ask"
            return
        if slot.state is not SlotState.ASSIGNED:
            self.notes[env.id] = f"slot is {slot.state.value}"
            return
        if p.timestamp > slot.deadline:
            self.notes[env.id] = "after the deadline"
            return
        if not self.move(run, p.timestamp, Event.PROOF):
            self.notes[env.id] = f"ask is {run.state.value}"
            return
        slot.state, slot.proof_hash = SlotState.DELIVERED, p.proof_hash
        self.end_slot(slot, p.timestamp)

    def attest(self, env: Envelope) -> None:
        m = env.message
        assert isinstance(m, InvalidInputs)
        self._write_run(m.ask)
        run = self.runs.get(m.ask)
        slot = run.slots.get(env.signer) if run else None
        if run is None or slot is None or slot.state is not SlotState.ASSIGNED:
            self.notes[env.id] = "not a winner at work on this ask"
            return
        if not self.move(run, m.timestamp, Event.ATTEST_INVALID):
            self.notes[env.id] = f"ask is {run.state.value}"
            return
        slot.state = SlotState.ATTESTED
        self.end_slot(slot, m.timestamp)

    def receipt(self, env: Envelope) -> None:
        r = env.message
        assert isinstance(r, Receipt)
        run = self._owned_run(env, r.ask)
        if run is None:
            return
        slot = run.slots.get(r.prover)
        t = r.timestamp
        if r.outcome == Outcome.ACCEPTED.value:
            # From any slot not yet accepted: after an attestation, after the
            # requester's own timeout or invalid verdict (it opened its round; the
            # slot is paid all the same). A payment is the requester's word and
            # only adds: no message signed earlier or later, by the prover or by
            # the requester, takes it back, and whether this node has seen the
            # prover's proof does not matter.
            if slot is None or slot.state is SlotState.ACCEPTED:
                self.notes[env.id] = "no unpaid assignment of that prover"
                return
            slot.state = SlotState.ACCEPTED
            self.end_slot(slot, t)
            if run.accepted >= run.ask.replicas:
                event = Event.ACCEPT_LAST
            elif run.expired and not run.busy:
                event = Event.ACCEPT_IDLE
            else:
                event = Event.ACCEPT_MORE
            self.move(run, t, event)
            return
        if slot is None or not slot.state.in_progress:
            self.notes[env.id] = "no assignment in progress for that prover"
            return
        if r.outcome == Outcome.TIMED_OUT.value:
            if t < slot.deadline:
                self.notes[env.id] = "timed_out before the deadline"
                return
            # From any slot in progress the timeout opens its round: the requester
            # moved on, and what it did next (an award in that round) must not hang
            # on whether a proof signed in time but unseen by it turns up later. The
            # slot itself is TIMED_OUT only if no such proof (or attestation) came:
            # a proof signed by the deadline still counts, and may still be accepted.
            if slot.state is SlotState.ASSIGNED:
                slot.state = SlotState.TIMED_OUT
        else:
            slot.state = SlotState.INVALID
        self.end_slot(slot, t)
        run.excluded.add(r.prover)
        if not run.expired:
            if not slot.replaced:
                slot.replaced = True
                self._open_round(run, Round(id=env.id, opened_at=t, slots=1))
                self.move(run, t, Event.FAIL_REOPEN)
        else:
            self.move(run, t, Event.FAIL_BUSY if run.busy else Event.FAIL_IDLE)

    def award(self, env: Envelope) -> None:
        """Its effect is taken at its attempt's end (see `window_end`); here the fold
        only notes an award that cannot count."""
        m = env.message
        assert isinstance(m, Award)
        self._read_run(m.ask)
        run = self.runs.get(m.ask)
        if run is None:
            self.notes[env.id] = "unknown ask"
        elif env.signer != run.requester:
            self.notes[env.id] = "not the ask's owner"
        else:
            rnd = run.rounds.get(m.round)
            if rnd is None:
                self.notes[env.id] = "unknown round"
            elif m.timestamp < rnd.opened_at + (m.attempt + 1) * self.window:
                self.notes[env.id] = "signed before its window ended"

    # -- driver -----------------------------------------------------------------
    def add(self, env: Envelope) -> None:
        """Queue a message (an ask or an ask-scoped one) for the next `advance`."""
        m = env.message
        t: int = m.timestamp  # type: ignore[union-attr]
        if isinstance(m, Ask):
            self.ask_env[env.id] = env
            self.push(t, _ASK_OPEN, env.id, env)
        else:
            if isinstance(m, Commit):
                self.commit_index[env.id] = m
                self.commit_signer[env.id] = env.signer
            elif isinstance(m, Award):
                self._index_award(m)
            self.members.setdefault(m.ask, []).append(env)  # type: ignore[union-attr]
            self.push(t, _MESSAGE, env.id, env)
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
            t, prio, tie, item = heap[0]
            if prio < _ASK_OPEN and t > horizon:
                break
            heapq.heappop(heap)
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
        if prio == _WINDOW_END:
            self.window_end(item)  # type: ignore[arg-type]
        elif prio == _EXPIRY:
            self.expiry(item, t)  # type: ignore[arg-type]
        elif prio == _ASK_OPEN:
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
        for table in (self.run_read, self.run_written, self.version):
            table.pop(ask_id, None)
        self.ask_env.pop(ask_id, None)
        self.members.pop(ask_id, None)
        self.touched.discard(ask_id)
        self.archive_touched.discard(ask_id)

    def forget_before(self, t: int, live_commits: set[bytes]) -> None:
        """Drop intervals of archived commits that ended by `t` (as the archive does),
        and the record of capacity checks and changes before `t`: a message in the
        past of that is a conflict (it would have thawed archived asks anyway)."""
        self.occ_floor = max(self.occ_floor, t)
        for prover, reads in list(self.occ_reads.items()):
            kept_reads = [r for r in reads if r.t > t]
            if kept_reads:
                self.occ_reads[prover] = kept_reads
            else:
                del self.occ_reads[prover]
        self.occ_ends = {k: v for k, v in self.occ_ends.items() if k[1] > t}
        for prover, intervals in list(self.occupancy.items()):
            kept = [o for o in intervals if o.end > t or o.commit_id in live_commits]
            if len(kept) != len(intervals):
                if kept:
                    self.occupancy[prover] = kept
                else:
                    del self.occupancy[prover]
                for o in intervals:
                    if o.end <= t and o.commit_id not in live_commits:
                        self.interval.pop(o.commit_id, None)

    def forget_commits(self, commit_ids: list[bytes]) -> None:
        """Drop the slot intervals of these (pruned, archived) commits."""
        for cid in commit_ids:
            held = self.interval.pop(cid, None)
            if held is not None:
                prover, interval = held
                kept = [o for o in self.occupancy.get(prover, ()) if o is not interval]
                if kept:
                    self.occupancy[prover] = kept
                else:
                    self.occupancy.pop(prover, None)

    def next_wakeup(self) -> int | None:
        """When the next timer is due; timers of dropped (archived) asks are discarded."""
        heap = self.heap
        while heap:
            _, prio, _, item = heap[0]
            live = self.runs if prio == _EXPIRY else self.attempts
            if item in live:
                return heap[0][0]
            heapq.heappop(heap)
        return None

    def settlement(self) -> Settlement:
        return Settlement(self.runs, self.attempts, self.occupancy, self.notes, self.next_wakeup())

    def _dispatch(self, env: Envelope) -> None:
        m = env.message
        # Whatever it does, the ask's last activity may have moved (see the archive).
        self._changed(m.ask)  # type: ignore[union-attr]
        if isinstance(m, Commit):
            self.commit(env)
        elif isinstance(m, Cancel):
            self.cancel(env)
        elif isinstance(m, Proof):
            self.proof(env)
        elif isinstance(m, Receipt):
            self.receipt(env)
        elif isinstance(m, InvalidInputs):
            self.attest(env)
        elif isinstance(m, Award):
            self.award(env)


def _ask_of(item: tuple[int, int, bytes, object]) -> bytes:
    """The ask a queued fold item belongs to."""
    _, prio, _, thing = item
    if prio == _WINDOW_END:
        return thing[0]  # type: ignore[index,no-any-return]
    if prio == _EXPIRY:
        return thing  # type: ignore[return-value]
    env = thing
    assert isinstance(env, Envelope)
    return env.id if prio == _ASK_OPEN else env.message.ask  # type: ignore[union-attr]


def new_fold(
    market: Market,
    book: BidBook,
    asks: list[Envelope],
    events: list[Envelope],
    fixed_occupancy: dict[bytes, list[Occupancy]] | None = None,
) -> Fold:
    """A fold of these asks and their messages, not yet advanced. `fixed_occupancy`
    holds the (ended) slot intervals of archived asks."""
    fold = Fold(market, book)
    for prover, intervals in (fixed_occupancy or {}).items():
        fold.occupancy[prover] = list(intervals)
        for o in intervals:
            fold.interval[o.commit_id] = (prover, o)
    for env in asks:
        fold.add(env)
    for env in events:
        fold.add(env)
    return fold


def settle(
    market: Market,
    book: BidBook,
    asks: list[Envelope],
    events: list[Envelope],
    horizon: int,
    fixed_occupancy: dict[bytes, list[Occupancy]] | None = None,
) -> Settlement:
    """The reference: fold the asks with activity and their ask-scoped messages up
    to `horizon`, from scratch, in key order (no message is ever in the past)."""
    fold = new_fold(market, book, asks, events, fixed_occupancy)
    fold.advance(horizon)
    return fold.settlement()


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
