"""Objective evidence has a consequence in the fold: a key that signed two bids with
one seq (or two commits to one attempt) cannot win in the market for one
`max_lifetime` from the moment its equivocation was complete (penalties.py)."""

from __future__ import annotations

from p2p_market.core.envelope import message_id, parse
from p2p_market.core.penalties import penalised, penalty_windows
from p2p_market.core.settlement import PENALISED
from p2p_market.markets.devnet import Actor
from tests.core.world import SKEW, T0, WINDOW, World, make_market

LIFETIME = 60_000


def test_the_window_starts_at_the_second_twin_in_signed_order() -> None:
    m = make_market()
    a = Actor("twins", m)
    first = a.bid(now=T0 + 50, price=5, proof_time=1_000, seq=1)
    second = a.bid(now=T0 + 10, price=6, proof_time=1_000, seq=1)
    third = a.bid(now=T0 + 90, price=7, proof_time=1_000, seq=1)
    group = [parse(r) for r in (first, second, third)]
    windows = penalty_windows([group], LIFETIME)
    assert windows == {a.public_key: ((T0 + 50, T0 + 50 + LIFETIME),)}
    assert not penalised(windows, a.public_key, T0 + 49)
    assert penalised(windows, a.public_key, T0 + 50)
    assert not penalised(windows, a.public_key, T0 + 50 + LIFETIME)
    assert penalty_windows([[group[0]]], LIFETIME) == {}  # no twin, no evidence


def equivocator_world(twin_at: int) -> tuple[World, bytes, bytes, bytes]:
    """The cheat is the cheapest prover; it signs a bid twin at `twin_at`."""
    w = World(make_market())
    cheat = w.bid("cheat", price=1, proof_time=1_000, capacity=4)
    honest = w.bid("honest", price=9, proof_time=1_000, capacity=4)
    twin = w.actor("cheat").bid(now=twin_at, price=2, proof_time=1_000, seq=1)
    return w, cheat, honest, twin


def test_an_equivocator_that_would_win_loses_to_the_honest_prover() -> None:
    w, cheat, honest, twin = equivocator_world(T0 + 5)
    assert w.send(twin, T0 + 5).reason.value == "equivocation"
    ask = w.ask("req", now=T0 + 100, max_price=10, max_proof_time=5_000)
    assert w.commit("cheat", ask, cheat, T0 + 110).accepted
    assert w.commit("honest", ask, honest, T0 + 120).accepted
    w.tick(T0 + 100 + WINDOW + SKEW)
    assert w.winners(ask) == ["honest"]
    commit_id = next(mid for mid, env in w.state.events[ask].items() if env.signer == w.pk("cheat"))
    assert w.state.settlement().notes[commit_id] == PENALISED


def test_commits_signed_before_the_equivocation_still_count() -> None:
    w, cheat, honest, twin = equivocator_world(T0 + 5_000)
    ask = w.ask("req", now=T0 + 100, max_price=10, max_proof_time=5_000)
    assert w.commit("cheat", ask, cheat, T0 + 110).accepted
    assert w.commit("honest", ask, honest, T0 + 120).accepted
    w.send(twin, T0 + 5_000)  # arrives after the attempt was settled
    w.tick(T0 + 6_000)
    assert w.winners(ask) == ["cheat"]  # signed before the twin: not penalised


def late_twin_history(award: bool) -> tuple[World, list[tuple[int, bytes]], bytes, bytes]:
    """The cheat's twin is signed before its commit; the ask is settled, (awarded,)
    proven and paid before the twin arrives."""
    w, cheat, honest, twin = equivocator_world(T0 + 5)
    req, cheater, other = w.actor("req"), w.actor("cheat"), w.actor("honest")
    ask_raw = req.ask(now=T0 + 100, max_price=10, max_proof_time=5_000, ttl=3_000)
    ask = message_id(ask_raw)
    c1 = cheater.commit(now=T0 + 110, ask=ask, bid=cheat, price=1, proof_time=1_000)
    c2 = other.commit(now=T0 + 120, ask=ask, bid=honest, price=9, proof_time=1_000)
    end = T0 + 100 + WINDOW
    history = [(T0 + 100, ask_raw), (T0 + 110, c1), (T0 + 120, c2)]
    if award:
        history.append((end + SKEW, req.award(now=end + SKEW, ask=ask, commits=[message_id(c1)])))
    proof = cheater.proof(now=end + SKEW + 10, ask=ask, proof=b"p" * 8)
    paid = req.receipt(now=end + SKEW + 20, ask=ask, prover=cheater.public_key, outcome="accepted")
    history += [(end + SKEW + 10, proof), (end + SKEW + 20, paid)]
    return w, history, ask, twin


