"""Archived asks the kept fold watches (core/archive.py): a message that reaches back
past one is taken in by the fold without thawing it when it cannot change it, and
thaws it when it can; an ask archived before the fold was rebuilt is no longer
watched, so such a message thaws it at once. Each case checks the archive against
a fold from scratch that does not trust it (`archive_differences`).

The setting: prover p (one slot) wins ask B with a commit at T0+400, proves it and
is paid; B is archived. p's commit to ask A at T0+300, signed earlier but withheld,
would have held p's only slot at T0+400: it makes p's commit to B over capacity, so
B has no winner.

How far back an award reaches (holdings.py `_award_reach`) is tested at the end,
with the archive un-watched by a rebuild so that only the reach decides."""

from __future__ import annotations

from p2p_market.core.envelope import message_id
from p2p_market.core.lifecycle import AskState
from p2p_market.core.reference import archive_differences, fold_differences

from .world import T0, World


def setting() -> tuple[World, bytes, bytes, bytes, bytes]:
    """The world with B archived, A open, and p's withheld commit to A (and q's)."""
    w = World()
    p_bid = w.bid("p", now=T0, price=5, proof_time=1_000, capacity=1, seq=1)
    q_bid = w.bid("q", now=T0, price=5, proof_time=1_000, capacity=1, seq=1)
    a = w.ask("r0", now=T0, max_price=10, max_proof_time=5_000, ttl=60_000, nonce=1)
    b = w.ask("r1", now=T0 + 200, max_price=10, max_proof_time=5_000, ttl=60_000, nonce=2)
    p_late = w.actor("p").commit(now=T0 + 300, ask=a, bid=p_bid, price=5, proof_time=1_000)
    q_late = w.actor("q").commit(now=T0 + 300, ask=a, bid=q_bid, price=5, proof_time=1_000)
    assert w.commit("p", b, p_bid, now=T0 + 400).accepted
    w.tick(T0 + 1_300)
    assert w.winners(b) == ["p"]
    proven_and_paid(w, b, "p", "r1", T0 + 1_500, T0 + 1_600)
    w.tick(T0 + 5_000)
    assert b in w.state._archive.watched
    return w, a, b, p_late, q_late


def proven_and_paid(
    w: World, ask: bytes, prover: str, requester: str, proof_at: int, paid_at: int
) -> None:
    """The prover delivers its proof of the ask and the requester pays for it."""
    w.send(w.actor(prover).proof(now=proof_at, ask=ask, proof=b"proof-01"), proof_at)
    paid = w.actor(requester).receipt(now=paid_at, ask=ask, prover=w.pk(prover), outcome="accepted")
    assert w.send(paid, paid_at).accepted


def agrees(w: World) -> None:
    assert archive_differences(w.state) == []
    assert fold_differences(w.state) == []


def test_a_message_that_cannot_change_a_watched_ask_leaves_it_archived() -> None:
    w, a, b, _, q_late = setting()
    rebuilt = w.state.refolds
    assert w.send(q_late, T0 + 5_100).accepted  # q held no slot B's fold looked at
    w.tick(T0 + 5_200)
    assert w.winners(a) == ["q"]
    assert b in w.state._archive and w.state.refolds == rebuilt  # not thawed, no rebuild
    agrees(w)


def test_a_message_that_changes_a_watched_ask_thaws_it() -> None:
    w, a, b, p_late, _ = setting()
    assert w.send(p_late, T0 + 5_100).accepted
    w.tick(T0 + 5_200)
    assert b not in w.state._archive
    assert w.winners(a) == ["p"]
    assert w.state_of(b) is AskState.OPEN and w.winners(b) == []
    agrees(w)


def test_an_ask_archived_before_a_rebuild_thaws_at_once() -> None:
    w, a, b, p_late, _ = setting()
    # q equivocates after B's last activity: the penalties change and the fold is
    # rebuilt from scratch, without B's capacity checks
    rebuilt = w.state.refolds
    for price in (6, 7):
        twin = w.actor("q").bid(now=T0 + 4_000, price=price, proof_time=1_000, capacity=1, seq=2)
        w.send(twin, T0 + 5_050)
    w.tick(T0 + 5_060)
    assert w.state.refolds > rebuilt
    assert b in w.state._archive and b not in w.state._archive.watched
    assert "thawed_by_commit" not in w.state.fold_stats()
    assert w.send(p_late, T0 + 5_100).accepted
    assert w.state.fold_stats()["thawed_by_commit"] == 1  # counted by the kind that thawed
    w.tick(T0 + 5_200)
    assert w.state_of(b) is AskState.OPEN and w.winners(b) == []
    agrees(w)
    assert message_id(p_late) in w.state.events[a]


