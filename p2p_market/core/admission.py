"""Admission: the checks that need state, after the stateless ones (validation.py).

In the order of protocols/market-v1.md §6: the market, the clock (from the future,
expired, stale), the parents (an orphan waits for its parent), ownership and the
terms a commit must match, then equivocation (both twins kept as evidence) and
store. A message that is stored yet cannot count (a cancel after assignment, a
commit after the award) is IGNOREd with its reason: kept, not forwarded, nobody
blamed.

Judging (`_judge`) changes nothing: whether a message is kept (stored, or held as
an orphan) is known before anything is kept, so a shell can make it durable first
(`MarketState.keeps`), and refuse it with the state untouched if it cannot.
"""

from __future__ import annotations

from typing import NamedTuple

from p2p_market.core import effects as fx
from p2p_market.core.envelope import Envelope, market_id
from p2p_market.core.holdings import Effects, _id_int, equivocation_key
from p2p_market.core.limits import MAX_PENDING_ORPHAN_BYTES, MAX_PENDING_ORPHANS
from p2p_market.core.messages import (
    Ask,
    Award,
    Bid,
    Cancel,
    Commit,
    InvalidInputs,
    Market,
    Proof,
    Receipt,
)
from p2p_market.core.observation import Observation
from p2p_market.core.settlement import AFTER_AWARD
from p2p_market.core.statements import provably_invalid
from p2p_market.core.verdict import ACCEPTED, Reason, Status, Verdict, ignore, reject
from p2p_market.core.work import misdeclared, takes, within

_LATE_CANCEL = "cancel after assignment"


def signed_order(env: Envelope) -> tuple[int, bytes]:
    return (env.message.timestamp if not isinstance(env.message, Market) else 0, env.id)


class Hold(NamedTuple):
    """The judgement on a message whose parent is not stored: hold it until it is."""

    parent: bytes


