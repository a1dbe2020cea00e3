"""Finality: once the requester has awarded an attempt (and paid), nothing anyone
else publishes later changes who won, who was paid, or the state of a proven ask.

Each test first shows the attack working where finality does not hold (no award),
so that it guards something real, then shows it failing against an award. The
arrival-order node is always compared with a node fed the same set in signed
order: finality must not cost agreement."""

from __future__ import annotations

from p2p_market.core.envelope import message_id, parse
from p2p_market.core.lifecycle import AskState, SlotState
from p2p_market.core.ranking import rank_key
from p2p_market.core.state import MarketState
from p2p_market.core.verdict import Reason, Status
from p2p_market.markets.devnet import Actor

from .world import SKEW, T0, WINDOW, make_market

M = make_market()  # window 1 000 ms, skew 500 ms
REQ = Actor("final-requester", M)
HONEST = Actor("final-honest", M)  # price 6: wins when the cheaper one hides
SNEAK = Actor("final-sneak", M)  # price 5: holds its commit back
END = T0 + 100 + WINDOW  # the window of attempt 0 of an ask signed at T0 + 100
SETTLED = END + SKEW


def signed_order(state: MarketState, delivered: list[tuple[bytes, int]], now: int) -> MarketState:
    other = MarketState(state.market)
    for raw, at in sorted(delivered, key=lambda d: (parse(d[0]).message.timestamp, parse(d[0]).id)):  # type: ignore[union-attr]
        other.apply(raw, at)
    other.tick(now)
    return other


class Market:
    """One node and what it was given, in arrival order."""

    def __init__(self) -> None:
        self.node = MarketState(M)
        self.delivered: list[tuple[bytes, int]] = []
        self.now = T0

    def send(self, raw: bytes, at: int) -> tuple[Status, Reason]:
        self.now = max(self.now, at)
        verdict, _ = self.node.apply(raw, self.now)
        self.delivered.append((raw, self.now))
        return verdict.status, verdict.reason

    def tick(self, at: int) -> None:
        self.now = max(self.now, at)
        self.node.tick(self.now)

    def agrees(self) -> bool:
        other = signed_order(self.node, self.delivered, self.now)
        return other.state_hash() == self.node.state_hash()


def both_bid_and_an_ask(m: Market) -> tuple[bytes, bytes, bytes]:
    """HONEST (price 6) and SNEAK (price 5) bid; REQ asks at T0 + 100. Returns
    (HONEST's bid, SNEAK's bid, the ask id), all delivered to `m`."""
    bid_h = HONEST.bid(now=T0, price=6, proof_time=1_000)
    bid_s = SNEAK.bid(now=T0, price=5, proof_time=1_000)
    ask = REQ.ask(now=T0 + 100, max_price=10, max_proof_time=5_000, ttl=60_000)
    for raw in (bid_h, bid_s, ask):
        m.send(raw, T0 + 100)
    return bid_h, bid_s, message_id(ask)


def paid_ask(award: bool) -> tuple[Market, bytes, bytes, bytes]:
    """HONEST wins an ask that SNEAK (cheaper) also committed to, but SNEAK's commit
    is held back; HONEST proves, the requester (optionally) awards and accepts.
    Returns (market, ask id, the held-back commit, SNEAK's bid)."""
    m = Market()
    bid_h, bid_s, ask_id = both_bid_and_an_ask(m)
    c_h = HONEST.commit(now=T0 + 300, ask=ask_id, bid=message_id(bid_h), price=6, proof_time=1_000)
    held = SNEAK.commit(now=T0 + 900, ask=ask_id, bid=message_id(bid_s), price=5, proof_time=1_000)
    m.send(c_h, T0 + 310)
    m.tick(SETTLED)
    if award:
        assert (
            m.send(REQ.award(now=SETTLED, ask=ask_id, commits=[message_id(c_h)]), SETTLED)[0]
            is Status.ACCEPT
        )
    m.send(HONEST.proof(now=SETTLED + 500, ask=ask_id, proof=b"done" * 2), SETTLED + 500)
    receipt = REQ.receipt(
        now=SETTLED + 600, ask=ask_id, prover=HONEST.public_key, outcome="accepted"
    )
    assert m.send(receipt, SETTLED + 600)[0] is Status.ACCEPT
    view = m.node.view(ask_id)
    assert view.state is AskState.PROVEN and view.paid == 6
    return m, ask_id, held, message_id(bid_s)