def rebuild_after(w: World, t: int) -> None:
    """z equivocates at `t`: the penalties change and the fold is rebuilt from
    scratch, so no archived ask is watched any more."""
    rebuilt = w.state.refolds
    for price in (6, 7):
        twin = w.actor("z").bid(now=t, price=price, proof_time=1_000, capacity=1, seq=2)
        w.send(twin, w.state.now + 10)
    w.tick(w.state.now + 10)
    assert w.state.refolds > rebuilt and not w.state._archive.watched


def award_nothing(w: World, a: bytes, *, attempt: int, signed_at: int, sent_at: int) -> None:
    """A's requester awards no commit of A's `attempt`, closing the earlier ones."""
    award = w.actor("r0").award(now=signed_at, ask=a, commits=[], attempt=attempt)
    assert w.send(award, sent_at).accepted
    w.tick(sent_at + 100)


def assert_b_served_after_all(w: World, a: bytes, b: bytes) -> None:
    """p's slot at A was voided: B was thawed and p wins it, as a full fold says."""
    assert b not in w.state._archive
    assert w.winners(a) == [] and w.winners(b) == ["p"]
    agrees(w)


def test_an_award_thaws_from_the_first_attempt_of_its_round_that_holds_a_commit() -> None:
    """p (one slot) commits to A's attempt 0 and wins it for now, so its commit to B
    is over capacity and B expires unserved. The requester's award of A's attempt
    5 closes attempt 0 with no winner: p's slot was free, B is served after all.
    The award is signed at attempt 5's end, after B's last activity; it must still
    thaw B, because it reaches back to attempt 0's end."""
    w = World()
    p_bid = w.bid("p", now=T0, price=5, proof_time=1_000, capacity=1, seq=1)
    w.bid("z", now=T0, price=5, proof_time=1_000, capacity=1, seq=1)
    a = w.ask("r0", now=T0, max_price=10, max_proof_time=5_000, ttl=60_000, nonce=1)
    assert w.commit("p", a, p_bid, now=T0 + 300).accepted
    b = w.ask("r1", now=T0 + 1_200, max_price=10, max_proof_time=5_000, ttl=3_000, nonce=2)
    assert w.commit("p", b, p_bid, now=T0 + 1_400).accepted
    w.tick(T0 + 6_500)
    assert w.winners(a) == ["p"] and w.state_of(b) is AskState.EXPIRED
    assert b in w.state._archive
    rebuild_after(w, T0 + 5_000)
    award_nothing(w, a, attempt=5, signed_at=T0 + 6_000, sent_at=T0 + 6_600)
    assert_b_served_after_all(w, a, b)


def test_an_award_does_not_thaw_past_attempts_without_commits() -> None:
    """The same award when A's earlier attempts hold no commit: nothing before
    attempt 5's end changes, and B, finished before it, stays archived."""
    w = World()
    p_bid = w.bid("p", now=T0, price=5, proof_time=1_000, capacity=1, seq=1)
    w.bid("z", now=T0, price=5, proof_time=1_000, capacity=1, seq=1)
    a = w.ask("r0", now=T0, max_price=10, max_proof_time=5_000, ttl=60_000, nonce=1)
    b = w.ask("r1", now=T0 + 1_200, max_price=10, max_proof_time=5_000, ttl=3_000, nonce=2)
    assert w.commit("p", b, p_bid, now=T0 + 1_400).accepted
    w.tick(T0 + 2_300)
    proven_and_paid(w, b, "p", "r1", T0 + 2_500, T0 + 2_600)
    w.tick(T0 + 6_500)
    assert b in w.state._archive
    rebuild_after(w, T0 + 5_000)
    rebuilt = w.state.refolds
    award = w.actor("r0").award(now=T0 + 6_000, ask=a, commits=[], attempt=5)
    assert w.send(award, T0 + 6_600).accepted
    w.tick(T0 + 6_700)
    assert b in w.state._archive and w.winners(b) == ["p"]
    assert w.state.refolds == rebuilt  # B was not thawed (a thaw rebuilds the fold)
    agrees(w)


