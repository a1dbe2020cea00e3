"""Bids that never commit cannot censor the market (protocols/market-v1.md §16).

The attack: bids at price 0 that rank ahead of every honest prover and never commit.
Before the fallback was bounded, an honest prover behind more of them than the
window has stages never committed at all, and every ask expired unserved."""

from __future__ import annotations

import random

from p2p_market.core import effects as fx
from p2p_market.core.envelope import message_id
from tests.core.world import SKEW, STAGE, T0, WINDOW, World

PHANTOMS = 10
"""More phantoms than the window has stages (WINDOW // STAGE = 5)."""

SETTLED = T0 + WINDOW + SKEW


def commits_at(w: World, start: int, end: int, step: int = 10) -> list[tuple[int, fx.CommitToAsk]]:
    """Tick from `start` to `end`: the commits the policy suggests, with when."""
    out = []
    for now in range(start, end, step):
        out += [(now, e) for e in w.tick(now) if isinstance(e, fx.CommitToAsk)]
    return out


def phantom_world() -> tuple[World, bytes, list[bytes]]:
    w = World(local_prover="honest")
    phantoms = [w.bid(f"phantom{i}", price=0, proof_time=1, capacity=1024) for i in range(PHANTOMS)]
    mine = w.bid("honest", price=20, proof_time=1_000, capacity=4)
    return w, mine, phantoms


def test_phantom_bids_cannot_hold_an_honest_prover_past_the_window() -> None:
    w, mine, _ = phantom_world()
    ask = w.ask("req", max_price=100, max_proof_time=10_000)
    suggested = commits_at(w, T0, T0 + WINDOW)
    # the last stage that starts inside the window: ceil(1000 / 200) - 1 = 4
    assert [(now - T0, c.bid, c.ask) for now, c in suggested] == [(4 * STAGE, mine, ask)]


def test_a_bid_that_stayed_away_ranks_last_on_the_next_ask() -> None:
    w, mine, phantoms = phantom_world()
    ask = w.ask("req", max_price=100, max_proof_time=10_000)
    assert w.commit("honest", ask, mine, T0 + 4 * STAGE).accepted
    w.tick(SETTLED)
    assert w.winners(ask) == ["honest"]
    assert set(w.state.no_shows) == set(phantoms)
    later = SETTLED + 100
    ask_raw = w.actor("req").ask(now=later, max_price=100, max_proof_time=10_000)
    _, effects = w.state.apply(ask_raw, later)
    commits = [e for e in effects if isinstance(e, fx.CommitToAsk)]
    assert [c.ask for c in commits] == [message_id(ask_raw)]  # at once: nobody ahead


def test_a_prover_with_every_slot_busy_is_not_a_no_show() -> None:
    w = World()
    busy = w.bid("busy", price=1, proof_time=5_000, capacity=1)
    idle = w.bid("idle", price=2, proof_time=5_000)
    honest = w.bid("honest", price=20, proof_time=1_000)
    first = w.ask("req", max_price=100, max_proof_time=10_000)
    assert w.commit("busy", first, busy, T0 + 10).accepted
    second = w.ask("req2", now=T0 + 100, max_price=100, max_proof_time=10_000)
    assert w.commit("honest", second, honest, T0 + 900).accepted
    w.tick(SETTLED + 200)
    assert w.winners(first) == ["busy"] and w.winners(second) == ["honest"]
    assert set(w.state.no_shows) == {idle}  # "busy" held its only slot all window


def test_a_new_bid_clears_the_record() -> None:
    w, _, phantoms = phantom_world()
    ask = w.ask("req", max_price=100, max_proof_time=10_000)
    assert w.commit("honest", ask, w.state.book.current[w.pk("honest")].id, T0 + 800).accepted
    w.tick(SETTLED)
    assert phantoms[0] in w.state.no_shows
    w.bid("phantom0", now=SETTLED + 10, price=0, proof_time=1, capacity=1024, seq=2)
    w.tick(SETTLED + 5_000)  # the next prune
    assert phantoms[0] not in w.state.no_shows
    assert set(phantoms[1:]) <= set(w.state.no_shows)


def test_no_shows_are_named_alike_whatever_the_arrival_order() -> None:
    """A function of the stored messages: nodes that hold the same messages name the
    same no-shows, whichever order the messages came in."""
    source = World()
    raws = [
        source.actor(f"p{i}").bid(now=T0 - 100, price=i, proof_time=1_000, capacity=1)
        for i in range(8)
    ]
    for index in range(3):
        asker = source.actor(f"req{index}")
        ask_raw = asker.ask(now=T0 + index * 300, max_price=100, max_proof_time=10_000)
        raws.append(ask_raw)
        prover = source.actor(f"p{index + 5}")  # worse than p0..p4, who never commit
        raws.append(
            prover.commit(
                now=T0 + index * 300 + 500,
                ask=message_id(ask_raw),
                bid=message_id(raws[index + 5]),
                price=index + 5,
                proof_time=1_000,
            )
        )
    named = []
    for seed in range(6):
        order = list(raws)
        random.Random(seed).shuffle(order)
        w = World()
        w.actors = source.actors
        for raw in order:
            w.send(raw, T0 + 1_000)
        w.tick(T0 + 5_000)
        named.append(dict(w.state.no_shows))
    assert all(n == named[0] for n in named)
    # p0..p4 stayed away from all three asks; the first record names the first ask
    assert {b: k[1] for b, k in named[0].items()} == {
        message_id(raws[i]): message_id(raws[8]) for i in range(5)
    }