def test_without_an_award_a_held_back_commit_rewrites_a_paid_ask() -> None:
    """The attack the award exists for: the fold alone is tentative."""
    m, ask_id, held, _ = paid_ask(award=False)
    m.send(held, SETTLED + 60_000)
    assert m.node.view(ask_id).winners == (SNEAK.public_key,)
    assert m.node.view(ask_id).paid == 0


def test_a_held_back_commit_after_the_award_is_ignored_and_changes_nothing() -> None:
    m, ask_id, held, _ = paid_ask(award=True)
    assert m.send(held, SETTLED + 60_000) == (Status.IGNORE, Reason.AFTER_AWARD)
    assert m.node.settlement().notes[message_id(held)] == "after the award"
    m.tick(SETTLED + 3_600_000)
    view = m.node.view(ask_id)
    assert view.winners == (HONEST.public_key,)
    assert view.state is AskState.PROVEN and view.paid == 6
    assert m.agrees()


def test_a_held_back_commit_to_an_earlier_attempt_is_closed_by_a_later_award() -> None:
    """Nobody committed in attempt 0 (as far as the requester saw); HONEST won
    attempt 1 and was awarded. SNEAK's commit to attempt 0, signed in time and
    released late, would fill the round first: the award of attempt 1 closes it."""
    for award in (False, True):
        m = Market()
        bid_h, bid_s, ask_id = both_bid_and_an_ask(m)
        c_h = HONEST.commit(
            now=END + 100, ask=ask_id, bid=message_id(bid_h), price=6, proof_time=1_000, attempt=1
        )
        m.send(c_h, END + 110)
        settled = END + WINDOW + SKEW
        m.tick(settled)
        if award:
            raw = REQ.award(now=settled, ask=ask_id, commits=[message_id(c_h)], attempt=1)
            assert m.send(raw, settled)[0] is Status.ACCEPT
        held = SNEAK.commit(
            now=END - 10, ask=ask_id, bid=message_id(bid_s), price=5, proof_time=1_000
        )
        verdict = m.send(held, END + 30_000)
        winners = m.node.view(ask_id).winners
        if award:
            assert verdict == (Status.IGNORE, Reason.AFTER_AWARD)
            assert winners == (HONEST.public_key,)
        else:
            assert winners == (SNEAK.public_key,)
        assert m.agrees()


def test_an_ask_twin_signed_after_payment_removes_nothing() -> None:
    """The requester signs a second ask with the same nonce, 1 ms earlier, allowing
    only a random key, after it paid: before, the twin replaced the paid ask and
    took its commit, proof and receipt along. Now both are asks; the paid one stays
    proven and paid."""
    m, ask_id, _, _ = paid_ask(award=True)
    original = m.node.asks[ask_id].message
    twin = REQ.ask(
        now=original.timestamp - 1,  # type: ignore[union-attr]
        max_price=10,
        max_proof_time=5_000,
        ttl=60_000,
        nonce=original.nonce,  # type: ignore[union-attr]
        allow=(Actor("nobody", M).public_key,),
    )
    assert m.send(twin, SETTLED + 35_000) == (Status.IGNORE, Reason.EQUIVOCATION)
    m.tick(SETTLED + 3_600_000)
    view = m.node.view(ask_id)
    assert view.state is AskState.PROVEN and view.paid == 6
    assert message_id(twin) in m.node.asks  # kept, as evidence and as an ask of its own
    assert {ask_id, message_id(twin)} <= set(m.node.evidence)
    assert m.agrees()


