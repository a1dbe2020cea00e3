"""Core bugs and protocol gaps the simulator found, as the smallest reproductions
on one or two `MarketState`s, kept as regression tests:
- a finished (archived) ask was suggested again to the local prover at every
  later attempt (fixed in cfbc816: _suggest uses _run);
- a requester that timed out an on-time proof it had not seen could never accept
  it (fixed: receipts never equivocate, the first effective one wins);
- a prover reorganised away was never told when it won a later round of the
  same ask (fixed: Assigned is told per slot);
- an ask arriving after its commits was suggested to the local prover as if open
  and empty (fixed: _after_store admits the waiting children first);
- a prover reorganised out of a slot it had delivered for could never deliver for
  a later slot of the same ask (fixed: proofs and attestations never equivocate;
  the reproduction is tests/core/test_redelivery.py);
- a node that missed a bid until it expired could never admit it (IGNORE
  expired), so the commits signed while it was live stayed orphans there for
  good, and that node folded their asks differently from the nodes that had the
  bid: found by `p2p-market dst --nodes 50 --seconds 300 --scenario mixed-faults`
  (seed 4: a bid signed 142 ms before a 60 s partition began, expiring 142 ms
  before it healed), once asks past their retention horizon were checked (fixed:
  an order that arrives expired is still stored until its retention horizon,
  protocols/market-v1.md §6 step 16, §15).

And two behaviours that are deliberate, not bugs, tested as such:
- the twin that wins an equivocation is IGNOREd, so a gossip shell does not
  forward it (protocols/market-v1.md §7, §17): nodes converge on both twins by
  sync, which serves evidence too (the sim runs anti-entropy, scenarios.py);
- a log is replayed at the times its envelopes were first received (as
  node/runtime.py and the sim do), or as one batch (`apply_many`): replaying it
  one by one at the current time would announce each window's first commit and
  then "reorganise".
"""

from __future__ import annotations

from p2p_market.core import effects as fx
from p2p_market.core.envelope import message_id
from p2p_market.core.lifecycle import AskState, SlotState
from p2p_market.core.state import MarketState
from p2p_market.core.verdict import Reason
from p2p_market.markets.devnet import GENESIS_MS, Actor, default_market

WINDOW, STAGE, SKEW = 1_000, 200, 500
MARKET = default_market(commit_window_ms=WINDOW, stage_ms=STAGE, skew_ms=SKEW, difficulty=0)
T0 = GENESIS_MS + 10_000
SETTLED = T0 + WINDOW + SKEW + 1


def actors(*names: str) -> list[Actor]:
    return [Actor(n, MARKET) for n in names]


def test_no_commit_is_suggested_for_a_finished_ask() -> None:
    prover, req = actors("prover", "requester")
    st = MarketState(MARKET, local_prover=prover.public_key)
    bid = prover.bid(now=T0, price=10, proof_time=2_000, capacity=2)
    st.apply(bid, T0)
    ask = req.ask(now=T0, max_price=20, max_proof_time=5_000)
    st.apply(ask, T0)
    ask_id = message_id(ask)
    commit = prover.commit(now=T0 + 1, ask=ask_id, bid=message_id(bid), price=10, proof_time=2_000)
    st.apply(commit, T0 + 1)
    st.tick(SETTLED)
    st.apply(prover.proof(now=T0 + 2_000, ask=ask_id, proof=b"p" * 8), T0 + 2_000)
    receipt = req.receipt(now=T0 + 2_100, ask=ask_id, prover=prover.public_key, outcome="accepted")
    st.apply(receipt, T0 + 2_100)
    assert st.view(ask_id).state is AskState.PROVEN
    suggested = [
        (t, e)
        for t in range(T0 + 2_200, T0 + 10_000, 100)
        for e in st.tick(t)
        if isinstance(e, fx.CommitToAsk)
    ]
    assert suggested == []


