"""Differences between the kept settlement fold and the fold from scratch that the
deterministic simulator's `--check-fold` found, each as the smallest reproduction on
one `MarketState`. Each was a bug of the incremental fold, found before it was
fixed; each test asserts the correct behaviour (and failed before the fix).

1. `p2p-market dst --nodes 50 --seconds 20 --seed 12 --scenario mixed-faults
   --check-fold`, node 21 at +20 s (minimised from its log to these 8 messages).
   A commit to a new round arrives before the receipt that opens the round, then
   the receipt, then a straggler commit to that round's first window, signed inside
   the window and arriving after it ended. The kept fold notes the straggler "ask is
   assigned" (it is folded after the window's end instead of reopening it) and the
   pricier commit keeps the slot; from scratch, the straggler is the better candidate
   and wins. With the receipt arriving before the first commit, the window is
   reopened and the result is right. Cause: the commit was first folded inside a
   replay of its ask, which did not advance the fold's frontier, so the straggler
   was not seen as being in the past of the window's end (fixed with the frontier).

2. `tests/core/test_arrival_order.py` (a node that ticks while messages arrive, against
   the same set in signed order), minimised to 6 messages. Prover P (capacity 1)
   commits to ask B's attempt 0 at +1 and to ask A's attempt 1 at +101; both commits
   arrive 42 s late, after both asks expired and were archived, then B's requester
   awards B's attempt 1 with no commit (it moved on: attempt 0 has no winners). The
   truth: P's commit to B lost at its window's end (+101), so its commit to A at
   +101 is within capacity and wins A. The ticking node had archived A again (its
   commit over capacity while B's commit held the slot) before the award came; the
   award thawed only asks touched at or after its own timestamp (+2 201), though it
   decides B's attempt that ended at +101, so A stayed frozen without its winner.
   Fixed: an award thaws from its ask's first window end.
"""

from __future__ import annotations

from p2p_market.core.envelope import message_id, parse
from p2p_market.core.reference import fold_differences
from p2p_market.core.state import MarketState
from p2p_market.markets.devnet import GENESIS_MS, Actor, default_market

MARKET = default_market(
    commit_window_ms=1_000, stage_ms=200, skew_ms=1_000, max_lifetime_ms=60_000, difficulty=0
)
S = GENESIS_MS + 60_000


def _seed12(receipt_first: bool) -> tuple[MarketState, bytes, Actor]:
    a, b, c, req = (Actor(name, MARKET) for name in ("a", "b", "c", "req"))
    bid_a = a.bid(now=S - 24, price=15, proof_time=2_000, capacity=2, ttl=60_000, seq=1)
    bid_b = b.bid(now=S - 224, price=10, proof_time=2_000, capacity=3, ttl=60_000, seq=1)
    bid_c = c.bid(now=S + 629, price=10, proof_time=2_000, capacity=2, ttl=60_000, seq=1)
    ask = req.ask(now=S + 2_635, max_price=15, max_proof_time=6_000, prefer="time", ttl=20_000)
    ask_id = message_id(ask)
    first = b.commit(now=S + 2_711, ask=ask_id, bid=message_id(bid_b), price=10, proof_time=2_000)
    # b won round 0 and failed: the receipt opens round `rnd` at +15 683, window
    # [+15 683, +16 683) of its attempt 0
    receipt = req.receipt(now=S + 15_683, ask=ask_id, prover=b.public_key, outcome="invalid")
    rnd = message_id(receipt)
    pricier = a.commit(
        now=S + 16_047, ask=ask_id, bid=message_id(bid_a), price=15, proof_time=2_000, round=rnd
    )
    straggler = c.commit(
        now=S + 16_412, ask=ask_id, bid=message_id(bid_c), price=10, proof_time=2_000, round=rnd
    )
    late = [(16_690, pricier), (16_721, receipt)]
    if receipt_first:
        late.reverse()
    state = MarketState(MARKET)
    steps = [(656, bid_a), (776, bid_b), (1_001, bid_c), (3_477, ask), (3_744, first)]
    for at, raw in [*steps, *late, (16_806, straggler)]:
        state.apply(raw, S + at)
    return state, ask_id, c


def test_a_straggler_reopens_its_window_when_the_round_came_first() -> None:
    """The control: the same messages with the receipt before the first commit."""
    state, ask_id, c = _seed12(receipt_first=True)
    assert fold_differences(state) == []
    assert state.view(ask_id).winners[-1] == c.public_key


def test_a_straggler_reopens_its_window_when_a_commit_came_before_its_round() -> None:
    state, ask_id, c = _seed12(receipt_first=False)
    assert fold_differences(state) == []
    assert state.view(ask_id).winners[-1] == c.public_key


def test_an_award_that_moves_on_thaws_what_its_round_decided_before_it() -> None:
    market = default_market(
        commit_window_ms=100, stage_ms=50, skew_ms=2_000, max_lifetime_ms=600_000, difficulty=0
    )
    t = GENESIS_MS + 10_000
    p, req_a, req_b = (Actor(name, market) for name in ("fold-p", "fold-req-a", "fold-req-b"))
    bid = p.bid(now=t, price=5, proof_time=1_000, capacity=1, ttl=500_000, seq=1)
    ask_a = req_a.ask(now=t + 1, max_price=10, max_proof_time=4_000, ttl=600)
    ask_b = req_b.ask(now=t + 1, max_price=10, max_proof_time=4_000, ttl=600)
    a_id, b_id = message_id(ask_a), message_id(ask_b)
    to_b = p.commit(now=t + 1, ask=b_id, bid=message_id(bid), price=5, proof_time=1_000)
    to_a = p.commit(
        now=t + 101, ask=a_id, bid=message_id(bid), price=5, proof_time=1_000, attempt=1
    )
    award = req_b.award(now=t + 2_201, ask=b_id, commits=[], attempt=1)
    arrivals = [(t, bid), (t + 1, ask_a), (t + 1, ask_b), (t + 42_001, to_b)]
    arrivals += [(t + 42_101, to_a), (t + 44_201, award)]
    ticking, signed = MarketState(market), MarketState(market)
    now = t
    for at, raw in arrivals:
        while now + 40 < at:  # the node's clock ticks while it waits
            now += 40
            ticking.tick(now)
        now = at
        ticking.apply(raw, now)

    def signed_time(arrival: tuple[int, bytes]) -> tuple[int, bytes]:
        return parse(arrival[1]).message.timestamp, arrival[1]  # type: ignore[union-attr]

    for at, raw in sorted(arrivals, key=signed_time):
        signed.apply(raw, at)
    signed.tick(now)
    assert signed.view(a_id).winners == (p.public_key,)
    assert ticking.view(a_id).winners == (p.public_key,)
    assert ticking.state_hash() == signed.state_hash()
    assert fold_differences(ticking) == []
