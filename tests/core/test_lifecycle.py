"""The ask lifecycle end to end on one state, without any network."""

from __future__ import annotations

from p2p_market.core import effects as fx
from p2p_market.core.envelope import message_id
from p2p_market.core.lifecycle import TRANSITIONS, AskState, Event, next_state
from p2p_market.core.messages import sha256
from p2p_market.core.verdict import Reason, Status

from .world import SKEW, STAGE, T0, WINDOW, World

SETTLED = T0 + WINDOW + SKEW + 1


def two_provers(w: World) -> tuple[bytes, bytes]:
    cheap = w.bid("cheap-slow", price=10, proof_time=9_000, capacity=4)
    fast = w.bid("fast-dear", price=50, proof_time=1_000, capacity=4)
    return cheap, fast


def test_prefer_cost_and_prefer_time_pick_different_winners() -> None:
    w = World()
    cheap, fast = two_provers(w)
    by_cost = w.ask("req", max_price=100, max_proof_time=10_000, prefer="cost")
    by_time = w.ask("req", max_price=100, max_proof_time=10_000, prefer="time")
    for ask in (by_cost, by_time):
        assert w.commit("cheap-slow", ask, cheap, T0 + 10).accepted
        assert w.commit("fast-dear", ask, fast, T0 + 20).accepted
    w.tick(SETTLED)
    assert w.winners(by_cost) == ["cheap-slow"]
    assert w.winners(by_time) == ["fast-dear"]
    assert w.state_of(by_cost) is AskState.ASSIGNED


def test_caps_are_respected_even_when_a_prover_commits_over_them() -> None:
    w = World()
    cheap, fast = two_provers(w)
    ask = w.ask("req", max_price=40, max_proof_time=10_000, prefer="time")
    verdict = w.commit("fast-dear", ask, fast, T0 + 10)
    assert verdict.reason is Reason.COMMIT_OVER_CAPS
    assert w.commit("cheap-slow", ask, cheap, T0 + 20).accepted
    w.tick(SETTLED)
    assert w.winners(ask) == ["cheap-slow"]


def test_full_happy_path_to_proven_with_receipt() -> None:
    w = World()
    cheap, _ = two_provers(w)
    ask = w.ask("req", max_price=100, max_proof_time=10_000)
    w.commit("cheap-slow", ask, cheap, T0 + 10)
    effects = w.tick(SETTLED)
    assert any(isinstance(e, fx.Assigned) and e.ask == ask for e in effects)
    assert w.send(
        w.actor("cheap-slow").proof(now=T0 + 5_000, ask=ask, proof=b"p" * 8), T0 + 5_000
    ).accepted
    assert any(isinstance(e, fx.ProofDelivered) for e in w.effects)
    w.send(
        w.actor("req").receipt(
            now=T0 + 5_100, ask=ask, prover=w.pk("cheap-slow"), outcome="accepted"
        ),
        T0 + 5_100,
    )
    assert w.state_of(ask) is AskState.PROVEN
    assert w.state.view(ask).accepted == (w.pk("cheap-slow"),)


def test_timeout_opens_next_round_without_the_failed_prover() -> None:
    w = World()
    cheap, fast = two_provers(w)
    ask = w.ask("req", max_price=100, max_proof_time=10_000)
    w.commit("cheap-slow", ask, cheap, T0 + 10)
    w.commit("fast-dear", ask, fast, T0 + 20)
    w.tick(SETTLED)
    assert w.winners(ask) == ["cheap-slow"]
    deadline = T0 + WINDOW + SKEW + 9_000
    effects = w.tick(deadline + 1)
    assert any(isinstance(e, fx.DeadlinePassed) for e in effects)
    early = w.actor("req").receipt(
        now=deadline - 5, ask=ask, prover=w.pk("cheap-slow"), outcome="timed_out"
    )
    w.send(early, deadline + 2)  # stored, but a premature timeout changes nothing
    assert w.state_of(ask) is AskState.ASSIGNED
    timeout = w.actor("req").receipt(
        now=deadline + 10, ask=ask, prover=w.pk("cheap-slow"), outcome="timed_out"
    )
    assert w.send(timeout, deadline + 10).accepted  # the premature one does not block it
    assert w.state_of(ask) is AskState.OPEN
    late_accept = w.actor("req").receipt(
        now=deadline + 20, ask=ask, prover=w.pk("cheap-slow"), outcome="accepted"
    )
    # The requester pays after all: a payment only adds, whatever it said before
    # (protocols/market-v1.md §12); the ask is proven, the round stays without winner.
    w.send(late_accept, deadline + 20)
    assert w.state.view(ask).slot_states[0].value == "accepted"
    assert w.state_of(ask) is AskState.PROVEN
    again = w.commit("fast-dear", ask, fast, deadline + 30, round=message_id(timeout))
    assert again.accepted  # admitted; the fold gives it no effect
    w.tick(deadline + 10 + WINDOW + SKEW + 1)
    assert w.winners(ask) == ["cheap-slow"]
    assert w.state.view(ask).paid == w.state.view(ask).prices[0]


