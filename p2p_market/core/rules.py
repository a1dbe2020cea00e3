"""The settlement rules: what each message does to its ask, in signed order.

A commit is a candidate if it is valid at its own timestamp (in its window, before
expiry, the round not filled, the prover free and allowed, its bid live, under
capacity); a window's end decides its attempt, by the requester's award if it has
one (final) or else by the one ranking rule (tentative); proofs, attestations and
receipts move slots; a cancel, an expiry and a failed slot move the ask
(lifecycle.py). protocols/market-v1.md §10-§13 is the normative text.
"""

from __future__ import annotations

from p2p_market.core.envelope import Envelope
from p2p_market.core.footprints import Footprints
from p2p_market.core.lifecycle import AskState, Event, SlotState
from p2p_market.core.messages import (
    Ask,
    Award,
    Cancel,
    Commit,
    InvalidInputs,
    Outcome,
    Prefer,
    Proof,
    Receipt,
)
from p2p_market.core.penalties import penalised
from p2p_market.core.ranking import RankKey, rank_key
from p2p_market.core.settlement import (
    AFTER_AWARD,
    BEFORE_ALL,
    EXPIRY,
    INF,
    PENALISED,
    WINDOW_END,
    AskRun,
    Attempt,
    Conflict,
    Intervals,
    Occupancy,
    Round,
    Slot,
    overlapping,
)


class Rules(Footprints):
    def open_ask(self, env: Envelope) -> None:
        ask = env.message
        assert isinstance(ask, Ask)
        self._write_run(env.id)
        run = AskRun(id=env.id, ask=ask, requester=env.signer)
        self.runs[env.id] = run
        self._open_round(run, Round(id=env.id, opened_at=ask.timestamp, slots=ask.replicas))
        self.push(ask.expires_at, EXPIRY, env.id, env.id, env.id)

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
        held = self.occupancy.get(env.signer)
        if held is None:
            held = self.occupancy[env.signer] = Intervals()
        held.add(interval)
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
            self.push(att.window_end, WINDOW_END, tie, key, ask_id)
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
        if penalised(self.penalties, prover, t):
            return PENALISED
        stored = self.book.by_id.get(c.bid)
        if stored is None:
            return "unknown bid"
        bid = stored.bid
        # The book is read here; a bid stored later is checked by `bid_added`.
        self._check_occ(prover, t)
        if not bid.timestamp <= t < bid.expires_at or self.book.newer_seq_at(prover, bid.seq, t):
            self._record_check(prover, t, INF, c.ask)
            return "bid not live at commit time"
        if self.replaying and any(o.end == t for o in overlapping(self.occupancy, prover, t, t)):
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
            price, proof_time = self._commit_terms(cid, run.ask.size)
            deadline = e + self.skew + proof_time  # proving starts once the win is certain
            run.slots[prover] = Slot(
                prover, att.round, att.number, cid, price, proof_time, e, deadline
            )
            self.notes.pop(cid, None)  # an awarded commit takes effect, whatever it was
            held = self.interval.get(cid)
            if held is not None:
                interval = held[1]
                self._write_occ(prover, deadline, interval.end, -1)
                self._set_end(prover, interval, deadline, True, self.cur)
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
        self._set_end(prover, interval, t, True, self.cur)

    def _commit_terms(self, cid: bytes, size: int) -> tuple[int, int]:
        """What the winner is paid (its price per unit times the ask's size,
        core/work.py) and the time it promised."""
        c = self.commit_index[cid]
        return c.price * size, c.proof_time

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
