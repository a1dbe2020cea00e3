"""Cases found by outsiders, each reproduced exactly: the kept fold, the clock of
`state_hash`, and what a prover is told after reorgs."""

from __future__ import annotations

from p2p_market.core import effects as fx
from p2p_market.core.envelope import message_id, parse
from p2p_market.core.lifecycle import AskState
from p2p_market.core.ranking import rank_key
from p2p_market.core.state import MarketState
from p2p_market.core.verdict import Reason, Status
from p2p_market.markets.devnet import GENESIS_MS, Actor, default_market

from .world import T0, make_market

T = GENESIS_MS + 10_000


def test_a_third_partys_no_effect_message_does_not_split_nodes() -> None:
    """Six envelopes: two identical offers (the hash tie-break picks the later
    committer), a bystander's InvalidInputs that changes nothing, and a commit that
    arrives after its window ended. Fed in arrival order the node kept the earlier
    committer for good; by the specification (signed order) the later one wins."""
    m = default_market(commit_window_ms=100, stage_ms=50, skew_ms=2_000, difficulty=0)
    req, bystander = Actor("req", m), Actor("k3", m)
    ask = req.ask(now=T + 149, max_price=10, max_proof_time=100, replicas=1, nonce=1)
    ask_id = message_id(ask)
    first, second = next(
        (a, b)
        for i in range(100)
        for a, b in [(Actor(f"tie-{i}-a", m), Actor(f"tie-{i}-b", m))]
        if rank_key(True, 5, 10, ask_id, b.public_key) < rank_key(True, 5, 10, ask_id, a.public_key)
    )
    bid0 = first.bid(now=T, price=5, proof_time=10, seq=1)
    bid1 = second.bid(now=T, price=5, proof_time=10, seq=1)
    arrivals = [
        (T, bid0),
        (T, bid1),
        (T + 149, ask),
        (T + 260, bystander.invalid_inputs(now=T + 260, ask=ask_id, reason="spite")),
        (
            T + 351,
            first.commit(
                now=T + 251, ask=ask_id, bid=message_id(bid0), price=5, proof_time=10, attempt=1
            ),
        ),
        (
            T + 353,  # its window [T+249, T+349) has ended
            second.commit(
                now=T + 343, ask=ask_id, bid=message_id(bid1), price=5, proof_time=10, attempt=1
            ),
        ),
    ]
    by_arrival, by_signature = MarketState(m), MarketState(m)
    for at, raw in arrivals:
        assert by_arrival.apply(raw, at)[0].accepted

    def signed(arrival: tuple[int, bytes]) -> tuple[int, bytes]:
        env = parse(arrival[1])
        return (env.message.timestamp, env.id)  # type: ignore[union-attr]

    for at, raw in sorted(arrivals, key=signed):
        by_signature.apply(raw, at)
    for now in (T + 353, T + 3_000, T + 3_600_000):
        by_arrival.tick(now)
        by_signature.tick(now)
        assert by_arrival.view(ask_id).winners == (second.public_key,)
        assert by_arrival.state_hash() == by_signature.state_hash()


def test_a_duplicate_moves_the_clock_of_the_state_hash() -> None:
    """A node whose last call was an ignored duplicate at `now` reports the state of
    `now`, as a node that called `tick(now)` does."""
    m = make_market()
    req, prover = Actor("req", m), Actor("p", m)
    bid = prover.bid(now=T0, price=5, proof_time=1_000)
    ask = req.ask(now=T0, max_price=10, max_proof_time=5_000, ttl=3_000)
    one, two = MarketState(m), MarketState(m)
    for node in (one, two):
        node.apply(bid, T0)
        node.apply(ask, T0)
    later = T0 + 10_000  # the ask has expired by then
    assert not one.apply(ask, later)[0].accepted  # a duplicate
    two.tick(later)
    assert one.state_hash() == two.state_hash()


def test_a_reorg_back_to_an_earlier_winner_tells_it_again() -> None:
    """A wins and is told; a late, cheaper commit of B takes the slot (a reorg); then
    a still later message of B, signed earlier, puts B over capacity, and the slot
    goes back to A: A must be told `Assigned` again, with the deadline that counts."""
    m = make_market()  # window 1 000 ms, skew 500 ms
    req, a, b = Actor("req", m), Actor("A", m), Actor("B", m)
    bid_a = a.bid(now=T0, price=6, proof_time=1_000, capacity=1)
    bid_b = b.bid(now=T0, price=5, proof_time=1_000, capacity=1)
    ask_y = req.ask(now=T0 + 100, max_price=10, max_proof_time=5_000, nonce=1)
    ask_x = req.ask(now=T0 + 100, max_price=10, max_proof_time=5_000, nonce=2)
    y, x = message_id(ask_y), message_id(ask_x)
    a_y = a.commit(now=T0 + 200, ask=y, bid=message_id(bid_a), price=6, proof_time=1_000)
    b_y = b.commit(now=T0 + 300, ask=y, bid=message_id(bid_b), price=5, proof_time=1_000)
    b_x = b.commit(now=T0 + 250, ask=x, bid=message_id(bid_b), price=5, proof_time=1_000)
    node = MarketState(m)
    effects: list[fx.Effect] = []
    for raw in (bid_a, bid_b, ask_y, ask_x, a_y):
        effects += node.apply(raw, T0 + 400)[1]
    effects += node.tick(T0 + 1_700)  # window end 1 100 + skew 500: settled, A told
    told_a = [e for e in effects if isinstance(e, fx.Assigned) and e.prover == a.public_key]
    assert len(told_a) == 1
    effects = node.apply(b_y, T0 + 1_800)[1]
    assert any(isinstance(e, fx.Reorg) and e.after == (b.public_key,) for e in effects)
    effects = node.apply(b_x, T0 + 1_900)[1]  # B wins X and is over capacity on Y
    assert node.view(y).winners[-1] == a.public_key
    assert any(isinstance(e, fx.Reorg) and e.after == (a.public_key,) for e in effects)
    again = [e for e in effects if isinstance(e, fx.Assigned) and e.prover == a.public_key]
    assert len(again) == 1 and again[0].ask == y


