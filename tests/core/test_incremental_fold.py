"""The incremental fold against the reference: after every step of a node's life
(messages arriving out of signed order while time moves, ticks that archive and
prune), the settlement the node keeps up to date must equal the one folded from
scratch over the same stored messages (`reference.settle`, the reference).

This is what lets the fold take messages in the past without replaying: the
Hypothesis histories put commits, proofs, receipts and cancels of several asks and
provers close together in time, and deliver them with random delays, so most
steps are out-of-order insertions that either commute or must be caught as a
conflict."""

from __future__ import annotations

from typing import Any

from hypothesis import given, note
from hypothesis import strategies as st

from p2p_market.core.codec import unpack
from p2p_market.core.envelope import message_id
from p2p_market.core.reference import (
    archive_differences,
    canonical,
    fold_differences,
    reference,
)
from p2p_market.core.state import MarketState
from p2p_market.markets.devnet import Actor

from .test_order_independence import MARKET, PROVERS, REQUESTERS, histories
from .world import T0, WINDOW


def timestamp(raw: bytes) -> int:
    body: dict[str, Any] = unpack(unpack(raw)[1])
    return int(body["timestamp"])


def check_against_reference(state: MarketState, pruned: bool = False) -> None:
    assert fold_differences(state) == []
    if not pruned:
        assert archive_differences(state) == []
    assert state.check_invariants() == []


def test_a_fold_that_differs_from_the_reference_is_described() -> None:
    """The comparison can fail: a kept fold tampered with after the fact (a window's
    winners dropped) is reported, part and attempt named, kept and reference shown."""
    market = MARKET
    prover = Actor("cheap", market)
    state = MarketState(market)
    bid = prover.bid(now=T0, price=5, proof_time=1_000, seq=1)
    ask = REQUESTERS[0].ask(now=T0 + 100, max_price=10, max_proof_time=5_000)
    commit = prover.commit(
        now=T0 + 200, ask=message_id(ask), bid=message_id(bid), price=5, proof_time=1_000
    )
    for raw in (bid, ask, commit):
        state.apply(raw, T0 + 300)
    state.tick(T0 + 2_000)
    assert fold_differences(state) == []
    for attempt in state.settlement().attempts.values():
        attempt.winners = ()
    found = fold_differences(state)
    assert any(line.startswith(f"attempts {message_id(ask).hex()[:12]}/") for line in found)
    assert any("kept" in line and "reference" in line for line in found)
    assert canonical(state.settlement()) != canonical(reference(state))