def test_an_award_thaws_from_the_earliest_commit_it_voids() -> None:
    """An award of A's attempt 4 closes attempts 0-3 with no winner, so p's commit
    to attempt 0, signed at T0+100, never held a slot at all. B (p committed to it
    at T0+200, over capacity then) was served by q and finished at T0+1 020, before
    A's first window ended (T0+1 050): the award must still thaw B, because the
    slot it takes away began at the commit's own time, not at its window's end."""
    w = World()
    p_bid = w.bid("p", now=T0, price=4, proof_time=900, capacity=1, seq=1)
    q_bid = w.bid("q", now=T0, price=5, proof_time=1_000, capacity=1, seq=1)
    w.bid("z", now=T0, price=5, proof_time=1_000, capacity=1, seq=1)
    b = w.ask("r1", now=T0, max_price=10, max_proof_time=5_000, ttl=60_000, nonce=2)
    a = w.ask("r0", now=T0 + 50, max_price=10, max_proof_time=5_000, ttl=60_000, nonce=1)
    assert w.commit("p", a, p_bid, now=T0 + 100).accepted
    assert w.commit("p", b, p_bid, now=T0 + 200).accepted  # over capacity: A holds p
    assert w.commit("q", b, q_bid, now=T0 + 200).accepted
    w.tick(T0 + 1_000)
    assert w.winners(b) == ["q"]
    proven_and_paid(w, b, "q", "r1", T0 + 1_010, T0 + 1_020)
    w.tick(T0 + 4_800)
    assert w.winners(a) == ["p"] and b in w.state._archive
    rebuild_after(w, T0 + 4_900)
    award_nothing(w, a, attempt=4, signed_at=T0 + 5_050, sent_at=T0 + 5_100)
    assert_b_served_after_all(w, a, b)


def ended_at_a_check(proof_after_commit: bool) -> tuple[World, bytes, bytes, bytes]:
    """p (one slot) wins ask A and proves it at T0+1 500; at that very millisecond p
    commits to ask B. Whether A's slot still counts at that check depends on which
    of the two messages the fold's order puts first (by message id, as both are
    messages at one time): the proof's content is chosen to put it where asked.
    Returns the world, A, B and the requester's award of A's attempt 0 to q, not
    yet sent."""
    w = World()
    p_bid = w.bid("p", now=T0, price=4, proof_time=900, capacity=1, seq=1)
    q_bid = w.bid("q", now=T0, price=5, proof_time=1_000, capacity=1, seq=1)
    a = w.ask("r0", now=T0, max_price=10, max_proof_time=5_000, ttl=60_000, nonce=1)
    b = w.ask("r1", now=T0 + 1_000, max_price=10, max_proof_time=5_000, ttl=60_000, nonce=2)
    assert w.commit("p", a, p_bid, now=T0 + 100).accepted
    q_commit = w.actor("q").commit(now=T0 + 200, ask=a, bid=q_bid, price=5, proof_time=1_000)
    assert w.send(q_commit, T0 + 200).accepted
    w.tick(T0 + 1_000)
    assert w.winners(a) == ["p"]
    at = T0 + 1_500
    commit = w.actor("p").commit(now=at, ask=b, bid=p_bid, price=4, proof_time=900)
    for n in range(100):
        proof = w.actor("p").proof(now=at, ask=a, proof=b"proof-%02d" % n)
        if (message_id(proof) > message_id(commit)) == proof_after_commit:
            break
    assert w.send(proof, at).accepted and w.send(commit, at).accepted
    award = w.actor("r0").award(now=T0 + 1_600, ask=a, commits=[message_id(q_commit)])
    return w, a, b, award


def test_a_slot_ended_after_a_check_at_its_end_counted_there() -> None:
    """The proof comes after p's commit to B: A's slot counted at that check, so
    p's commit was over capacity. The award takes A's slot from p (it ends at A's
    window end now): the check flips, and B's commit becomes valid and wins."""
    w, a, b, award = ended_at_a_check(proof_after_commit=True)
    assert w.send(award, T0 + 1_700).accepted
    w.tick(T0 + 2_100)
    assert w.winners(a) == ["q"] and w.winners(b) == ["p"]
    agrees(w)


def test_a_slot_ended_before_a_check_at_its_end_did_not_count_there() -> None:
    """The proof comes first: A's slot no longer counted at p's commit to B, which
    was valid, and the award's change to A's slot changes nothing for B: the fold
    takes it in without a rebuild."""
    w, a, b, award = ended_at_a_check(proof_after_commit=False)
    rebuilt = w.state.refolds
    assert w.send(award, T0 + 1_700).accepted
    w.tick(T0 + 2_100)
    assert w.winners(a) == ["q"] and w.winners(b) == ["p"]
    assert w.state.refolds == rebuilt
    agrees(w)