def test_a_bid_twin_signed_after_the_commits_removes_nothing() -> None:
    """The winner signs a second bid with the same seq, earlier, at another price,
    after it was paid: before, the twin replaced its bid and took its commits (and
    so its win and its pay) along."""
    m = Market()
    bid_h = HONEST.bid(now=T0 + 50, price=6, proof_time=1_000, seq=7)
    ask = REQ.ask(now=T0 + 100, max_price=10, max_proof_time=5_000, ttl=60_000)
    ask_id = message_id(ask)
    for raw in (bid_h, ask):
        m.send(raw, T0 + 100)
    c_h = HONEST.commit(now=T0 + 300, ask=ask_id, bid=message_id(bid_h), price=6, proof_time=1_000)
    m.send(c_h, T0 + 310)
    m.tick(SETTLED)
    m.send(REQ.award(now=SETTLED, ask=ask_id, commits=[message_id(c_h)]), SETTLED)
    m.send(HONEST.proof(now=SETTLED + 500, ask=ask_id, proof=b"done" * 2), SETTLED + 500)
    receipt = REQ.receipt(
        now=SETTLED + 600, ask=ask_id, prover=HONEST.public_key, outcome="accepted"
    )
    m.send(receipt, SETTLED + 600)
    assert m.node.view(ask_id).paid == 6
    twin = HONEST.bid(now=T0 + 10, price=9, proof_time=1_000, seq=7)
    assert m.send(twin, SETTLED + 60_000) == (Status.IGNORE, Reason.EQUIVOCATION)
    view = m.node.view(ask_id)
    assert view.state is AskState.PROVEN and view.paid == 6
    assert message_id(c_h) in m.node.events[ask_id]
    # the book's current offer is the first twin in signed order, on every node
    assert m.node.book.current[HONEST.public_key].id == message_id(twin)
    assert m.agrees()


def test_the_award_decides_even_against_the_ranking_and_capacity() -> None:
    """The requester's word is final: it may award a dearer commit, and one that
    this node thinks over capacity; the ranking is only the tentative view."""
    m = Market()
    bid_h = HONEST.bid(now=T0, price=6, proof_time=1_000, capacity=1)
    bid_s = SNEAK.bid(now=T0, price=5, proof_time=1_000)
    other = REQ.ask(now=T0 + 100, max_price=10, max_proof_time=5_000, ttl=60_000, nonce=1)
    ask = REQ.ask(now=T0 + 100, max_price=10, max_proof_time=5_000, ttl=60_000, nonce=2)
    ask_id = message_id(ask)
    for raw in (bid_h, bid_s, other, ask):
        m.send(raw, T0 + 100)
    busy = HONEST.commit(
        now=T0 + 200, ask=message_id(other), bid=message_id(bid_h), price=6, proof_time=1_000
    )
    c_h = HONEST.commit(now=T0 + 300, ask=ask_id, bid=message_id(bid_h), price=6, proof_time=1_000)
    c_s = SNEAK.commit(now=T0 + 300, ask=ask_id, bid=message_id(bid_s), price=5, proof_time=1_000)
    for raw in (busy, c_h, c_s):
        m.send(raw, T0 + 400)
    m.tick(SETTLED)
    assert m.node.settlement().notes[message_id(c_h)] == "over capacity"
    assert m.node.view(ask_id).winners == (SNEAK.public_key,)  # tentative
    m.send(REQ.award(now=SETTLED, ask=ask_id, commits=[message_id(c_h)]), SETTLED)
    assert m.node.view(ask_id).winners == (HONEST.public_key,)
    assert message_id(c_h) not in m.node.settlement().notes
    assert m.node.check_invariants() == []
    assert m.agrees()


def test_an_award_waits_for_the_commits_it_names() -> None:
    m = Market()
    bid_h = HONEST.bid(now=T0, price=6, proof_time=1_000)
    ask = REQ.ask(now=T0 + 100, max_price=10, max_proof_time=5_000, ttl=60_000)
    ask_id = message_id(ask)
    for raw in (bid_h, ask):
        m.send(raw, T0 + 100)
    c_h = HONEST.commit(now=T0 + 300, ask=ask_id, bid=message_id(bid_h), price=6, proof_time=1_000)
    award = REQ.award(now=SETTLED, ask=ask_id, commits=[message_id(c_h)])
    assert m.send(award, SETTLED) == (Status.IGNORE, Reason.ORPHAN)
    assert m.send(c_h, SETTLED + 10)[0] is Status.ACCEPT
    assert message_id(award) in m.node.events[ask_id]
    assert m.node.view(ask_id).winners == (HONEST.public_key,)
    assert m.agrees()


def test_bad_awards_are_rejected() -> None:
    m = Market()
    bid_h = HONEST.bid(now=T0, price=6, proof_time=1_000)
    ask = REQ.ask(now=T0 + 100, max_price=10, max_proof_time=5_000, ttl=60_000)
    ask_id = message_id(ask)
    c_h = HONEST.commit(now=T0 + 300, ask=ask_id, bid=message_id(bid_h), price=6, proof_time=1_000)
    for raw in (bid_h, ask, c_h):
        m.send(raw, T0 + 400)
    stranger = SNEAK.award(now=SETTLED, ask=ask_id, commits=[message_id(c_h)])
    assert m.send(stranger, SETTLED) == (Status.REJECT, Reason.NOT_ASK_OWNER)
    wrong = REQ.award(now=SETTLED + WINDOW, ask=ask_id, commits=[message_id(c_h)], attempt=1)
    assert m.send(wrong, SETTLED + WINDOW) == (Status.REJECT, Reason.BAD_AWARD)


