"""Regressions on MarketState's bookkeeping: pruning, orphans, time."""

from __future__ import annotations

from p2p_market.core.envelope import message_id
from p2p_market.core.limits import MAX_PENDING_ORPHANS
from p2p_market.core.state import MarketState
from p2p_market.core.verdict import Reason

from .world import SKEW, T0, WINDOW, World


def test_pruning_expired_bids_does_not_change_who_won() -> None:
    """A node that ticked (and pruned) must agree with one that did not."""
    histories = []
    for ticking in (False, True):
        w = World()
        bid = w.bid("p", price=5, proof_time=1_000, ttl=1_500)
        ask = w.ask("r", max_price=10, max_proof_time=5_000)
        w.commit("p", ask, bid, T0 + 10)
        later = T0 + WINDOW + SKEW + 5_000  # the bid has expired by now
        if ticking:
            w.tick(later)
        w.send(w.actor("p").proof(now=T0 + 3_000, ask=ask, proof=b"x" * 8), later)
        w.tick(later + 1)
        histories.append((w.state.state_hash(), w.winners(ask), w.state.reorgs))
    assert histories[0] == histories[1]
    assert histories[0][1] == ["p"] and histories[0][2] == 0


def test_a_resent_orphan_does_not_evict_other_orphans() -> None:
    w = World()
    bid = w.bid("p", price=5, proof_time=1_000)
    unknown_ask = b"\x01" * 32
    first = w.actor("p").commit(now=T0, ask=unknown_ask, bid=bid, price=5, proof_time=1_000)
    assert w.send(first, T0).reason is Reason.ORPHAN
    other = w.actor("q").cancel(now=T0, ask=b"\x02" * 32)
    assert w.send(other, T0).reason is Reason.ORPHAN
    for _ in range(MAX_PENDING_ORPHANS + 5):
        w.state.apply(first, T0)
    held = {mid for waiting in w.state.pending.values() for mid in waiting}
    assert message_id(other) in held


def test_orphans_apply_when_their_parent_arrives() -> None:
    w = World()
    bid = w.bid("p", price=5, proof_time=1_000)
    ask_raw = w.actor("r").ask(now=T0, max_price=10, max_proof_time=5_000)
    ask = message_id(ask_raw)
    commit = w.actor("p").commit(now=T0 + 5, ask=ask, bid=bid, price=5, proof_time=1_000)
    assert w.send(commit, T0 + 5).reason is Reason.ORPHAN
    assert w.send(ask_raw, T0 + 6).accepted
    w.tick(T0 + WINDOW + SKEW + 1)
    assert w.winners(ask) == ["p"]


def test_pruning_forgets_old_messages_but_replays_stay_harmless() -> None:
    w = World()
    ask_raw = w.actor("r").ask(now=T0, max_price=10, max_proof_time=5_000, ttl=1_000)
    assert w.send(ask_raw, T0).accepted
    far = T0 + 1_000 + 3 * w.market.max_lifetime_ms + 1
    w.tick(far)
    assert w.state.asks == {} and w.state.seen == {}
    verdict, _ = w.state.apply(ask_raw, far)
    assert verdict.reason is Reason.EXPIRED


def test_fresh_states_agree_on_an_empty_market() -> None:
    w = World()
    assert MarketState(w.market).state_hash() == MarketState(w.market).state_hash()


def test_apply_many_matches_one_by_one() -> None:
    w = World()
    p, r = w.actor("p"), w.actor("r")
    raws = [p.bid(now=T0, price=5, proof_time=1_000, seq=1)]
    asks = [r.ask(now=T0 + i, max_price=10, max_proof_time=5_000, nonce=i) for i in range(5)]
    raws += asks
    raws += [
        p.commit(
            now=T0 + 20 + i, ask=message_id(a), bid=message_id(raws[0]), price=5, proof_time=1_000
        )
        for i, a in enumerate(asks)
    ]
    raws += [raws[1], b"garbage"]
    now = T0 + WINDOW + SKEW + 10
    one = MarketState(w.market)
    singles = [one.apply(raw, now)[0] for raw in raws]
    many = MarketState(w.market)
    verdicts, _ = many.apply_many(raws, now)
    assert verdicts == singles
    assert one.state_hash() == many.state_hash()