def test_the_twin_that_wins_an_equivocation_is_ignored_and_converges_by_sync() -> None:
    (prover,) = actors("prover")
    later = prover.bid(now=T0 + 10, price=10, proof_time=1_000, seq=1)
    earlier = prover.bid(now=T0, price=11, proof_time=1_000, seq=1)
    relay, behind = MarketState(MARKET), MarketState(MARKET)
    assert relay.apply(later, T0 + 20)[0].accepted
    assert behind.apply(later, T0 + 20)[0].accepted  # forwarded by the relay
    verdict, effects = relay.apply(earlier, T0 + 30)
    # both twins stay stored (nothing is removed for an equivocation); the earlier
    # is the book's current offer; the newcomer is IGNOREd: the forwarder is not
    # blamed, and a gossip shell (which forwards ACCEPT only) does not pass it on
    assert (verdict.accepted, verdict.reason) == (False, Reason.EQUIVOCATION)
    assert relay.book.current[prover.public_key].id == message_id(earlier)
    assert {message_id(later), message_id(earlier)} <= set(relay.book.by_id)
    assert [type(e) for e in effects] == [fx.EquivocationSeen]
    assert {message_id(later), message_id(earlier)} == set(relay.evidence)  # served by sync
    assert behind.book.current[prover.public_key].id == message_id(later)  # not yet
    for env in relay.stored_envelopes():  # anti-entropy: what the relay holds
        if not behind.holds(env.id):
            behind.apply(env.raw, T0 + 40)
    assert behind.book.current[prover.public_key].id == message_id(earlier)
    assert sorted(behind.evidence) == sorted(relay.evidence)
    assert behind.state_hash() == relay.state_hash()


def test_an_on_time_proof_seen_after_a_timeout_can_still_be_accepted() -> None:
    """The requester timed out a winner whose on-time proof it had not seen (a
    partition). The proof, signed by the deadline, still counts and can be accepted;
    the round the timeout opened stays open all the same (what the requester did
    next must not hang on a proof that turns up later)."""
    prover, req = actors("prover", "requester")
    st = MarketState(MARKET)  # the requester's node
    bid = prover.bid(now=T0, price=10, proof_time=2_000)
    st.apply(bid, T0)
    ask = req.ask(now=T0, max_price=20, max_proof_time=5_000)
    st.apply(ask, T0)
    ask_id = message_id(ask)
    commit = prover.commit(now=T0 + 1, ask=ask_id, bid=message_id(bid), price=10, proof_time=2_000)
    st.apply(commit, T0 + 1)
    (deadline,) = [e.deadline for e in st.tick(SETTLED) if isinstance(e, fx.Assigned)]
    proof = prover.proof(now=deadline - 100, ask=ask_id, proof=b"p" * 8)  # on time, unseen
    timeout = req.receipt(
        now=deadline + 10, ask=ask_id, prover=prover.public_key, outcome="timed_out"
    )
    st.apply(timeout, deadline + 10)
    _, effects = st.apply(proof, deadline + 2_000)  # the partition heals
    assert any(isinstance(e, fx.ProofDelivered) for e in effects)
    run = st.settlement().runs[ask_id]
    assert message_id(timeout) in run.rounds  # the round it opened stays
    accept = req.receipt(
        now=deadline + 2_100, ask=ask_id, prover=prover.public_key, outcome="accepted"
    )
    st.apply(accept, deadline + 2_100)
    assert st.view(ask_id).state is AskState.PROVEN
    assert st.view(ask_id).slot_states == (SlotState.ACCEPTED,)


def test_replaying_a_log_at_its_times_or_as_a_batch_reports_no_reorgs() -> None:
    cheap, dear, req = actors("cheap", "dear", "requester")
    live = MarketState(MARKET)
    log = [
        cheap.bid(now=T0, price=10, proof_time=1_000),
        dear.bid(now=T0, price=50, proof_time=1_000),
        req.ask(now=T0, max_price=100, max_proof_time=5_000),
    ]
    ask_id = message_id(log[2])
    bids = [message_id(log[0]), message_id(log[1])]
    # both commits arrive inside the window, the worse one first
    log.append(dear.commit(now=T0 + 10, ask=ask_id, bid=bids[1], price=50, proof_time=1_000))
    log.append(cheap.commit(now=T0 + 20, ask=ask_id, bid=bids[0], price=10, proof_time=1_000))
    received = [T0 + 30 + i for i in range(len(log))]
    for raw, at in zip(log, received, strict=True):
        assert live.apply(raw, at)[0].accepted
    live.tick(SETTLED)
    assert live.reorgs == 0 and live.view(ask_id).winners == (cheap.public_key,)
    timed = MarketState(MARKET)  # node/runtime.py's replay: each at its own time
    for raw, at in zip(log, received, strict=True):
        timed.apply(raw, at)
    timed.tick(SETTLED + 5_000)
    batch = MarketState(MARKET)
    batch.apply_many(log, SETTLED + 5_000)
    batch.tick(SETTLED + 5_000)
    for restarted in (timed, batch):
        assert restarted.view(ask_id).winners == live.view(ask_id).winners
        assert restarted.reorgs == 0