def test_invalid_proof_is_reassigned_to_the_next_prover() -> None:
    w = World()
    cheap, fast = two_provers(w)
    ask = w.ask("req", max_price=100, max_proof_time=10_000)
    w.commit("cheap-slow", ask, cheap, T0 + 10)
    w.tick(SETTLED)
    t = T0 + 3_000
    w.send(w.actor("cheap-slow").proof(now=t, ask=ask, proof=b"badproof"), t)
    bad = w.actor("req").receipt(now=t + 100, ask=ask, prover=w.pk("cheap-slow"), outcome="invalid")
    w.send(bad, t + 100)
    assert w.state_of(ask) is AskState.OPEN
    round_id = message_id(bad)
    # the failed prover may not come back; the other one may, in the new round
    again = w.commit("cheap-slow", ask, cheap, t + 200, round=round_id)
    assert again.accepted  # stored: validity is the fold's business, not admission's
    w.commit("fast-dear", ask, fast, t + 210, round=round_id)
    w.tick(t + 100 + WINDOW + SKEW + 1)
    assert w.winners(ask) == ["cheap-slow", "fast-dear"]
    assert w.state_of(ask) is AskState.ASSIGNED
    notes = w.state.settlement().notes
    assert "prover excluded from this ask" in notes.values()


def test_cancel_before_assignment_wins_and_after_is_refused() -> None:
    w = World()
    cheap, _ = two_provers(w)
    early = w.ask("req", max_price=100, max_proof_time=10_000)
    late = w.ask("req", max_price=100, max_proof_time=10_000)
    w.commit("cheap-slow", early, cheap, T0 + 10)
    assert w.send(w.actor("req").cancel(now=T0 + 500, ask=early), T0 + 500).accepted
    w.commit("cheap-slow", late, cheap, T0 + 10)
    w.tick(SETTLED)
    assert w.state_of(early) is AskState.CANCELLED
    assert w.winners(early) == []
    refused = w.send(w.actor("req").cancel(now=SETTLED + 10, ask=late), SETTLED + 10)
    assert (refused.status, refused.reason) == (Status.IGNORE, Reason.CANCEL_AFTER_ASSIGNMENT)
    assert w.state_of(late) is AskState.ASSIGNED
    other = w.send(w.actor("mallory").cancel(now=T0 + 20, ask=late), T0 + 20)
    assert other.reason is Reason.NOT_ASK_OWNER


def test_replicas_pick_distinct_provers() -> None:
    w = World()
    bids = {name: w.bid(name, price=10 + i, proof_time=1_000) for i, name in enumerate("abc")}
    ask = w.ask("req", max_price=100, max_proof_time=10_000, replicas=2)
    for i, (name, bid) in enumerate(bids.items()):
        w.commit(name, ask, bid, T0 + 10 + i)
    w.tick(SETTLED)
    assert sorted(w.winners(ask)) == ["a", "b"]
    for name in ("a", "b"):
        w.send(
            w.actor("req").receipt(now=T0 + 3_000, ask=ask, prover=w.pk(name), outcome="accepted"),
            T0 + 3_000,
        )
    assert w.state_of(ask) is AskState.PROVEN


def test_capacity_limits_concurrent_assignments() -> None:
    w = World()
    solo = w.bid("solo", price=10, proof_time=5_000, capacity=1)
    asks = [w.ask("req", max_price=100, max_proof_time=10_000) for _ in range(2)]
    w.commit("solo", asks[0], solo, T0 + 10)
    w.commit("solo", asks[1], solo, T0 + 20)  # a second open commit over capacity 1
    w.tick(SETTLED)
    assert w.winners(asks[0]) == ["solo"]
    assert w.winners(asks[1]) == []
    assert "over capacity" in w.state.settlement().notes.values()


