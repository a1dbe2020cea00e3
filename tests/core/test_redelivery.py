"""A prover may deliver (or attest) more than once for one ask: a proof does not name
its slot, and a reorg can take a slot away after the prover did the work.

Found by the simulator (mixed-faults, 50 nodes, seed 82): an honest prover settled
as a winner, proved, was reorganised out by a late better commit, won a later round
of the same ask, and proved again. With proofs keyed per (signer, ask) the second
proof "equivocated" with the first (which counts, being signed earlier), so the
prover was timed out and excluded for work it did twice, and an ask with enough
honest provers expired unproven. Proofs and attestations never equivocate now: the
fold takes, in signed order, the first that can take effect.
"""

from __future__ import annotations

import itertools

from p2p_market.core.envelope import message_id, parse
from p2p_market.core.lifecycle import AskState, SlotState
from p2p_market.core.messages import Proof
from p2p_market.core.state import MarketState
from p2p_market.core.verdict import Reason

from .world import SKEW, T0, WINDOW, World

SETTLED = T0 + WINDOW + SKEW + 1


def _reorganised_away(w: World) -> tuple[bytes, list[bytes], int]:
    """dear wins round 0 alone, proves, then cheap's late commit (signed inside the
    window) takes the slot; cheap never proves and is timed out, and dear wins the
    new round. Returns the ask id, every envelope in signed order, and when dear
    won the new round."""
    cheap, dear, req = w.actor("cheap"), w.actor("dear"), w.actor("requester")
    raws = [
        cheap.bid(now=T0, price=10, proof_time=1_000),
        dear.bid(now=T0, price=50, proof_time=1_000),
        req.ask(now=T0, max_price=100, max_proof_time=5_000),
    ]
    cheap_bid, dear_bid, ask = (message_id(r) for r in raws)
    raws.append(dear.commit(now=T0 + 10, ask=ask, bid=dear_bid, price=50, proof_time=1_000))
    raws.append(cheap.commit(now=T0 + 20, ask=ask, bid=cheap_bid, price=10, proof_time=1_000))
    raws.append(dear.proof(now=SETTLED + 100, ask=ask, proof=b"p" * 8))  # for the lost slot
    deadline = T0 + WINDOW + SKEW + 1_000  # cheap's: window end + skew + proof_time
    timeout = req.receipt(now=deadline + 5, ask=ask, prover=cheap.public_key, outcome="timed_out")
    raws.append(timeout)
    raws.append(
        dear.commit(
            now=deadline + 10,
            ask=ask,
            bid=dear_bid,
            price=50,
            proof_time=1_000,
            round=message_id(timeout),
        )
    )
    won = deadline + 5 + WINDOW + SKEW + 1
    raws.append(dear.proof(now=won + 100, ask=ask, proof=b"p" * 8))  # for the slot it holds
    raws.append(req.receipt(now=won + 200, ask=ask, prover=dear.public_key, outcome="accepted"))
    return ask, raws, won


def test_a_prover_reorganised_away_can_deliver_for_its_later_slot() -> None:
    w = World()
    ask, raws, won = _reorganised_away(w)
    # as the prover's own node saw it: dear settled as the winner, then the reorg
    for raw in raws[:4]:
        assert w.send(raw, T0 + 30).accepted
    w.tick(SETTLED)
    assert w.winners(ask) == ["dear"]
    assert w.send(raws[4], SETTLED + 50).accepted  # the late commit: a reorg
    assert w.state.reorgs == 1 and w.winners(ask) == ["cheap"]
    first_proof = raws[5]
    assert w.send(first_proof, SETTLED + 100).accepted  # stored, without effect
    assert w.state.settlement().notes[message_id(first_proof)] == "not a winner of this ask"
    for raw in raws[6:8]:
        assert w.send(raw, won - 1).accepted
    w.tick(won)
    assert w.winners(ask) == ["cheap", "dear"]
    second_proof = raws[8]
    verdict = w.send(second_proof, won + 100)
    assert verdict.accepted, verdict  # not an equivocation with the first proof
    assert w.state.view(ask).slot_states[-1] is SlotState.DELIVERED
    assert w.send(raws[9], won + 200).accepted
    view = w.state.view(ask)
    assert view.state is AskState.PROVEN
    assert view.slot_states == (SlotState.TIMED_OUT, SlotState.ACCEPTED)


def test_the_first_effective_proof_counts_in_any_order() -> None:
    """Two proofs from one winner for one slot: the earlier-signed one delivers, the
    other is kept without effect, whichever arrived first."""
    w = World()
    bid = w.bid("p", price=5, proof_time=2_000)
    ask = w.ask("r", max_price=10, max_proof_time=5_000)
    w.commit("p", ask, bid, T0 + 10)
    setup = [env.raw for env in w.state.stored_envelopes()]
    p = w.actor("p")
    proofs = [p.proof(now=SETTLED + 100, ask=ask, proof=b"proof-01")]
    proofs.append(p.proof(now=SETTLED + 200, ask=ask, proof=b"proof-02"))
    first = parse(proofs[0]).message
    assert isinstance(first, Proof)
    hashes = set()
    for order in itertools.permutations(proofs):
        st = MarketState(w.market)
        for raw in setup:
            st.apply(raw, T0 + 20)
        verdicts = [st.apply(raw, SETTLED + 300)[0] for raw in order]
        assert [v.reason for v in verdicts] == [Reason.OK, Reason.OK]
        assert st.check_invariants() == []
        (slot,) = st.settlement().runs[ask].slots.values()
        assert (slot.state, slot.proof_hash) == (SlotState.DELIVERED, first.proof_hash)
        hashes.add(st.state_hash())
    assert len(hashes) == 1