@given(
    history=histories(),
    spread=st.sampled_from([300, 2_500]),
    delays=st.lists(st.integers(0, 1_000), min_size=60, max_size=60),
    tick_every=st.integers(0, 3),
)
def test_the_incremental_fold_equals_the_reference(
    history: list[bytes], spread: int, delays: list[int], tick_every: int
) -> None:
    # Each message arrives some delay after it was signed; the node's clock is the
    # arrival time (never going back), so most arrivals are in the fold's past.
    arrivals = sorted(
        (
            (timestamp(raw) + delays[i % len(delays)] * spread // 1_000, i, raw)
            for i, raw in enumerate(history)
        ),
    )
    state = MarketState(MARKET, local_prover=PROVERS[0].public_key)
    note(f"{len(history)} messages, arrival delays up to {spread} ms")
    now = T0
    for n, (at, _, raw) in enumerate(arrivals, 1):
        now = max(now, at)
        state.apply(raw, now)
        check_against_reference(state)
        if tick_every and n % tick_every == 0:
            now += 300
            state.tick(now)
            check_against_reference(state)
    for step in (5_000, 5_000, 5_000, 5_000, MARKET.max_lifetime_ms, 2 * MARKET.max_lifetime_ms):
        now += step  # the last steps prune asks and bids past their horizon
        state.tick(now)
        check_against_reference(state, pruned=step >= MARKET.max_lifetime_ms)


def test_a_late_commit_reopens_its_window_in_place() -> None:
    """A commit signed inside a window that arrives after the window was settled
    changes who won: the window's end is undone, the commit folded, the end folded
    again (no rebuild), and the late, better commit wins."""
    market = MARKET
    good, bad = Actor("cheap", market), Actor("dear", market)
    req = REQUESTERS[0]
    state = MarketState(market)
    bid_good = good.bid(now=T0, price=5, proof_time=1_000, seq=1)
    bid_bad = bad.bid(now=T0, price=9, proof_time=1_000, seq=1)
    ask = req.ask(now=T0 + 100, max_price=10, max_proof_time=5_000, replicas=1)
    ask_id = message_id(ask)
    late = good.commit(
        now=T0 + 200, ask=ask_id, bid=message_id(bid_good), price=5, proof_time=1_000
    )
    early = bad.commit(now=T0 + 300, ask=ask_id, bid=message_id(bid_bad), price=9, proof_time=1_000)
    for raw in (bid_good, bid_bad, ask, early):
        state.apply(raw, T0 + 400)
    state.tick(T0 + 2_000)  # the window [T0+100, T0+1100) is settled: "dear" won
    assert state.view(ask_id).winners == (bad.public_key,)
    before = state.refolds
    state.apply(late, T0 + 2_100)
    check_against_reference(state)
    assert state.view(ask_id).winners == (good.public_key,)
    assert state.refolds == before
    assert state._fold is not None and state._fold.reopened == 1
    # a second straggler for the same window: reopened again, still no rebuild
    third = Actor("third", market)
    bid3 = third.bid(now=T0, price=4, proof_time=1_000, seq=1)
    state.apply(bid3, T0 + 2_150)
    state.apply(
        third.commit(now=T0 + 900, ask=ask_id, bid=message_id(bid3), price=4, proof_time=1_000),
        T0 + 2_200,
    )
    check_against_reference(state)
    assert state.view(ask_id).winners == (third.public_key,)
    assert state._fold.reopened == 2


def test_an_unrelated_late_message_is_folded_in_place() -> None:
    """Commits of different provers to different asks commute: no rebuild."""
    market = MARKET
    a, b = Actor("a", market), Actor("b", market)
    req = REQUESTERS[0]
    state = MarketState(market)
    bid_a = a.bid(now=T0, price=5, proof_time=1_000, seq=1)
    bid_b = b.bid(now=T0, price=5, proof_time=1_000, seq=1)
    ask1 = req.ask(now=T0 + 100, max_price=10, max_proof_time=5_000, nonce=1)
    ask2 = req.ask(now=T0 + 100, max_price=10, max_proof_time=5_000, nonce=2)
    c1 = a.commit(now=T0 + 200, ask=message_id(ask1), bid=message_id(bid_a), price=5,
                  proof_time=1_000)  # fmt: skip
    c2 = b.commit(now=T0 + 300, ask=message_id(ask2), bid=message_id(bid_b), price=5,
                  proof_time=1_000)  # fmt: skip
    for raw in (bid_a, bid_b, ask1, ask2, c2):
        state.apply(raw, T0 + 400)
    before = state.refolds
    state.apply(c1, T0 + 450)  # signed before c2, arrives after it
    check_against_reference(state)
    assert state.refolds == before


@st.composite
def late_commits(draw: st.DrawFn) -> list[tuple[int, bytes]]:
    """(arrival, message): asks whose commits come near their window's end and
    arrive up to 600 ms late, so windows end before some of their commits arrive."""
    out: list[tuple[int, bytes]] = []
    n = draw(st.integers(2, 4))
    bids = []
    for i in range(n):
        price = draw(st.integers(1, 20))
        raw = PROVERS[i].bid(
            now=T0, price=price, proof_time=1_000, capacity=draw(st.integers(1, 2))
        )
        out.append((T0, raw))
        bids.append((message_id(raw), price))
    for a in range(draw(st.integers(1, 3))):
        t_ask = T0 + 100 + a * draw(st.integers(0, 700))
        ask = REQUESTERS[0].ask(
            now=t_ask, max_price=30, max_proof_time=5_000, nonce=a,
            replicas=draw(st.integers(1, 2)),
        )  # fmt: skip
        out.append((t_ask, ask))
        for i in range(n):
            if draw(st.integers(0, 3)) == 0:
                continue
            attempt = draw(st.sampled_from([0, 0, 0, 1]))
            t = t_ask + attempt * WINDOW + draw(st.integers(WINDOW - 400, WINDOW - 1))
            raw = PROVERS[i].commit(
                now=t, ask=message_id(ask), bid=bids[i][0], price=bids[i][1],
                proof_time=1_000, attempt=attempt,
            )  # fmt: skip
            out.append((t + draw(st.integers(0, 600)), raw))
    return out


@given(arrivals=late_commits(), tick_ms=st.sampled_from([50, 150, 400]))
def test_late_commits_reopen_windows_as_the_reference_says(
    arrivals: list[tuple[int, bytes]], tick_ms: int
) -> None:
    state = MarketState(MARKET)
    now = T0
    for at, raw in sorted(arrivals):
        while now + tick_ms < at:  # time passes: windows end before stragglers come
            now += tick_ms
            state.tick(now)
            check_against_reference(state)
        now = max(now, at)
        state.apply(raw, now)
        check_against_reference(state)
    state.tick(now + 3 * WINDOW)
    check_against_reference(state)