class Admission(Observation):
    def _admit(self, env: Envelope, now: int, effects: Effects) -> Verdict:
        judged = self._judge(env, now)
        if isinstance(judged, Verdict):
            return judged
        if isinstance(judged, Hold):
            return self._orphan(env, judged.parent)
        m = env.message
        invalid = isinstance(m, Proof) and self._record_invalid_proof(env, m)
        key = equivocation_key(env)
        rival = self.keyed.get(key)
        if rival is not None:
            return self._equivocation(env, rival, now, effects)
        self._store(env, key)
        self._after_store(env, now, effects)
        if invalid:
            # Stored and forwarded like any proof (ACCEPT, with its reason named):
            # the evidence must reach every node, which penalise alike only once
            # they all hold it, and the requester must see it to move its slot on
            # now rather than at the deadline. Spreading it costs no more than any
            # proof: anyone may sign a proof for any ask (it has no effect unless
            # its signer holds a slot), and only its signer is penalised.
            return Verdict(
                Status.ACCEPT, Reason.INVALID_PROOF, "kept as evidence against its prover"
            )
        if isinstance(m, Bid | Ask) and m.expires_at <= now:  # valid, yet came too late
            return ignore(Reason.EXPIRED, "kept: it expired before it arrived")
        if isinstance(m, Cancel) and self._settle(now).notes.get(env.id) == _LATE_CANCEL:
            # Refused, so not forwarded; yet kept: if the assignment it came after
            # proves invalid (a late equivocation, say) it takes effect, exactly as on
            # a node that received it first. Not provable misbehaviour: the requester
            # may simply not have seen the commits yet.
            return ignore(Reason.CANCEL_AFTER_ASSIGNMENT, "kept without effect")
        if (
            isinstance(m, Commit)
            and m.ask in self._awarded
            and self._settle(now).notes.get(env.id) == AFTER_AWARD
        ):
            # Too late to count: the requester's award decided its attempt. Kept (so
            # every node holds the same set) but not forwarded, and nobody is blamed:
            # the forwarder may only have passed on what a prover held back.
            return ignore(Reason.AFTER_AWARD, "kept without effect")
        return ACCEPTED

    def _judge(self, env: Envelope, now: int) -> Verdict | Hold | None:
        """The checks before anything is kept, changing nothing: a Verdict refuses the
        message (it is not kept), a Hold keeps it as an orphan, None stores it."""
        m = env.message
        if isinstance(m, Market):
            if market_id(m) == self.market_id:
                return ignore(Reason.DUPLICATE, "this market's own descriptor")
            return ignore(Reason.WRONG_MARKET, "another market's descriptor")
        if m.market != self.market_id:
            return reject(Reason.WRONG_MARKET)
        if m.timestamp > now + self.market.skew_ms:
            return ignore(Reason.FROM_FUTURE, f"{m.timestamp - now} ms ahead")
        if isinstance(m, Bid | Ask):
            too_far = m.expires_at - m.timestamp > self.lifetime or (
                isinstance(m, Ask) and m.max_proof_time > self.lifetime
            )
            wrong_size = misdeclared(self.market, m) if isinstance(m, Ask) else None
            if m.expires_at <= now:
                # Too late to act on, so not forwarded; yet kept until its horizon if
                # valid: a node that was away while it lived must end up holding the
                # same messages as one that got it in time (its commits, proofs and
                # receipts would stay orphans for good otherwise).
                if too_far or wrong_size or self._forget_after(env) < now:
                    return ignore(Reason.EXPIRED)
            elif m.expires_at - m.timestamp > self.lifetime:
                return reject(Reason.EXPIRY_TOO_FAR, f"lifetime above {self.lifetime} ms")
            elif too_far:
                return reject(Reason.EXPIRY_TOO_FAR, "max_proof_time above the market lifetime")
            elif wrong_size:
                return reject(Reason.MISDECLARED_SIZE, wrong_size)
            return None
        if m.timestamp + 3 * self.lifetime < now:
            return ignore(Reason.STALE)
        return self._check_parents(env, m)

    def _check_parents(
        self, env: Envelope, m: Cancel | Commit | Proof | Receipt | InvalidInputs | Award
    ) -> Verdict | Hold | None:
        ask_env = self.asks.get(m.ask)
        if ask_env is None:
            return Hold(m.ask)
        ask = ask_env.message
        assert isinstance(ask, Ask)
        if isinstance(m, Cancel | Receipt | Award) and env.signer != ask_env.signer:
            return reject(Reason.NOT_ASK_OWNER)
        if isinstance(m, Award):
            return self._check_award(env, m)
        if isinstance(m, Commit):
            stored = self.book.by_id.get(m.bid)
            if stored is None:
                return Hold(m.bid)
            bid = stored.bid
            if stored.prover != env.signer:
                return reject(Reason.NOT_BID_OWNER)
            if (m.price, m.proof_time) != (bid.price, bid.proof_time):
                return reject(Reason.COMMIT_MISMATCH, "price or proof_time differ from the bid")
            if not within(m.price, m.proof_time, ask):
                return reject(Reason.COMMIT_OVER_CAPS, f"for an ask of size {ask.size}")
            if not takes(bid, ask):
                return reject(Reason.COMMIT_OVER_SIZE, f"size {ask.size} > {bid.max_size}")
            if not bid.timestamp <= m.timestamp < bid.expires_at:
                return reject(Reason.BID_NOT_LIVE, "commit outside the bid's lifetime")
        return None

    def _check_award(self, env: Envelope, m: Award) -> Verdict | Hold | None:
        """Every commit an award names must be stored (the fold needs its terms): it
        is held until each arrives. Naming a commit of another attempt is provable
        misbehaviour by the requester."""
        for cid in m.commits:
            commit = self._find_event(cid)
            if commit is None:
                return Hold(cid)
            c = commit.message
            if not isinstance(c, Commit) or (c.ask, c.round, c.attempt) != (
                m.ask,
                m.round,
                m.attempt,
            ):
                return reject(Reason.BAD_AWARD, "names a commit of another attempt")
        return None

    def _orphan(self, env: Envelope, parent: bytes) -> Verdict:
        waiting = self.pending.setdefault(parent, {})
        if env.id not in waiting:
            waiting[env.id] = env
            self._pending_order.append((parent, env.id))
            self._pending_bytes += len(env.raw)
        while self._pending_order and (
            len(self._pending_order) > MAX_PENDING_ORPHANS
            or self._pending_bytes > MAX_PENDING_ORPHAN_BYTES
        ):
            old_parent, old_id = self._pending_order.popleft()
            gone = self.pending.get(old_parent, {}).pop(old_id, None)
            if gone is not None:
                self._pending_bytes -= len(gone.raw)
                self.evicted_orphans.append(old_id)
            if not self.pending.get(old_parent, True):
                del self.pending[old_parent]
        return ignore(Reason.ORPHAN, "held until its parent arrives")

    def _record_invalid_proof(self, env: Envelope, m: Proof) -> bool:
        """Keep a proof the market's pure verifier rejects as evidence against its
        signer (statements.py, penalties.py); True if it was one. Its ask is stored
        (`_judge` held it as an orphan otherwise)."""
        ask = self.asks[m.ask].message
        assert isinstance(ask, Ask)
        if not provably_invalid(self.market, ask, m):
            return False
        self.evidence[env.id] = env
        self.invalid_proofs.add(env.id)
        self._digest_evidence ^= _id_int(env.id)
        self._update_penalties()
        return True

    def _equivocation(self, env: Envelope, rival: Envelope, now: int, effects: Effects) -> Verdict:
        """Both twins are stored and both count, as two messages; they are recorded as
        evidence against their signer. Nothing is ever removed for an equivocation:
        choosing one twin would let a signer who holds the other back (or signs it
        later, backdated) erase what depends on the first, a paid proof included.
        An ask twin is simply another ask; a bid twin is judged like any bid by the
        commits that cite it (the book's current bid is the first in signed order);
        commit twins are two candidates of one prover, of which at most one wins."""
        first, second = sorted((env, rival), key=signed_order)
        effects.append(fx.EquivocationSeen(signer=env.signer, kept=first.id, dropped=second.id))
        for twin in (env, rival):
            if twin.id not in self.evidence:  # (an invalid proof may be there already)
                self.evidence[twin.id] = twin
                self._digest_evidence ^= _id_int(twin.id)
        self._update_penalties()
        self._store(env, None)
        self._after_store(env, now, effects)
        # IGNORE, not REJECT: the signer misbehaved, not the peer that forwarded the
        # twin it saw first, which must not be blamed (or an equivocator could get
        # honest relays disconnected). Not forwarded either; peers converge on both
        # twins through sync, which serves every stored message.
        return ignore(Reason.EQUIVOCATION, f"kept beside {rival.id.hex()[:16]}")

    def _after_store(self, env: Envelope, now: int, effects: Effects) -> None:
        # Children first: an ask that arrives after its commits (sync, reordering)
        # is told and suggested in the state they give it, not as open and empty.
        children = self.pending.pop(env.id, {})
        self._pending_bytes -= sum(len(child.raw) for child in children.values())
        for child in sorted(children.values(), key=signed_order):
            self._admit(child, now, effects)
        if isinstance(env.message, Ask):
            self._tell_state(env.id, self.ask_state(env.id), effects)
            effects.extend(self._suggest(now, [env.id]))