def test_a_round_opened_late_keeps_the_commit_folded_before_it() -> None:
    """A commit to a round a timeout receipt opens was folded (inside a replay of its
    ask set off by a bystander's message in the past) before the receipt arrived, as
    "unknown round". The receipt then opened the round, but the node never went back:
    the new winner was never assigned and the ask ended EXPIRED there, ASSIGNED on a
    node that took the same messages in signed order."""
    m = make_market()  # window 1 000 ms, skew 500 ms
    req, k0, k1, k3 = (Actor(n, m) for n in ("req", "K0", "K1", "K3"))
    b0 = k0.bid(now=T0, price=5, proof_time=1_000)
    b1 = k1.bid(now=T0, price=6, proof_time=1_000)
    ask = req.ask(now=T0 + 1, max_price=10, max_proof_time=5_000, ttl=30_000, nonce=1)
    ask_id = message_id(ask)
    c0 = k0.commit(now=T0 + 2, ask=ask_id, bid=message_id(b0), price=5, proof_time=1_000)
    deadline = T0 + 1 + 1_000 + 500 + 1_000
    timeout = req.receipt(now=deadline + 100, ask=ask_id, prover=k0.public_key, outcome="timed_out")
    c1 = k1.commit(
        now=deadline + 110, ask=ask_id, bid=message_id(b1), price=6, proof_time=1_000,
        round=message_id(timeout),
    )  # fmt: skip
    bystander = k3.invalid_inputs(now=T0 + 500, ask=ask_id, reason="spite")
    node, reference = MarketState(m), MarketState(m)
    for raw in (b0, b1, ask, c0):
        node.apply(raw, T0 + 3)
    node.tick(deadline + 50)
    node.apply_many([bystander, c1], deadline + 150)  # e.g. one sync batch
    node.apply(timeout, deadline + 160)
    for raw in (b0, b1, ask, c0, bystander, timeout, c1):
        reference.apply(raw, deadline + 160)
    for now in (deadline + 3_000, deadline + 40_000):
        node.tick(now)
        reference.tick(now)
        assert node.view(ask_id).state is AskState.ASSIGNED
        assert node.view(ask_id).winners == (k0.public_key, k1.public_key)
        assert node.state_hash() == reference.state_hash()


def test_an_ask_that_arrives_expired_is_kept_so_nodes_agree() -> None:
    """A node away for an ask's whole life gets it (by sync) after it expired. It was
    ignored for good, so the ask's commit, proof and receipt stayed orphans there and
    the node never agreed again with those that took the ask in time. Now it is
    kept (IGNOREd, not forwarded) until its retention horizon."""
    m = make_market()
    prover, req = Actor("away-prover", m), Actor("away-requester", m)
    bid = prover.bid(now=T0, price=5, proof_time=1_000)
    ask = req.ask(now=T0 + 10, max_price=9, max_proof_time=2_000, ttl=20_000)
    ask_id = message_id(ask)
    commit = prover.commit(now=T0 + 20, ask=ask_id, bid=message_id(bid), price=5, proof_time=1_000)
    end = T0 + 10 + m.commit_window_ms + m.skew_ms
    proof = prover.proof(now=end + 500, ask=ask_id, proof=b"p" * 8)
    receipt = req.receipt(now=end + 600, ask=ask_id, prover=prover.public_key, outcome="accepted")
    present, away = MarketState(m), MarketState(m)
    for raw in (bid, ask, commit, proof, receipt):
        present.apply(raw, end + 1_000)
    back = T0 + 10 + 20_000  # the ask has expired
    verdicts = [away.apply(raw, back)[0] for raw in (bid, ask, commit, proof, receipt)]
    assert (verdicts[1].status, verdicts[1].reason) == (Status.IGNORE, Reason.EXPIRED)
    assert all(v.accepted for v in verdicts[2:])
    present.tick(back)
    assert away.view(ask_id).state is present.view(ask_id).state is AskState.PROVEN
    assert away.state_hash() == present.state_hash()
    # past its retention horizon it is not kept (nothing could refer to it any more)
    late = MarketState(m)
    gone = late.apply(ask, T0 + 10 + 20_000 + 2 * m.max_lifetime_ms + 1)[0]
    assert gone.reason is Reason.EXPIRED and not late.holds(ask_id)
