"""Arrival order against signed order, after every delivery.

A node on a network takes messages in arrival order while its clock runs; the
protocol promises the state of a node that took the same set in signed order.
These histories are built to hit what the plain random histories rarely do:

- messages that are accepted but change nothing, from third parties
  (InvalidInputs and Proofs from provers that hold no slot, receipts about
  provers that hold none);
- commits signed near the end of their window that arrive after it ended, some
  of them held back for many windows;
- receipts that open a round, arriving before or after the commits to that round;
- the requester's awards, of the ranking's winners or of others, before or after
  the commits they name (held until those arrive), and commits held back past them;
- identical offers, so the hash tie-break decides who wins;
- a prover's bid twin (an equivocation), signed and arriving late: the evidence
  that bars its commits from winning from its signing on (penalties.py);
- duplicates redelivered, and ticks between deliveries.

After every delivery and every tick, the arrival-order node is compared with a
fresh node fed the same set in signed order (each message at the clock it
arrived at, so admission sees the same `now`), by `state_hash()`, and with the
from-scratch reference fold. Any difference fails with the history.

Example counts: `ARRIVAL_EXAMPLES` (default 2,000 in CI); the deep profile before
closing a change to the fold is `ARRIVAL_EXAMPLES=50000`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, find, given, note, settings
from hypothesis import strategies as st

from p2p_market.core.envelope import Envelope, message_id, parse
from p2p_market.core.messages import Market
from p2p_market.core.state import MarketState
from p2p_market.markets.devnet import GENESIS_MS, Actor, default_market

from .test_incremental_fold import check_against_reference
from .world import describe

EXAMPLES = int(os.environ.get("ARRIVAL_EXAMPLES", "2000"))
T = GENESIS_MS + 10_000

MARKETS = [
    # a window much shorter than the skew: many windows end before a commit arrives
    default_market(
        commit_window_ms=100, stage_ms=50, skew_ms=2_000, max_lifetime_ms=600_000, difficulty=0
    ),
    default_market(
        commit_window_ms=1_000, stage_ms=200, skew_ms=500, max_lifetime_ms=600_000, difficulty=0
    ),
]


BID_TTL = 500_000
"""Within every market's lifetime: a bid living longer is REJECTed (expiry_too_far),
and with no bid stored every commit would stay an orphan and nothing would settle."""


@dataclass(frozen=True)
class Cast:
    market: Market
    provers: list[Actor]
    requesters: list[Actor]
    bystander: Actor


CASTS = [
    Cast(
        m,
        [Actor(f"arrival-prover-{i}", m) for i in range(4)],
        [Actor(f"arrival-requester-{i}", m) for i in range(2)],
        Actor("arrival-bystander", m),
    )
    for m in MARKETS
]


class History(list[tuple[int, bytes]]):
    """Arrivals; a short repr (the readable form is in the test's note)."""

    def __init__(self, cast: Cast, items: list[tuple[int, bytes]]) -> None:
        super().__init__(items)
        self.cast = cast

    def __repr__(self) -> str:
        return f"<{len(self)} arrivals, window {self.cast.market.commit_window_ms} ms>"


@st.composite
def adversarial_histories(draw: st.DrawFn) -> History:
    """(cast, [(arrival time, envelope)]) for one small market."""
    cast = draw(st.sampled_from(CASTS))
    w, skew = cast.market.commit_window_ms, cast.market.skew_ms
    late = draw(st.sampled_from([w, 3 * w, 3 * skew]))
    held = 40 * (w + skew)

    def arrive(t: int) -> int:
        kind = draw(st.integers(0, 9))
        if kind == 0:
            return t + draw(st.integers(held // 2, held))  # held back
        return t + draw(st.integers(0, late))

    out: list[tuple[int, bytes]] = []
    n = draw(st.integers(2, 4))
    # few distinct offers: ties are common and the hash tie-break decides
    offers = [(5, 10 * w), (5, 10 * w), (6, 10 * w), (5, 20 * w)]
    bids: list[tuple[bytes, int, int]] = []
    for i in range(n):
        price, ptime = draw(st.sampled_from(offers))
        cap = draw(st.integers(1, 2))
        max_size = draw(st.sampled_from([1, 1, 2]))
        raw = cast.provers[i].bid(
            now=T,
            price=price,
            proof_time=ptime,
            capacity=cap,
            seq=1,
            max_size=max_size,
            ttl=BID_TTL,
        )
        out.append((T, raw))
        bids.append((message_id(raw), price, ptime))
    # an equivocator: a second bid with the same seq, signed later (the evidence that
    # bars its commits from winning from then on), often arriving late
    if draw(st.integers(0, 2)) == 0:
        i = draw(st.integers(0, n - 1))
        t_twin = T + draw(st.integers(0, 8 * w))
        twin = cast.provers[i].bid(
            now=t_twin, price=7, proof_time=10 * w, capacity=1, seq=1, ttl=BID_TTL
        )
        out.append((arrive(t_twin), twin))
    for a in range(draw(st.integers(1, 3))):
        req = cast.requesters[a % 2]
        t_ask = T + draw(st.integers(1, 4 * w))
        # declared work (core/work.py): inputs naming difficulty 1 in this difficulty-0
        # market are 2 units, so only bids taking size 2 and cheap enough per unit may
        # win; sometimes misdeclared (REJECTed alike everywhere)
        size = draw(st.sampled_from([1, 1, 2]))
        declared = size if draw(st.integers(0, 5)) else 3 - size
        raw_ask = req.ask(
            now=t_ask,
            max_price=10,
            max_proof_time=40 * w,
            prefer=draw(st.sampled_from(["cost", "time"])),
            replicas=draw(st.integers(1, 2)),
            size=declared,
            inputs=b"difficulty=1\nwork" if size == 2 else b"",
            ttl=draw(st.sampled_from([6 * w, 60 * w + 4 * skew])),
            nonce=a,
        )
        out.append((t_ask + draw(st.integers(0, w)), raw_ask))
        ask_id = message_id(raw_ask)
        committers = []
        by_attempt: dict[int, list[bytes]] = {}
        for i in range(n):
            if not draw(st.booleans()):
                continue
            committers.append(i)
            bid_id, price, ptime = bids[i]
            attempt = draw(st.sampled_from([0, 0, 1, 2]))
            start = t_ask + attempt * w
            offset = draw(st.sampled_from([0, w // 2, w - 1, w - 1, w]))  # w: just outside
            t = start + offset
            raw = cast.provers[i].commit(
                now=t, ask=ask_id, bid=bid_id, price=price, proof_time=ptime, attempt=attempt
            )
            out.append((arrive(t), raw))
            by_attempt.setdefault(attempt, []).append(message_id(raw))
        # the requester awards some attempts (any subset of their commits, the
        # ranking's or not), mostly after their window ended, some before
        for attempt, commits in sorted(by_attempt.items()):
            if draw(st.integers(0, 2)) == 0:
                continue
            chosen = [c for c in commits if draw(st.booleans())]
            end = t_ask + (attempt + 1) * w
            t = end + draw(st.sampled_from([-1, 0, skew, skew + w, 5 * w]))
            raw = req.award(now=t, ask=ask_id, commits=chosen, attempt=attempt)
            out.append((arrive(t), raw))
        # third parties: accepted, without effect
        for _ in range(draw(st.integers(0, 2))):
            t = t_ask + draw(st.integers(0, 6 * w + 2 * skew))
            raw = draw(
                st.sampled_from(
                    [
                        cast.bystander.invalid_inputs(now=t, ask=ask_id, reason="spite"),
                        cast.bystander.proof(now=t, ask=ask_id, proof=b"nothing"),
                    ]
                )
            )
            out.append((arrive(t), raw))
        # winners (whoever they turn out to be) deliver, attest, are judged
        for i in committers:
            ptime = bids[i][2]
            deadline_0 = t_ask + w + skew + ptime
            what = draw(st.integers(0, 5))
            if what in (1, 3):
                # 3: a proof the pow statement rejects (not 8 bytes), evidence that
                # bars the prover's later commits in this market (core/penalties.py)
                t = t_ask + w + draw(st.integers(0, ptime + skew))
                body = b"proof-%02d" % i if what == 1 else b"bad"
                out.append((arrive(t), cast.provers[i].proof(now=t, ask=ask_id, proof=body)))
            elif what == 2:
                t = t_ask + w + draw(st.integers(0, ptime))
                raw = cast.provers[i].invalid_inputs(now=t, ask=ask_id, reason="bad")
                out.append((arrive(t), raw))
            if draw(st.booleans()):
                outcome = draw(st.sampled_from(["accepted", "invalid", "timed_out"]))
                t_r = deadline_0 + draw(st.sampled_from([-1, 0, 0, w, 2 * w]))
                receipt = req.receipt(
                    now=t_r, ask=ask_id, prover=cast.provers[i].public_key, outcome=outcome
                )
                out.append((arrive(t_r), receipt))
                if outcome != "accepted":
                    round_commits = []
                    for j in range(n):
                        if j != i and draw(st.booleans()):
                            b2, p2, pt2 = bids[j]
                            t = t_r + draw(st.sampled_from([0, w // 2, w - 1]))
                            raw = cast.provers[j].commit(
                                now=t, ask=ask_id, bid=b2, price=p2, proof_time=pt2,
                                round=message_id(receipt),
                            )  # fmt: skip
                            # the round's commit often arrives before its receipt
                            out.append((arrive(t), raw))
                            round_commits.append(message_id(raw))
                    if draw(st.booleans()) and round_commits:
                        t = t_r + w + draw(st.sampled_from([0, skew]))
                        raw = req.award(
                            now=t, ask=ask_id, commits=round_commits[:1],
                            round=message_id(receipt),
                        )  # fmt: skip
                        out.append((arrive(t), raw))
        if draw(st.integers(0, 4)) == 0:
            t = t_ask + draw(st.integers(0, w + skew))
            out.append((arrive(t), req.cancel(now=t, ask=ask_id)))
        if draw(st.integers(0, 4)) == 0:  # a receipt about a prover that holds nothing
            t = t_ask + draw(st.integers(w, 4 * w))
            raw = req.receipt(
                now=t, ask=ask_id, prover=cast.bystander.public_key, outcome="timed_out"
            )
            out.append((arrive(t), raw))
    if draw(st.booleans()):  # a duplicate, redelivered later
        at, raw = out[draw(st.integers(0, len(out) - 1))]
        out.append((at + draw(st.integers(0, late)), raw))
    return History(cast, out)


def signed_order_node(
    market: Market, delivered: list[tuple[Envelope, int]], now: int
) -> MarketState:
    """A fresh node fed the same set in signed order, each message at the clock it
    arrived at (so admission sees the same `now`), then brought to `now`."""
    node = MarketState(market)
    for env, at in sorted(delivered, key=lambda d: (d[0].message.timestamp, d[0].id)):  # type: ignore[union-attr]
        node.apply_checked(env, at)
    node.tick(now)
    return node


def compare(node: MarketState, delivered: list[tuple[Envelope, int]], now: int) -> None:
    check_against_reference(node)
    other = signed_order_node(node.market, delivered, now)
    assert node.state_hash() == other.state_hash(), "arrival order and signed order differ"
    for ask_id in node.asks:
        assert node.view(ask_id) == other.view(ask_id)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(history=adversarial_histories(), tick_ms=st.sampled_from([0, 40, 250, 900]))
def test_arrival_order_gives_the_signed_order_state_after_every_delivery(
    history: History, tick_ms: int
) -> None:
    cast, arrivals = history.cast, list(history)
    names = {a.public_key: a.name for a in [*cast.provers, *cast.requesters, cast.bystander]}
    note("\n".join(f"@{at - T} {describe(raw, names)}" for at, raw in sorted(arrivals)))
    node = MarketState(cast.market)
    delivered: list[tuple[Envelope, int]] = []
    seen: set[bytes] = set()
    now = T
    for at, raw in sorted(arrivals):
        while tick_ms and now + tick_ms < at:
            now += tick_ms
            node.tick(now)
        now = max(now, at)
        verdict, _ = node.apply(raw, now)
        env = parse(raw)
        if env.id not in seen:
            seen.add(env.id)
            delivered.append((env, now))
        else:
            assert not verdict.accepted
        compare(node, delivered, now)
    for step in (cast.market.commit_window_ms, cast.market.skew_ms, 100_000):
        now += step
        node.tick(now)
        compare(node, delivered, now)


def _settles(history: History, *, size: int) -> bool:
    """Whether, all delivered, some ask of this declared size ends with a winner."""
    node = MarketState(history.cast.market)
    for at, raw in sorted(history):
        node.apply(raw, at)
    node.tick(max(at for at, _ in history) + 100_000)
    return any(
        node.view(ask_id).winners and node.asks[ask_id].message.size == size  # type: ignore[union-attr]
        for ask_id in node.asks
    )


@pytest.mark.parametrize("size", [1, 2])
def test_the_histories_reach_settlement(size: int) -> None:
    """The property above is only as strong as its histories: they must store bids and
    settle commits (once they did not: every bid outlived the market's lifetime, was
    REJECTed, and every commit stayed an orphan), asks of size 2 included."""
    find(
        adversarial_histories(),
        lambda h: _settles(h, size=size),
        settings=settings(max_examples=500, database=None, deadline=None),
    )