def test_a_prover_reorganised_away_is_told_when_it_wins_a_later_round() -> None:
    cheap, dear, req = actors("cheap", "dear", "requester")
    st = MarketState(MARKET)
    bids = [
        cheap.bid(now=T0, price=10, proof_time=1_000),
        dear.bid(now=T0, price=50, proof_time=1_000),
    ]
    for raw in bids:
        st.apply(raw, T0)
    ask = req.ask(now=T0, max_price=100, max_proof_time=5_000)
    st.apply(ask, T0)
    ask_id = message_id(ask)
    cheap_bid, dear_bid = message_id(bids[0]), message_id(bids[1])
    st.apply(
        dear.commit(now=T0 + 10, ask=ask_id, bid=dear_bid, price=50, proof_time=1_000), T0 + 10
    )
    told = st.tick(SETTLED)
    assert [e.prover for e in told if isinstance(e, fx.Assigned)] == [dear.public_key]
    late = cheap.commit(now=T0 + 20, ask=ask_id, bid=cheap_bid, price=10, proof_time=1_000)
    _, effects = st.apply(late, SETTLED + 10)  # signed in the window, arrived late: a reorg
    assert any(isinstance(e, fx.Reorg) for e in effects)
    (deadline,) = [e.deadline for e in effects if isinstance(e, fx.Assigned)]
    timeout = req.receipt(
        now=deadline + 5, ask=ask_id, prover=cheap.public_key, outcome="timed_out"
    )
    st.apply(timeout, deadline + 5)  # the cheap winner never proves: a new round opens
    round_id = message_id(timeout)
    again = dear.commit(
        now=deadline + 10, ask=ask_id, bid=dear_bid, price=50, proof_time=1_000, round=round_id
    )
    st.apply(again, deadline + 10)
    effects = st.tick(deadline + 5 + WINDOW + SKEW + 1)
    assert st.view(ask_id).winners[-1] == dear.public_key  # it did win the new round
    assert any(isinstance(e, fx.Assigned) and e.prover == dear.public_key for e in effects)


def test_an_ask_arriving_after_its_commits_is_not_suggested_again() -> None:
    me, winner, req = actors("me", "winner", "requester")
    st = MarketState(MARKET, local_prover=me.public_key)
    mine = me.bid(now=T0, price=10, proof_time=1_000)
    theirs = winner.bid(now=T0, price=10, proof_time=1_000)
    st.apply(mine, T0)
    st.apply(theirs, T0)
    ask = req.ask(now=T0, max_price=100, max_proof_time=5_000)
    ask_id = message_id(ask)
    commit = winner.commit(
        now=T0 + 10, ask=ask_id, bid=message_id(theirs), price=10, proof_time=1_000
    )
    now = SETTLED + 300
    assert st.apply(commit, now)[0].reason.value == "orphan"  # before its ask
    _, effects = st.apply(ask, now)
    assert st.view(ask_id).state is AskState.ASSIGNED
    assert [e for e in effects if isinstance(e, fx.CommitToAsk)] == []


def test_a_node_that_missed_a_bid_until_it_expired_agrees_on_the_commits_citing_it() -> None:
    prover, req = actors("prover", "requester")
    bid = prover.bid(now=T0, price=10, proof_time=2_000, ttl=5_000)
    ask = req.ask(now=T0 + 100, max_price=20, max_proof_time=5_000, ttl=20_000)
    ask_id = message_id(ask)
    commit = prover.commit(
        now=T0 + 200, ask=ask_id, bid=message_id(bid), price=10, proof_time=2_000
    )
    had_it, missed_it = MarketState(MARKET), MarketState(MARKET)
    for raw in (bid, ask, commit):
        had_it.apply(raw, T0 + 300)
    for raw in (ask, commit):  # the bid was on the other side of a partition
        missed_it.apply(raw, T0 + 300)
    late = T0 + 6_000  # healed: anti-entropy brings the bid, expired by now
    missed_it.apply(bid, late)
    for st in (had_it, missed_it):
        st.tick(late)
    assert had_it.view(ask_id).winners == (prover.public_key,)
    assert missed_it.view(ask_id).winners == had_it.view(ask_id).winners
