"""The one property everything serves: nodes holding the same signed messages
compute the same state, whatever order the messages arrived in.

Histories are drawn at random (bids with replacements and equivocations, asks,
commits in and out of their windows, awards, cancels, proofs, receipts, commits to
the rounds those receipts open), then applied to fresh states in two different orders
at the same `now`. Invariants are checked after every single step."""

from __future__ import annotations

from hypothesis import given, note
from hypothesis import strategies as st

from p2p_market.core.envelope import message_id, parse
from p2p_market.core.state import MarketState
from p2p_market.markets.devnet import Actor

from .world import SKEW, T0, WINDOW, describe, make_market

MARKET = make_market()
NOW = T0 + 12_000
PROVERS = [Actor(f"prover-{i}", MARKET) for i in range(4)]
REQUESTERS = [Actor(f"requester-{i}", MARKET) for i in range(2)]


@st.composite
def histories(draw: st.DrawFn) -> list[bytes]:
    out: list[bytes] = []
    bids: dict[int, list[tuple[bytes, int, int]]] = {}
    n_provers = draw(st.integers(1, 4))
    for i in range(n_provers):
        p = PROVERS[i]
        price, ptime = draw(st.integers(1, 50)), draw(st.sampled_from([500, 1_000, 2_000, 4_000]))
        cap = draw(st.integers(1, 3))
        raw = p.bid(now=T0, price=price, proof_time=ptime, capacity=cap, seq=1)
        out.append(raw)
        bids[i] = [(message_id(raw), price, ptime)]
        if draw(st.booleans()):  # a replacement with a higher seq, later
            t = T0 + draw(st.integers(0, 4_000))
            price2 = draw(st.integers(1, 50))
            raw = p.bid(now=t, price=price2, proof_time=ptime, capacity=cap, seq=2)
            out.append(raw)
            bids[i].append((message_id(raw), price2, ptime))
        if draw(st.integers(0, 4)) == 0:  # an equivocation on seq 1
            raw = p.bid(
                now=T0 + draw(st.integers(0, 50)),
                price=price + 1,
                proof_time=ptime,
                capacity=cap,
                seq=1,
            )
            out.append(raw)
            bids[i].append((message_id(raw), price + 1, ptime))
    for a in range(draw(st.integers(1, 5))):
        req = REQUESTERS[a % 2]
        t_ask = T0 + draw(st.integers(0, 1_500))
        raw_ask = req.ask(
            now=t_ask,
            max_price=draw(st.integers(10, 60)),
            max_proof_time=draw(st.sampled_from([1_000, 2_000, 5_000])),
            prefer=draw(st.sampled_from(["cost", "time"])),
            replicas=draw(st.integers(1, 2)),
            ttl=draw(st.integers(3_000, 60_000)),
            nonce=a,
        )
        out.append(raw_ask)
        ask_id = message_id(raw_ask)
        commits: dict[int, list[bytes]] = {}
        for i in range(n_provers):
            if not draw(st.booleans()):
                continue
            bid_id, price, ptime = draw(st.sampled_from(bids[i]))
            offset = draw(st.integers(0, 2 * WINDOW + 200))
            attempt = offset // WINDOW if draw(st.integers(0, 5)) else 0
            raw_commit = PROVERS[i].commit(
                now=t_ask + offset,
                ask=ask_id,
                bid=bid_id,
                price=price,
                proof_time=ptime,
                attempt=attempt,
            )
            out.append(raw_commit)
            commits.setdefault(attempt, []).append(message_id(raw_commit))
            # up to two proofs: a prover may deliver again for a later slot of the ask
            for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2]))):
                out.append(
                    PROVERS[i].proof(
                        now=t_ask + draw(st.integers(500, 6_000)),
                        ask=ask_id,
                        proof=b"proof-%02d" % i,
                    )
                )
            if draw(st.booleans()):
                t_r = t_ask + draw(st.integers(1_000, 9_000))
                outcome = draw(st.sampled_from(["accepted", "invalid", "timed_out"]))
                receipt = req.receipt(
                    now=t_r, ask=ask_id, prover=PROVERS[i].public_key, outcome=outcome
                )
                out.append(receipt)
                if outcome != "accepted":
                    for j in range(n_provers):
                        if j != i and draw(st.booleans()):
                            b2, p2, pt2 = draw(st.sampled_from(bids[j]))
                            out.append(
                                PROVERS[j].commit(
                                    now=t_r + draw(st.integers(0, WINDOW)),
                                    ask=ask_id,
                                    bid=b2,
                                    price=p2,
                                    proof_time=pt2,
                                    round=message_id(receipt),
                                )
                            )
        if commits and draw(st.integers(0, 2)) == 0:
            # the requester's award of one attempt (it reaches back to the attempt's
            # end, and decides its round's earlier attempts), possibly late
            attempt = draw(st.sampled_from(sorted(commits)))
            named = draw(st.lists(st.sampled_from(commits[attempt]), max_size=2, unique=True))
            at = t_ask + (attempt + 1) * WINDOW + draw(st.integers(0, 4_000))
            out.append(req.award(now=at, ask=ask_id, commits=named, attempt=attempt))
        if draw(st.integers(0, 3)) == 0:
            out.append(req.cancel(now=t_ask + draw(st.integers(0, WINDOW + SKEW)), ask=ask_id))
    return out


