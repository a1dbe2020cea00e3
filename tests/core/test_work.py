"""Declared work (core/work.py, protocols/market-v1.md §5.3): an ask's `size` and a
bid's `max_size`, without any network. The situations are those the rule guards
against: a bid that would win on price unless the size is honoured, an ask whose
inputs need more than it declares, a prover that could not have taken the ask."""

from __future__ import annotations

import pytest

from p2p_market.core import effects as fx
from p2p_market.core.limits import MAX_SIZE
from p2p_market.core.messages import Ask, Market, sha256
from p2p_market.core.verdict import Reason, Status
from p2p_market.core.work import inputs_size, misdeclared, pow_size, required_size, takes
from p2p_market.markets.devnet import default_market
from tests.core.world import SKEW, T0, WINDOW, World

POW = default_market(difficulty=10)
SETTLED = T0 + WINDOW + SKEW


def ask_of(market: Market, inputs: bytes, *, size: int = 1, confidential: bool = False) -> Ask:
    return Ask(
        market=bytes(32),
        timestamp=T0,
        max_price=10,
        max_proof_time=1_000,
        prefer="cost",
        size=size,
        expires_at=T0 + 60_000,
        inputs=b"" if confidential else inputs,
        inputs_hash=sha256(inputs),
        confidential=confidential,
        nonce=1,
    )


@pytest.mark.parametrize(
    ("inputs", "size"),
    [
        (b"no line: the market's difficulty", 1),
        (b"difficulty=10\nsame", 1),
        (b"difficulty=4\nless is still one unit", 1),
        (b"difficulty=11\ntwice", 2),
        (b"difficulty=40\nthirty bits above", 1 << 30),
    ],
)
def test_a_pow_ask_s_size_is_read_off_its_public_inputs(inputs: bytes, size: int) -> None:
    assert inputs_size(POW, inputs) == size
    assert required_size(POW, ask_of(POW, inputs, size=size)) == size
    assert misdeclared(POW, ask_of(POW, inputs, size=size)) is None
    wrong = 2 * size if size < MAX_SIZE else 1
    assert misdeclared(POW, ask_of(POW, inputs, size=wrong)) is not None


def test_what_no_node_can_judge_has_no_required_size() -> None:
    grief = b"difficulty=40\nhidden"
    assert required_size(POW, ask_of(POW, grief, confidential=True)) is None
    by_hash = ask_of(POW, grief).__class__(
        **{**ask_of(POW, grief).to_map(), "inputs": b""}  # delivered directly
    )
    assert required_size(POW, by_hash) is None
    assert required_size(POW, ask_of(POW, b"difficulty=07\nmalformed")) is None
    external = default_market(proof_system="external", verifier="zkvm verify")
    assert required_size(external, ask_of(external, b"cycles")) is None
    for system in ("groth16", "plonk"):
        circuit = default_market(proof_system=system, verifier="", difficulty=0)
        assert required_size(circuit, ask_of(circuit, b"{}", confidential=True)) == 1
        assert misdeclared(circuit, ask_of(circuit, b"{}", size=2)) is not None


def test_beyond_any_declaration_is_told_apart() -> None:
    assert pow_size(0, 40) == MAX_SIZE
    assert pow_size(0, 64) == MAX_SIZE + 1  # no declaration can match: refused


def test_a_misdeclared_ask_is_refused_live_and_not_kept_when_late() -> None:
    w = World()
    raw = w.actor("req").ask(now=T0, max_price=100, max_proof_time=5_000, size=1,
                             inputs=b"difficulty=3\neight units")  # fmt: skip
    verdict = w.send(raw, T0)
    assert (verdict.status, verdict.reason) == (Status.REJECT, Reason.MISDECLARED_SIZE)
    late = World(market=w.state.market)
    after = T0 + 600_000 + 1  # past the ask's expiry (its default ttl)
    verdict = late.send(raw, after)
    assert (verdict.status, verdict.reason) == (Status.IGNORE, Reason.EXPIRED)
    assert not late.state.asks  # an honest expired ask would be kept (§6 step 16)
    honest = w.actor("req").ask(now=T0, max_price=100, max_proof_time=5_000, size=8,
                                inputs=b"difficulty=3\neight units")  # fmt: skip
    assert late.send(honest, after).status is Status.IGNORE and late.state.asks


def test_a_bid_that_does_not_take_the_size_is_passed_over_and_not_a_no_show() -> None:
    """The cheapest bid takes size 1 only: on an ask of size 4 it is not eligible (the
    local prover behind it commits at once, as if it were first), it is not named a
    no-show for staying away, and the winner is paid 4 times its unit price."""
    w = World(local_prover="large")
    small = w.bid("small", price=1, proof_time=1_000, max_size=1)
    large = w.bid("large", price=2, proof_time=1_000, max_size=4, capacity=2)
    stored = w.state.book.by_id
    assert not takes(stored[small].bid, ask_of(POW, b"", size=4))
    raw = w.actor("req").ask(now=T0 + 1, max_price=8, max_proof_time=5_000, size=4,
                             inputs=b"difficulty=2\nfour units")  # fmt: skip
    _, effects = w.state.apply(raw, T0 + 1)
    commits = [e for e in effects if isinstance(e, fx.CommitToAsk)]
    ask = commits[0].ask
    assert [(c.bid, c.price) for c in commits] == [(large, 2)]  # unit price in the commit
    assert w.commit("large", ask, large, T0 + 2).accepted
    w.tick(SETTLED + 10)
    assert w.winners(ask) == ["large"]
    assert small not in w.state.no_shows
    view = w.state.view(ask)
    assert (view.prices, view.ask.size) == ((8,), 4)
    # the same bids on an ask of size 1: the cheap one would have won, so staying
    # away makes it a no-show
    one = w.ask("req", now=SETTLED + 20, max_price=8, max_proof_time=5_000)
    assert w.commit("large", one, large, SETTLED + 21).accepted
    w.tick(SETTLED + 20 + WINDOW + SKEW + 10)
    assert small in w.state.no_shows


def test_a_commit_over_its_bid_s_size_or_the_total_cap_is_refused() -> None:
    w = World()
    two = w.bid("two", price=1, proof_time=1_000, max_size=2)
    dear = w.bid("dear", price=3, proof_time=1_000, max_size=4)
    ask = w.ask("req", now=T0 + 1, max_price=8, max_proof_time=5_000, size=4,
                inputs=b"difficulty=2\nfour units")  # fmt: skip
    over_size = w.commit("two", ask, two, T0 + 2)
    assert (over_size.status, over_size.reason) == (Status.REJECT, Reason.COMMIT_OVER_SIZE)
    over_caps = w.commit("dear", ask, dear, T0 + 2)  # 4 x 3 = 12 > 8
    assert (over_caps.status, over_caps.reason) == (Status.REJECT, Reason.COMMIT_OVER_CAPS)
