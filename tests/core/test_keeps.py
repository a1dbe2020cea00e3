"""`MarketState.keeps`: asked before `apply_checked`, it says whether the message will
be kept (stored, held as an orphan, kept as evidence), and changes nothing. The node
writes what will be kept to its log first, and refuses a message it could not write
without applying it (node/runtime.py, `Node.admit`): both rest on this."""

from __future__ import annotations

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from p2p_market.core.envelope import parse
from p2p_market.core.state import MarketState
from p2p_market.core.verdict import Reason
from p2p_market.markets.devnet import Actor, default_market

from .test_arrival_order import History, adversarial_histories
from .world import SKEW, T0, World, describe


def fingerprint(state: MarketState) -> tuple[object, ...]:
    """What `keeps` must leave as it was: everything held, derived state, the clock."""
    held = sorted(mid for waiting in state.pending.values() for mid in waiting)
    return state.state_hash(), held, state.now


def kept(state: MarketState, raw: bytes, now: int) -> tuple[bool, bool]:
    """(what `keeps` said, whether `apply_checked` then kept it), checking on the way
    that `keeps` changed nothing."""
    env = parse(raw)
    before = fingerprint(state)
    held_before = state.holds(env.id)
    says = state.keeps(env, now)
    assert fingerprint(state) == before, "keeps changed the state"
    verdict, _ = state.apply_checked(env, now)
    return says, verdict.reason is Reason.ORPHAN or (state.holds(env.id) and not held_before)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=adversarial_histories(), early=st.integers(0, 3))
def test_keeps_foretells_what_apply_keeps(history: History, early: int) -> None:
    """Arrivals of every kind (held back past their expiry or their window, orphans
    before their parents, duplicates); `early` of them also come from the future."""
    cast = history.cast
    names = {a.public_key: a.name for a in [*cast.provers, *cast.requesters, cast.bystander]}
    note("\n".join(f"@{at} {describe(raw, names)}" for at, raw in sorted(history)))
    state = MarketState(cast.market)
    arrivals = sorted(history)
    for at, raw in arrivals[-early:] if early else []:  # the last ones, far too early
        says, did = kept(state, raw, at - 10 * cast.market.skew_ms - 1)
        assert says == did
    for at, raw in arrivals:
        says, did = kept(state, raw, at)
        assert says == did, describe(raw, names)


def test_keeps_for_each_way_of_being_kept_or_refused() -> None:
    w = World()
    r, p = w.actor("r"), w.actor("p")
    ask = r.ask(now=T0, max_price=10, max_proof_time=5_000)
    bid = p.bid(now=T0, price=5, proof_time=1_000)
    cancel = r.cancel(now=T0 + 1, ask=parse(ask).id)
    cases = [
        (p.bid(now=T0 + SKEW + 1_000, price=5, proof_time=1_000, seq=2), T0, False),  # future
        (cancel, T0 + 2, True),  # an orphan: held until its ask comes
        (cancel, T0 + 2, True),  # held again (already in the log: no new row)
        (ask, T0 + 3, True),  # stored, and its cancel with it
        (ask, T0 + 4, False),  # a duplicate
        (p.cancel(now=T0 + 5, ask=parse(ask).id), T0 + 5, False),  # not the ask's owner
        (bid, T0 + 6, True),
        (p.bid(now=T0, price=6, proof_time=1_000), T0 + 7, True),  # a twin: evidence
        (Actor("x", default_market(name="other")).bid(now=T0, price=1, proof_time=1), T0, False),
        (p.bid(now=T0, price=5, proof_time=1_000, seq=3, ttl=1_000), T0 + 2_000, True),  # late
    ]
    for raw, now, expected in cases:
        says, did = kept(w.state, raw, now)
        assert says == did == expected, describe(raw, {})