def test_expired_ask_is_never_assigned() -> None:
    w = World()
    cheap, _ = two_provers(w)
    ask = w.ask("req", max_price=100, max_proof_time=10_000, ttl=500)
    late = w.commit("cheap-slow", ask, cheap, T0 + 600)
    assert late.accepted  # admission can't know; the fold refuses it
    w.tick(SETTLED)
    assert w.state_of(ask) is AskState.EXPIRED
    assert w.winners(ask) == []


def test_invalid_inputs_attestation_and_dispute() -> None:
    w = World()
    cheap, _fast = two_provers(w)
    ask = w.ask("req", max_price=100, max_proof_time=10_000)
    w.commit("cheap-slow", ask, cheap, T0 + 10)
    w.tick(SETTLED)
    w.send(
        w.actor("cheap-slow").invalid_inputs(now=SETTLED + 5, ask=ask, reason="bad"), SETTLED + 5
    )
    assert w.state_of(ask) is AskState.INVALID_INPUTS
    dispute = w.actor("req").receipt(
        now=SETTLED + 50, ask=ask, prover=w.pk("cheap-slow"), outcome="invalid"
    )
    w.send(dispute, SETTLED + 50)
    assert w.state_of(ask) is AskState.OPEN


def test_local_prover_commits_at_once_when_in_top_k_and_staged_otherwise() -> None:
    w = World(local_prover="second")
    w.bid("first", price=10, proof_time=1_000)
    mine = w.bid("second", price=20, proof_time=1_000)
    ask_raw = w.actor("req").ask(now=T0, max_price=100, max_proof_time=10_000)
    _, effects = w.state.apply(ask_raw, T0)
    assert not any(isinstance(e, fx.CommitToAsk) for e in effects)  # rank 1 of k=1: wait
    assert not any(isinstance(e, fx.CommitToAsk) for e in w.tick(T0 + STAGE - 1))
    effects = w.tick(T0 + STAGE)  # nobody better committed within one stage: step in
    commits = [e for e in effects if isinstance(e, fx.CommitToAsk)]
    assert len(commits) == 1 and commits[0].bid == mine
    assert w.tick(T0 + STAGE + 1) == []  # told once


def test_local_prover_stands_back_when_a_better_commit_arrived() -> None:
    w = World(local_prover="second")
    first = w.bid("first", price=10, proof_time=1_000)
    w.bid("second", price=20, proof_time=1_000)
    ask = w.ask("req", max_price=100, max_proof_time=10_000)
    w.commit("first", ask, first, T0 + 50)
    assert not any(isinstance(e, fx.CommitToAsk) for e in w.tick(T0 + STAGE))


def test_reorg_is_counted_when_a_late_better_commit_arrives() -> None:
    w = World()
    cheap, fast = two_provers(w)
    ask = w.ask("req", max_price=100, max_proof_time=10_000)
    w.commit("fast-dear", ask, fast, T0 + 10)
    w.tick(SETTLED)
    assert w.winners(ask) == ["fast-dear"] and w.state.reorgs == 0
    w.commit("cheap-slow", ask, cheap, T0 + 20)  # signed in the window, arrived late
    w.tick(SETTLED + 1)
    assert w.winners(ask) == ["cheap-slow"]
    assert w.state.reorgs == 1
    assert any(isinstance(e, fx.Reorg) for e in w.effects)


def test_table_is_closed_and_terminal_states_absorb() -> None:
    for state, moves in TRANSITIONS.items():
        for event, target in moves.items():
            assert target in TRANSITIONS, (state, event)
    for terminal in (AskState.PROVEN, AskState.CANCELLED, AskState.EXPIRED):
        assert all(next_state(terminal, e) is None for e in Event)
    assert next_state(AskState.ASSIGNED, Event.CANCEL) is None


def judged(effects: list[fx.Effect]) -> list[tuple[str, str, int]]:
    """The SlotJudged effects told: (prover's name, outcome, price)."""
    names = {pk: n for n, pk in (("cheap-slow", CHEAP), ("fast-dear", FAST))}
    return [
        (names[e.prover], e.outcome.value, e.price) for e in effects if isinstance(e, fx.SlotJudged)
    ]