def run(envelopes: list[bytes], tick_every: int = 0) -> MarketState:
    """Apply in this order at NOW; optionally tick (which archives finished asks, so
    later messages must thaw them) every `tick_every` envelopes."""
    state = MarketState(MARKET)
    for n, raw in enumerate(envelopes, 1):
        state.apply(raw, NOW)
        if tick_every and n % tick_every == 0:
            state.tick(NOW)
        problems = state.check_invariants()
        assert problems == [], problems
    state.tick(NOW)
    assert state.check_invariants() == []
    return state


def winners(state: MarketState) -> dict[bytes, tuple[bytes, ...]]:
    return {a: state.view(a).winners for a in state.asks}


@given(data=st.data(), history=histories())
def test_any_order_gives_the_same_state(data: st.DataObject, history: list[bytes]) -> None:
    shuffled = data.draw(st.permutations(history))
    names = {a.public_key: a.name for a in PROVERS + REQUESTERS}
    note("\n".join(describe(raw, names) for raw in history))
    a, b = run(history), run(list(reversed(history)), tick_every=3)
    c = run(shuffled, tick_every=data.draw(st.integers(0, 4)))
    assert a.state_hash() == b.state_hash() == c.state_hash()
    assert winners(a) == winners(b) == winners(c)
    assert sorted(a.evidence) == sorted(c.evidence)


AWAY = T0 + 1_500 + 60_000 + 10_000
"""Later than every ask of `histories` expired (placed by T0 + 1.5 s, ttl at most
60 s), long before any retention horizon (twice the market's lifetime after)."""


@given(data=st.data(), history=histories())
def test_a_node_away_for_the_asks_whole_lives_ends_with_the_same_state(
    data: st.DataObject, history: list[bytes]
) -> None:
    """A node that took every message as it was signed, ticking along (archiving
    what finished), and one cut off until every ask had expired that then gets the
    lot at once, in any order (a sync after a long partition), hold the same set
    and compute the same state: an expired ask is kept (IGNORE `expired`, stored
    until its horizon), so its commits, proofs and receipts are not orphans."""
    names = {a.public_key: a.name for a in PROVERS + REQUESTERS}
    note("\n".join(describe(raw, names) for raw in history))
    signed = sorted(history, key=lambda raw: (parse(raw).message.timestamp, message_id(raw)))  # type: ignore[union-attr]
    live = MarketState(MARKET)
    for raw in signed:
        at = parse(raw).message.timestamp  # type: ignore[union-attr]
        live.tick(at)
        live.apply(raw, at + data.draw(st.integers(0, SKEW)))
        assert live.check_invariants() == []
    live.tick(AWAY)
    away = MarketState(MARKET)
    for raw in data.draw(st.permutations(history)):
        away.apply(raw, AWAY)
    away.tick(AWAY)
    assert away.check_invariants() == []
    assert sorted(away.seen) == sorted(live.seen) and sorted(away.evidence) == sorted(live.evidence)
    assert away.state_hash() == live.state_hash()
    assert winners(away) == winners(live)


def test_the_hash_notices_a_missing_message() -> None:
    history = [
        PROVERS[0].bid(now=T0, price=5, proof_time=1_000, seq=1),
        PROVERS[1].bid(now=T0, price=6, proof_time=1_000, seq=1),
    ]
    assert run(history).state_hash() != run(history[:1]).state_hash()
