"""A requester's reputation of provers: pure rules, then whole nodes on 127.0.0.1.

The guarantee: a prover that keeps failing one requester (invalid proofs only the
requester can judge: they travel directly) stops winning that requester's asks,
although it is the cheapest, because the requester names it in the signed `deny`
list of its next asks. An invalid proof every node can judge (inline, public inputs,
a pure verifier) does more: it bars its prover market-wide (core/penalties.py)."""

from __future__ import annotations

from pathlib import Path

import trio

from p2p_market.core.lifecycle import AskState
from p2p_market.core.messages import Ask, Outcome
from p2p_market.roles.reputation import Reputation
from tests.roles.harness import MID, BadBigProofs, BadProofs, market, wait_state

P, Q = b"p" * 32, b"q" * 32


def test_failures_that_outnumber_successes_deny_a_prover() -> None:
    r = Reputation(deny_after=2, memory_ms=1_000)
    r.record(P, Outcome.TIMED_OUT, 0)
    assert r.denied(0) == ()  # one failure is not enough
    r.record(P, Outcome.INVALID, 10)
    assert r.denied(10) == (P,)
    r.record(P, Outcome.ACCEPTED, 20)
    r.record(P, Outcome.ACCEPTED, 30)
    assert r.denied(30) == ()  # as many successes as failures
    r.record(Q, Outcome.INVALID, 40)
    r.record(Q, Outcome.INVALID, 50)
    assert r.denied(50) == (Q,)
    assert r.denied(1_045) == ()  # forgotten after memory_ms
    assert r.snapshot(1_045) == {
        Q.hex(): {"accepted": 0, "timed_out": 0, "invalid": 1, "denied": False}
    }


def test_the_deny_list_is_added_to_an_ask_but_never_to_an_allow_list() -> None:
    r = Reputation(deny_after=1)
    r.record(P, Outcome.INVALID, 0)
    assert r.apply({"deny": [Q.hex()]}, 1)["deny"] == [Q.hex(), P.hex()]
    assert r.apply({"allow": [P.hex()]}, 1) == {"allow": [P.hex()]}


async def test_a_prover_that_keeps_failing_stops_winning(tmp_path: Path) -> None:
    offers = {"liar": (10, 5_000), "honest": (40, 5_000)}
    async with market(tmp_path, offers, backends={"liar": BadBigProofs()}) as m:
        liar, honest = m.provers["liar"].me, m.provers["honest"].me
        fields = {"market": MID.hex(), "max_price": 100, "max_proof_time": 10_000}
        for _ in range(2):  # the liar is cheapest: it wins, fails, the honest one proves
            ask = await m.requester.request(fields, b"inputs")
            with trio.fail_after(40):
                await m.requester.wait(ask)
            await wait_state(m, ask, AskState.PROVEN)
            view = m.relay.states[MID].view(ask)
            assert view.winners == (liar, honest)
        status = m.requester.node.status()
        assert status["reputation"][liar.hex()] == {
            "accepted": 0, "timed_out": 0, "invalid": 2, "denied": True,
        }  # fmt: skip
        assert status["reputation"][honest.hex()]["accepted"] == 2
        book = m.requester.node.book(MID.hex())
        assert [b["reputation"]["denied"] for b in book["bids"] if b["prover"] == liar.hex()] == [
            True
        ]
        ask = await m.requester.request(fields, b"inputs")
        env = m.requester.node.states[MID].asks[ask]
        assert isinstance(env.message, Ask) and env.message.deny == (liar,)
        with trio.fail_after(40):
            done = await m.requester.wait(ask)
        assert list(done.proofs) == [honest]
        await wait_state(m, ask, AskState.PROVEN)
        view = m.relay.states[MID].view(ask)
        assert view.winners == (honest,)  # the liar never won it: no failed slot first
        assert [s.value for s in view.slot_states] == ["accepted"]


async def test_an_invalid_proof_anyone_can_check_bars_its_prover_everywhere(
    tmp_path: Path,
) -> None:
    """The liar (cheapest) wins the first ask and delivers an inline pow proof that is
    not one: every node holds the evidence, so on the next ask the liar's commit
    loses on every node, before any requester has denied it."""
    offers = {"liar": (10, 5_000), "honest": (40, 5_000)}
    async with market(tmp_path, offers, backends={"liar": BadProofs()}) as m:
        liar, honest = m.provers["liar"].me, m.provers["honest"].me
        fields = {"market": MID.hex(), "max_price": 100, "max_proof_time": 10_000}
        ask = await m.requester.request(fields, b"inputs")
        with trio.fail_after(40):
            await m.requester.wait(ask)
        await wait_state(m, ask, AskState.PROVEN)
        assert m.relay.states[MID].view(ask).winners == (liar, honest)
        assert liar in m.relay.states[MID].penalties
        ask = await m.requester.request(fields, b"more inputs")
        env = m.requester.node.states[MID].asks[ask]
        assert isinstance(env.message, Ask) and env.message.deny == ()  # not the requester's doing
        with trio.fail_after(40):
            await m.requester.wait(ask)
        await wait_state(m, ask, AskState.PROVEN)
        assert m.relay.states[MID].view(ask).winners == (honest,)


def test_the_book_shows_the_record_and_the_denial() -> None:
    from rich.console import Console

    from p2p_market.cli.control import render_book

    bid = {"prover": P.hex(), "price": 1, "proof_time": 10, "capacity": 1, "expires_at": 0}
    rated = {**bid, "reputation": {"accepted": 0, "timed_out": 2, "invalid": 0, "denied": True}}
    console = Console(record=True, width=200)
    console.print(render_book([{"id": "ab" * 32, "name": "m"}], [{"asks": [], "bids": [rated]}]))
    text = console.export_text()
    assert "our record" in text and "2 timed out" in text and "DENIED" in text
    console = Console(record=True, width=200)
    console.print(render_book([{"id": "ab" * 32, "name": "m"}], [{"asks": [], "bids": [bid]}]))
    assert "our record" not in console.export_text()  # a node with no requester role