def states_early_and_late(award: bool) -> tuple[list[World], bytes]:
    """The same history on two nodes: one holds the twin from the start, the other
    gets it after the ask has ended (and, once final, been archived)."""
    worlds = []
    for late in (False, True):
        w, history, ask, twin = late_twin_history(award)
        if not late:
            w.send(twin, T0 + 5)
        for at, raw in history:
            w.send(raw, at)
        w.tick(T0 + 30_000)
        if late:
            if award:
                assert ask in w.state._archive.asks  # archived before the evidence came
            w.send(twin, T0 + 30_000)
        w.tick(T0 + 31_000)
        worlds.append(w)
    return worlds, ask


def test_an_award_is_final_whatever_evidence_comes_later() -> None:
    """Awarded, proven and paid, then archived; the twin (signed before the commit)
    arrives: the award still decides, on this node as on one that had the twin
    first, and the state is the same on both."""
    worlds, ask = states_early_and_late(award=True)
    for w in worlds:
        assert w.winners(ask) == ["cheat"] and w.state_of(ask).value == "proven"
    assert len({w.state.state_hash() for w in worlds}) == 1


def test_without_an_award_the_late_evidence_decides_alike_everywhere() -> None:
    """Not awarded: the tentative winner was the cheat; the evidence, arriving after
    the ask ended, takes the win back on this node as on one that had the twin
    first (the honest prover wins the attempt; the cheat's proof pays nothing)."""
    worlds, ask = states_early_and_late(award=False)
    for w in worlds:
        assert w.winners(ask)[:1] == ["honest"]
    assert len({w.state.state_hash() for w in worlds}) == 1


def invalid_proof_world(proof: bytes) -> tuple[World, bytes]:
    """The cheat wins a first ask and delivers `proof` for it; a second ask follows,
    which the cheat (cheapest) would win again. Returns the world and the second ask."""
    w = World(make_market())  # difficulty 0: any 8-byte nonce is valid
    cheat = w.bid("cheat", price=1, proof_time=1_000, capacity=4)
    honest = w.bid("honest", price=9, proof_time=1_000, capacity=4)
    first = w.ask("req", now=T0 + 100, max_price=10, max_proof_time=5_000, inputs=b"public")
    w.commit("cheat", first, cheat, T0 + 110)
    w.tick(T0 + 100 + WINDOW + SKEW)
    assert w.winners(first) == ["cheat"]
    at = T0 + 100 + WINDOW + SKEW + 10
    verdict = w.send(w.actor("cheat").proof(now=at, ask=first, proof=proof), at)
    assert verdict.accepted  # kept and forwarded either way: the evidence must spread
    second = w.ask("req", now=at + 100, max_price=10, max_proof_time=5_000, inputs=b"again")
    w.commit("cheat", second, cheat, at + 110)
    w.commit("honest", second, honest, at + 120)
    w.tick(at + 100 + WINDOW + SKEW)
    return w, second


def test_a_prover_whose_proof_fails_the_pure_verifier_wins_nothing_after() -> None:
    """A pow proof that is not a nonce meeting the difficulty (here: not 8 bytes) is
    objective evidence: every node can run the check, only the prover signed it."""
    w, second = invalid_proof_world(b"not a nonce")
    assert w.state.invalid_proofs and w.pk("cheat") in w.state.penalties
    assert w.winners(second) == ["honest"]
    notes = w.state.settlement().notes
    cheat_commit = next(m for m, e in w.state.events[second].items() if e.signer == w.pk("cheat"))
    assert notes[cheat_commit] == PENALISED


def test_a_valid_proof_is_no_evidence() -> None:
    w, second = invalid_proof_world(b"8 bytes!")
    assert not w.state.invalid_proofs and not w.state.penalties
    assert w.winners(second) == ["cheat"]


def test_a_proof_for_confidential_inputs_is_not_judged_by_the_fold() -> None:
    """The fold cannot see confidential inputs, so it has no verdict: only the
    requester's (roles/reputation.py)."""
    w = World(make_market())
    cheat = w.bid("cheat", price=1, proof_time=1_000, capacity=4)
    ask = w.ask(
        "req", now=T0 + 100, max_price=10, max_proof_time=5_000, confidential=True,
        inputs_hash=b"\x01" * 32,
    )  # fmt: skip
    w.commit("cheat", ask, cheat, T0 + 110)
    w.tick(T0 + 100 + WINDOW + SKEW)
    at = T0 + 100 + WINDOW + SKEW + 10
    assert w.send(w.actor("cheat").proof(now=at, ask=ask, proof=b"junk"), at).reason.value == "ok"
    assert not w.state.invalid_proofs