def test_a_backdated_cancel_cannot_undo_an_award() -> None:
    m, ask_id, _, _ = paid_ask(award=True)
    cancel = REQ.cancel(now=T0 + 200, ask=ask_id)  # "before" anything was assigned
    assert m.send(cancel, SETTLED + 60_000) == (Status.IGNORE, Reason.CANCEL_AFTER_ASSIGNMENT)
    assert m.node.view(ask_id).paid == 6
    assert m.agrees()


def test_a_backdated_proof_cannot_undo_the_round_a_timeout_opened() -> None:
    """The winner was timed out, a new round opened and was awarded to another
    prover; the first winner then publishes a proof signed before its deadline.
    Before, that proof voided the timeout (a delivered slot could not time out),
    and with it the new round and its awarded winner. Now the proof counts for its
    own slot (the requester may still accept it) and the new round stands."""
    m = Market()
    bid_h, bid_s, ask_id = both_bid_and_an_ask(m)
    c_s = SNEAK.commit(now=T0 + 300, ask=ask_id, bid=message_id(bid_s), price=5, proof_time=1_000)
    m.send(c_s, T0 + 310)
    m.tick(SETTLED)
    m.send(REQ.award(now=SETTLED, ask=ask_id, commits=[message_id(c_s)]), SETTLED)
    deadline = END + SKEW + 1_000
    timeout = REQ.receipt(now=deadline, ask=ask_id, prover=SNEAK.public_key, outcome="timed_out")
    m.send(timeout, deadline)
    round_id = message_id(timeout)
    c_h = HONEST.commit(
        now=deadline + 10, ask=ask_id, bid=message_id(bid_h), price=6, proof_time=1_000,
        round=round_id,
    )  # fmt: skip
    m.send(c_h, deadline + 20)
    m.tick(deadline + WINDOW + SKEW)
    m.send(
        REQ.award(
            now=deadline + WINDOW + SKEW, ask=ask_id, commits=[message_id(c_h)], round=round_id
        ),
        deadline + WINDOW + SKEW,
    )
    assert m.node.view(ask_id).winners == (SNEAK.public_key, HONEST.public_key)
    late_proof = SNEAK.proof(now=deadline - 1, ask=ask_id, proof=b"too late")
    m.send(late_proof, deadline + 60_000)
    view = m.node.view(ask_id)
    assert view.winners == (SNEAK.public_key, HONEST.public_key)
    assert view.slot_states == (SlotState.DELIVERED, SlotState.ASSIGNED)
    assert round_id in m.node.settlement().runs[ask_id].rounds
    assert m.agrees()


def test_a_backdated_attestation_cannot_void_a_payment() -> None:
    m, ask_id, _, _ = paid_ask(award=True)
    attest = HONEST.invalid_inputs(now=SETTLED + 100, ask=ask_id, reason="changed my mind")
    m.send(attest, SETTLED + 60_000)
    view = m.node.view(ask_id)
    assert view.state is AskState.PROVEN and view.paid == 6
    assert m.agrees()


def test_ties_are_still_broken_by_the_hash_when_nobody_awards() -> None:
    """Sanity of the tentative view: equal offers, the tie-break picks, as before."""
    m = Market()
    ask = REQ.ask(now=T0 + 100, max_price=10, max_proof_time=5_000, ttl=60_000)
    ask_id = message_id(ask)
    bids = [
        HONEST.bid(now=T0, price=5, proof_time=1_000),
        SNEAK.bid(now=T0, price=5, proof_time=1_000),
    ]
    for raw in (*bids, ask):
        m.send(raw, T0 + 100)
    for actor, bid in zip((HONEST, SNEAK), bids, strict=True):
        c = actor.commit(now=T0 + 300, ask=ask_id, bid=message_id(bid), price=5, proof_time=1_000)
        m.send(c, T0 + 310)
    m.tick(SETTLED)
    best = min((HONEST, SNEAK), key=lambda a: rank_key(True, 5, 1_000, ask_id, a.public_key))
    assert m.node.view(ask_id).winners == (best.public_key,)
