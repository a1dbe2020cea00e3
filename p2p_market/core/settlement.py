"""Commitment ordering: the fold that turns the signed messages of a market into
winners, slots and ask states.

It is a discrete-event replay in signed-timestamp order (ties by message id) of the
asks that have any activity, with two kinds of timers: the end of a commit window
(the attempt settles: the best valid commits win, by the one ranking rule) and an
ask's expiry. Everything it computes is a pure function of the message set and the
horizon (the later of `now` and the newest message), so it is recomputed from
scratch whenever the set changes rather than patched: simple beats clever here,
because this is where the money is decided.

Capacity without order dependence: a prover's commit is valid only if, at the
commit's own timestamp, the prover holds fewer open commits than its bid's
capacity. A commit is open from its timestamp until it loses (its window's end) or
its task ends (proof, attestation or receipt, else the deadline). Whether an
earlier commit lost is decided by commits with even earlier timestamps, so the
rule is well-founded and needs nothing but signed timestamps.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from p2p_market.core.book import BidBook
from p2p_market.core.envelope import Envelope
from p2p_market.core.lifecycle import AskState, Event, SlotState, next_state
from p2p_market.core.messages import (
    Ask,
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
    settled: bool = False


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
class Settlement:
    runs: dict[bytes, AskRun]
    attempts: dict[tuple[bytes, bytes, int], Attempt]
    occupancy: dict[bytes, list[Occupancy]]
    notes: dict[bytes, str]
    """Why a message had no effect, by message id (absent: it took effect)."""
    next_wakeup: int | None


_WINDOW_END, _EXPIRY, _ASK_OPEN, _MESSAGE = 0, 1, 2, 3


class _Fold:
    def __init__(self, market: Market, book: BidBook) -> None:
        self.window = market.commit_window_ms
        self.skew = market.skew_ms
        self.book = book
        self.runs: dict[bytes, AskRun] = {}
        self.attempts: dict[tuple[bytes, bytes, int], Attempt] = {}
        self.occupancy: dict[bytes, list[Occupancy]] = {}
        self.notes: dict[bytes, str] = {}
        self.heap: list[tuple[int, int, bytes, int, object]] = []
        self.counter = 0

    def push(self, t: int, prio: int, tie: bytes, item: object) -> None:
        self.counter += 1
        heapq.heappush(self.heap, (t, prio, tie, self.counter, item))

    # -- helpers ----------------------------------------------------------------
    def move(self, run: AskRun, t: int, event: Event) -> bool:
        new = next_state(run.state, event)
        if new is None:
            return False
        run.state = new
        run.history.append((t, event, new))
        return True

    def occupied(self, prover: bytes, t: int) -> int:
        return sum(1 for o in self.occupancy.get(prover, ()) if o.start <= t < o.end)

    def end_slot(self, slot: Slot, t: int) -> None:
        slot.ended_at = t if slot.ended_at is None else min(slot.ended_at, t)
        for o in self.occupancy.get(slot.prover, ()):
            if o.commit_id == slot.commit_id:
                o.end = min(o.end, t)

    # -- handlers ---------------------------------------------------------------
    def open_ask(self, env: Envelope) -> None:
        ask = env.message
        assert isinstance(ask, Ask)
        run = AskRun(id=env.id, ask=ask, requester=env.signer)
        run.rounds[env.id] = Round(id=env.id, opened_at=ask.timestamp, slots=ask.replicas)
        self.runs[env.id] = run
        self.push(ask.expires_at, _EXPIRY, env.id, env.id)

    def commit(self, env: Envelope) -> None:
        c = env.message
        assert isinstance(c, Commit)
        why = self._commit_invalid(env, c)
        if why:
            self.notes[env.id] = why
            return
        run = self.runs[c.ask]
        start = run.rounds[c.round].opened_at + c.attempt * self.window
        key = (c.ask, c.round, c.attempt)
        att = self.attempts.get(key)
        if att is None:
            att = Attempt(c.round, c.attempt, start, start + self.window)
            self.attempts[key] = att
            self.push(att.window_end, _WINDOW_END, c.ask, key)
        rk = rank_key(run.ask.prefer == Prefer.COST.value, c.price, c.proof_time, c.ask, env.signer)
        att.candidates.append((rk, env.signer, env.id))
        self.occupancy.setdefault(env.signer, []).append(Occupancy(c.timestamp, env.id))

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
        if not bid.timestamp <= t < bid.expires_at or self.book.newer_seq_at(prover, bid.seq, t):
            return "bid not live at commit time"
        if self.occupied(prover, t) >= bid.capacity:
            return "over capacity"
        return ""

    def window_end(self, key: tuple[bytes, bytes, int]) -> None:
        att = self.attempts[key]
        att.settled = True
        run = self.runs[key[0]]
        rnd = run.rounds[att.round]
        e = att.window_end
        ranked = sorted(att.candidates)
        winners: list[tuple[RankKey, bytes, bytes]] = []
        if run.state is AskState.OPEN:
            for cand in ranked:
                if len(winners) >= rnd.unfilled:
                    break
                if cand[1] not in run.slots:
                    winners.append(cand)
        won = {w[2] for w in winners}
        for _, prover, cid in ranked:
            if cid not in won:
                self._release(prover, cid, e)
                self.notes[cid] = (
                    "lost" if run.state is AskState.OPEN else f"ask is {run.state.value}"
                )
        if not winners:
            return
        att.winners = tuple(w[1] for w in winners)
        for _, prover, cid in winners:
            rnd.winners.append(prover)
            price, proof_time = self._commit_terms(cid)
            deadline = e + self.skew + proof_time  # proving starts once the win is certain
            run.slots[prover] = Slot(
                prover, att.round, att.number, cid, price, proof_time, e, deadline
            )
            for o in self.occupancy[prover]:
                if o.commit_id == cid:
                    o.end, o.settled = deadline, True
        self.move(run, e, Event.SLOTS_SHORT if run.seeking else Event.SLOTS_FILLED)

    def _release(self, prover: bytes, cid: bytes, t: int) -> None:
        for o in self.occupancy[prover]:
            if o.commit_id == cid:
                o.end, o.settled = t, True

    def _commit_terms(self, cid: bytes) -> tuple[int, int]:
        c = self.commit_index[cid]
        return c.price, c.proof_time

    def expiry(self, ask_id: bytes, t: int) -> None:
        run = self.runs[ask_id]
        run.expired = True
        self.move(run, t, Event.EXPIRE_BUSY if run.busy else Event.EXPIRE_IDLE)

    def _owned_run(self, env: Envelope, ask_id: bytes) -> AskRun | None:
        """The ask a requester's message is about, if it exists and is the signer's."""
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
        if not self.move(run, c.timestamp, Event.CANCEL):
            self.notes[env.id] = f"ask is {run.state.value}"

    def proof(self, env: Envelope) -> None:
        p = env.message
        assert isinstance(p, Proof)
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
        if slot is None or not slot.state.in_progress:
            self.notes[env.id] = "no assignment in progress for that prover"
            return
        t = r.timestamp
        if r.outcome == Outcome.ACCEPTED.value:
            if slot.state is SlotState.ATTESTED:
                self.notes[env.id] = "the prover attested invalid inputs"
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
        if r.outcome == Outcome.TIMED_OUT.value:
            if slot.state is not SlotState.ASSIGNED:
                self.notes[env.id] = f"cannot time out a slot that is {slot.state.value}"
                return
            if t < slot.deadline:
                self.notes[env.id] = "timed_out before the deadline"
                return
            slot.state = SlotState.TIMED_OUT
        else:
            slot.state = SlotState.INVALID
        self.end_slot(slot, t)
        run.excluded.add(r.prover)
        if not run.expired:
            run.rounds[env.id] = Round(id=env.id, opened_at=t, slots=1)
            self.move(run, t, Event.FAIL_REOPEN)
        else:
            self.move(run, t, Event.FAIL_BUSY if run.busy else Event.FAIL_IDLE)

    # -- driver -----------------------------------------------------------------
    def run(self, asks: list[Envelope], events: list[Envelope], horizon: int) -> Settlement:
        self.commit_index: dict[bytes, Commit] = {}
        for env in asks:
            self.push(env.message.timestamp, _ASK_OPEN, env.id, env)  # type: ignore[union-attr]
        for env in events:
            if isinstance(env.message, Commit):
                self.commit_index[env.id] = env.message
            self.push(env.message.timestamp, _MESSAGE, env.id, env)  # type: ignore[union-attr]
        if events or asks:
            horizon = max(horizon, max(e.message.timestamp for e in events + asks))  # type: ignore[union-attr]
        next_wakeup: int | None = None
        while self.heap:
            t, prio, _, _, item = self.heap[0]
            if prio in (_WINDOW_END, _EXPIRY) and t > horizon:
                break
            heapq.heappop(self.heap)
            if prio == _WINDOW_END:
                self.window_end(item)  # type: ignore[arg-type]
            elif prio == _EXPIRY:
                self.expiry(item, t)  # type: ignore[arg-type]
            elif prio == _ASK_OPEN:
                self.open_ask(item)  # type: ignore[arg-type]
            else:
                self._dispatch(item)  # type: ignore[arg-type]
        if self.heap:
            next_wakeup = min(t for t, prio, *_ in self.heap if prio in (_WINDOW_END, _EXPIRY))
        return Settlement(self.runs, self.attempts, self.occupancy, self.notes, next_wakeup)

    def _dispatch(self, env: Envelope) -> None:
        m = env.message
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


def settle(
    market: Market,
    book: BidBook,
    asks: list[Envelope],
    events: list[Envelope],
    horizon: int,
    fixed_occupancy: dict[bytes, list[Occupancy]] | None = None,
) -> Settlement:
    """Fold the asks with activity and their ask-scoped messages up to `horizon`.
    `fixed_occupancy` holds the (ended) slot intervals of archived asks."""
    fold = _Fold(market, book)
    for prover, intervals in (fixed_occupancy or {}).items():
        fold.occupancy[prover] = list(intervals)
    return fold.run(asks, events, horizon)


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