CHEAP, FAST = (World().pk(n) for n in ("cheap-slow", "fast-dear"))


def test_receipts_are_told_once_per_slot_and_accepted_pays_price_times_size() -> None:
    """SlotJudged reports what the requester's receipt made of a slot, once: an
    accepted slot pays the winner its price per unit times the ask's size (pay-as-bid,
    protocols/market-v1.md §11); an invalid or timed-out one pays nothing, and a
    payment after a failure only adds (§10)."""
    w = World()
    cheap = w.bid("cheap-slow", price=10, proof_time=9_000, capacity=4, max_size=4)
    fast = w.bid("fast-dear", price=50, proof_time=1_000, capacity=4, max_size=4)
    # confidential: no node reads the size off the inputs, so any size will do
    secret = sha256(b"inputs")
    ask = w.ask(
        "req", max_price=200, max_proof_time=10_000, size=3, confidential=True, inputs_hash=secret
    )
    w.commit("cheap-slow", ask, cheap, T0 + 10)
    w.commit("fast-dear", ask, fast, T0 + 20)
    w.tick(SETTLED)
    deadline = T0 + WINDOW + SKEW + 9_000
    assert judged(w.tick(deadline + 1)) == []  # a deadline is not a receipt
    timeout = w.actor("req").receipt(now=deadline + 10, ask=ask, prover=CHEAP, outcome="timed_out")
    w.send(timeout, deadline + 10)
    assert judged(w.effects) == [("cheap-slow", "timed_out", 30)]
    t = deadline + 20
    w.commit("fast-dear", ask, fast, t, round=message_id(timeout))
    w.tick(deadline + 10 + WINDOW + SKEW + 1)
    assert w.winners(ask) == ["cheap-slow", "fast-dear"]
    t = deadline + 10 + WINDOW + SKEW + 100
    w.send(w.actor("fast-dear").proof(now=t, ask=ask, proof=b"p" * 8), t)
    w.send(w.actor("req").receipt(now=t + 1, ask=ask, prover=FAST, outcome="invalid"), t + 1)
    w.send(w.actor("req").receipt(now=t + 2, ask=ask, prover=FAST, outcome="accepted"), t + 2)
    w.tick(t + 60_000)
    assert judged(w.effects) == [
        ("cheap-slow", "timed_out", 30),
        ("fast-dear", "invalid", 150),
        ("fast-dear", "accepted", 150),
    ]
    assert w.state.view(ask).paid == 150


def test_a_declined_suggestion_frees_its_slot_and_changes_no_state() -> None:
    """A capacity-1 prover told to commit that does not (it paused, or its node
    refused the commit) must not stay full until the ask is pruned, days later: it
    declines, and the next ask it would win gets its commit."""
    w = World(local_prover="solo")
    me = w.pk("solo")
    w.bid("solo", price=10, proof_time=1_000, capacity=1)
    first_raw = w.actor("req").ask(now=T0, max_price=100, max_proof_time=10_000)
    _, effects = w.state.apply(first_raw, T0)
    told = [e for e in effects if isinstance(e, fx.CommitToAsk)]
    assert len(told) == 1 and w.state.free_slots(me, T0 + 1) == 0
    later = T0 + 10 * WINDOW  # long after the first ask's window: still held
    assert w.state.free_slots(me, later) == 0
    second = w.actor("req").ask(now=later, max_price=100, max_proof_time=10_000, nonce=2)
    _, effects = w.state.apply(second, later)
    assert not any(isinstance(e, fx.CommitToAsk) for e in effects)  # full: the bug

    before = w.state.state_hash()
    w.state.decline(told[0].ask, told[0].round, told[0].attempt)
    assert w.state.state_hash() == before and w.state.check_invariants() == []
    assert w.state.free_slots(me, later) == 1
    third = w.actor("req").ask(now=later + 1, max_price=100, max_proof_time=10_000, nonce=3)
    _, effects = w.state.apply(third, later + 1)
    assert [e.ask for e in effects if isinstance(e, fx.CommitToAsk)] == [message_id(third)]
    assert not any(  # declined: not suggested again
        isinstance(e, fx.CommitToAsk) and e.ask == told[0].ask for e in w.tick(later + 2)
    )
