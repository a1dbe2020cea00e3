"""Split proofs on real nodes: three segment asks proved in parallel by two
provers, then one aggregation ask over their proofs; and a failing segment that
stops the aggregation from ever being placed."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest
import trio

from p2p_market import sdk
from p2p_market.core.lifecycle import AskState, SlotState
from p2p_market.core.messages import Ask, Proof, Receipt, sha256
from p2p_market.proving.pow import pow_ok
from p2p_market.roles.split import (
    SplitFailed,
    aggregation_inputs,
    parse_aggregation_inputs,
    request_segmented,
)
from tests.roles.harness import MARKET, MID, Market, market, wait_everywhere

SEGMENTS = [b"segment 0: rows 0..999", b"segment 1: rows 1000..1999", b"segment 2: rows 2000..2999"]
UNPROVABLE = b"difficulty=99\nmore than the pow back-end allows"


def asks_by(m: Market, signer: bytes) -> set[bytes]:
    """Ask ids the relay (a bystander) holds from `signer`."""
    state = m.relay.states[MID]
    return {a for a, env in state.asks.items() if env.signer == signer}


def accepted_proof_hash(m: Market, ask: bytes) -> bytes:
    """The proof hash of the ask's accepted winner, from the relay's signed log."""
    state = m.relay.states[MID]
    view = state.view(ask)
    (winner,) = view.accepted
    events = state.events[ask].values()
    (notice,) = [e.message for e in events if e.signer == winner and isinstance(e.message, Proof)]
    return notice.proof_hash


async def test_three_segments_and_an_aggregation_over_two_provers(tmp_path: Path) -> None:
    async with market(tmp_path, {"a": (10, 5_000), "b": (20, 5_000)}) as m:
        assert m.relay.gossip is not None
        async with sdk.open_client([m.relay.gossip.addr], MARKET) as client:
            with trio.fail_after(120):
                result = await client.request_segmented(
                    SEGMENTS, max_price=100, max_proof_time=10_000, timeout=100
                )
            me = client.public_key
            # The SDK names a failing segment as RequestFailed, as for one ask.
            with trio.fail_after(60), pytest.raises(sdk.RequestFailed) as caught:
                await client.request_segmented(
                    [SEGMENTS[0], UNPROVABLE], max_price=100, max_proof_time=10_000
                )
            failed = caught.value
            assert (failed.reason, failed.segment, failed.aggregation) == (
                "invalid_inputs",
                1,
                False,
            )
            assert failed.ask is not None
            assert f"segment 1 of 2 (ask {failed.ask.hex()})" in str(failed)
            # Out of time before anyone won: every ask is cancelled, none is paid.
            with trio.fail_after(30), pytest.raises(sdk.RequestFailed) as caught:
                await client.request_segmented(
                    [b"late 0", b"late 1"], max_price=100, max_proof_time=10_000, timeout=0.2
                )
            assert caught.value.reason == "timeout"
            late = {a for a, t in client.role.asks.items() if t.inputs.startswith(b"late")}
            assert len(late) == 2
            for ask in late:
                await wait_state_on(m, ask, AskState.CANCELLED)
            # Both provers fit these asks: past the windows' settling (window end +
            # skew, and a margin) the cancels are what kept them from winning.
            placed = max(m.relay.states[MID].view(a).ask.timestamp for a in late)
            settled = placed + MARKET.commit_window_ms + MARKET.skew_ms + 1_000
            await trio.sleep(max(0, settled - m.relay.clock()) / 1000)
            for ask in late:
                for n in m.nodes:
                    view = n.states[MID].view(ask)
                    got = (view.state, view.winners, view.paid)
                    assert got == (AskState.CANCELLED, (), 0), n.config.data_dir.name
        d = MARKET.difficulty
        assert len(result.segment_asks) == len(result.segment_proofs) == 3
        for inputs, proof in zip(SEGMENTS, result.segment_proofs, strict=True):
            assert pow_ok(inputs, d, proof)
        assert pow_ok(result.aggregation_inputs, d, result.proof)
        # The aggregation's inputs are exactly the segments' statements and proofs.
        pairs = [(sha256(s), p) for s, p in zip(SEGMENTS, result.segment_proofs, strict=True)]
        assert parse_aggregation_inputs(result.aggregation_inputs) == pairs
        assert result.aggregation_inputs == aggregation_inputs(pairs)
        # ... and the market's signed log says the same, on a bystander.
        state = m.relay.states[MID]
        with trio.fail_after(20):
            while not all(
                a in state.asks and state.view(a).state is AskState.PROVEN
                for a in (*result.segment_asks, result.aggregation_ask)
            ):
                await trio.sleep(0.05)
        assert {*result.segment_asks, result.aggregation_ask} <= asks_by(m, me)
        agg = state.asks[result.aggregation_ask].message
        assert isinstance(agg, Ask)
        assert agg.inputs == result.aggregation_inputs
        assert agg.inputs_hash == sha256(result.aggregation_inputs)
        for ask, proof in zip(result.segment_asks, result.segment_proofs, strict=True):
            assert accepted_proof_hash(m, ask) == sha256(proof)
        assert accepted_proof_hash(m, result.aggregation_ask) == sha256(result.proof)
        # Placed only once every segment proof was in (accepted by its receipt).
        accepts = [
            e.message.timestamp
            for a in result.segment_asks
            for e in state.events[a].values()
            if isinstance(e.message, Receipt) and e.message.outcome == "accepted"
        ]
        assert len(accepts) == 3 and agg.timestamp >= max(accepts)
        # Only the market's provers won (which of them depends on timing: one slot
        # each, so a fast prover may free its slot and take the next segment too).
        winners = {state.view(a).winners[0] for a in result.segment_asks}
        assert winners <= {m.provers["a"].me, m.provers["b"].me}
        assert not state.check_invariants()


async def wait_state_on(m: Market, ask: bytes, state: AskState) -> None:
    with trio.fail_after(20):
        while (
            ask not in m.relay.states[MID].asks or m.relay.states[MID].view(ask).state is not state
        ):
            await trio.sleep(0.05)


async def wait_settled(m: Market, asks: tuple[bytes, ...]) -> None:
    """Until no ask is OPEN or ASSIGNED on the relay: nothing more will happen."""
    busy = (AskState.OPEN, AskState.ASSIGNED)
    with trio.fail_after(30):
        while any(a not in m.relay.states[MID].asks for a in asks) or any(
            m.relay.states[MID].view(a).state in busy for a in asks
        ):
            await trio.sleep(0.05)


async def test_an_invalid_segment_fails_the_call_and_no_aggregation_is_placed(
    tmp_path: Path,
) -> None:
    async with market(tmp_path, {"a": (10, 5_000), "b": (20, 5_000)}) as m:
        fields = {"market": MID.hex(), "max_price": 100, "max_proof_time": 10_000}
        segments = [SEGMENTS[0], UNPROVABLE, SEGMENTS[2]]
        with trio.fail_after(60), pytest.raises(SplitFailed) as caught:
            await request_segmented(m.requester, fields, segments)
        failure = caught.value
        assert failure.segment == 1 and failure.reason == "invalid_inputs"
        assert failure.ask == failure.segment_asks[1]
        assert str(failure).startswith(f"segment 1 of 3 (ask {failure.ask.hex()}): ")
        assert "cannot be proven: inputs fail the market's input check" in str(failure)
        await wait_settled(m, failure.segment_asks)
        await trio.sleep(1.0)  # an aggregation placed late would have arrived by now
        assert asks_by(m, m.requester.me) == set(failure.segment_asks)
        view = m.relay.states[MID].view(failure.ask)
        assert view.state is AskState.INVALID_INPUTS
        assert view.slot_states == (SlotState.ATTESTED,)


async def test_a_segment_nobody_can_take_expires_and_is_named(tmp_path: Path) -> None:
    async with market(tmp_path, {"a": (10, 5_000), "b": (20, 5_000)}) as m:
        fields = {  # caps nobody meets, a short life
            "market": MID.hex(),
            "max_price": 5,
            "max_proof_time": 10_000,
            "ttl_ms": MARKET.commit_window_ms,
        }
        with trio.fail_after(30), pytest.raises(SplitFailed) as caught:
            await request_segmented(m.requester, fields, SEGMENTS)
        failure = caught.value
        assert failure.reason == "expired" and failure.segment is not None
        assert failure.ask == failure.segment_asks[failure.segment]
        assert f"segment {failure.segment} of 3 (ask {failure.ask.hex()}): " in str(failure)
        await wait_everywhere(m, failure.ask, AskState.EXPIRED)
        await wait_settled(m, failure.segment_asks)
        await trio.sleep(1.0)
        assert asks_by(m, m.requester.me) == set(failure.segment_asks)
        for ask in failure.segment_asks:  # expired, or cancelled as useless: never won
            view = m.relay.states[MID].view(ask)
            assert view.state in (AskState.EXPIRED, AskState.CANCELLED) and not view.winners


def test_aggregation_inputs_have_one_encoding() -> None:
    """Anyone holding the segments recomputes the same bytes, and a reader takes
    nothing else: the inputs hash names exactly one list of statements and proofs."""
    pairs = [(sha256(b"s0"), b"p0"), (sha256(b"s1"), b"proof 1")]
    data = aggregation_inputs(pairs)
    assert parse_aggregation_inputs(data) == pairs
    domain, listed = "p2p-market/aggregate/v1", [list(p) for p in pairs]
    unsorted = msgpack.packb({"segments": listed, "domain": domain}, use_bin_type=True)
    for bad in (
        unsorted,  # the same map, keys out of order
        msgpack.packb({"domain": "other", "segments": listed}, use_bin_type=True),
        msgpack.packb({"domain": domain, "segments": [[b"short", b"p"]]}, use_bin_type=True),
        msgpack.packb({"domain": domain, "segments": []}, use_bin_type=True),
        data + b"\x00",
    ):
        with pytest.raises(ValueError):
            parse_aggregation_inputs(bad)
    with pytest.raises(ValueError):
        aggregation_inputs([])
