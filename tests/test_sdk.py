"""The Python SDK against real provers: `open_client` runs its own node (a real
py-libp2p host on 127.0.0.1) in the test's trio run, next to a prover node with
its prover role; proofs are real pow proofs, every message is signed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from p2p_market.core.crypto import devnet_key
from p2p_market.core.envelope import market_id
from p2p_market.core.lifecycle import AskState
from p2p_market.markets.devnet import default_market
from p2p_market.node.config import NodeConfig
from p2p_market.node.runtime import Node
from p2p_market.proving.pow import PowBackend, pow_ok
from p2p_market.roles.inbox import Inbox
from p2p_market.roles.prover import ProverRole, ProverSettings
from p2p_market.sdk import AskEvent, Client, RequestFailed, open_client

MARKET = default_market(commit_window_ms=1_000, stage_ms=200, skew_ms=300, difficulty=10)
MID = market_id(MARKET)


@asynccontextmanager
async def prover_node(tmp: Path, price: int, proof_time: int = 5_000) -> AsyncIterator[Node]:
    """A node running the prover role, bidding `price`."""
    config = NodeConfig(
        key_file=tmp / "unused.pem",
        data_dir=tmp / f"prover-{price}",
        frames_per_second=50.0,
        markets=(MARKET,),
    )
    node = Node(config, devnet_key(f"sdk-prover-{price}"), prover=True)
    settings = ProverSettings(market=MID, price=price, proof_time=proof_time)
    role = ProverRole(node, PowBackend(), settings, Inbox())
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        await nursery.start(role.run)
        yield node
        nursery.cancel_scope.cancel()


def addr(node: Node) -> str:
    assert node.gossip is not None
    return node.gossip.addr


async def until(what: str, check: object, timeout: float = 20) -> None:
    assert callable(check)
    with trio.move_on_after(timeout):
        while not check():
            await trio.sleep(0.05)
        return
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def lifecycle(client: Client, ask: bytes) -> list[AskEvent]:
    """The client's events about `ask`, read with `async for`, up to a final state."""
    seen: list[AskEvent] = []
    with trio.fail_after(30):
        async for event in client.events():
            if event.ask != ask:
                continue
            seen.append(event)
            if event.kind == "state" and event.detail["state"] in ("proven", "expired"):
                return seen
    raise AssertionError("the event stream ended")


@pytest.mark.parametrize("confidential", [False, True], ids=["inline", "confidential"])
async def test_request_proof_returns_a_verified_proof_and_events_tell_the_lifecycle(
    tmp_path: Path, confidential: bool
) -> None:
    inputs = b"prove me through the SDK"
    async with (
        prover_node(tmp_path, price=7) as prover,
        open_client([addr(prover)], MARKET) as client,
    ):
        with trio.fail_after(60):
            proof = await client.request_proof(
                inputs,
                max_price=10,
                max_proof_time=10_000,
                prefer="time",
                confidential=confidential,
                timeout=40,
                discover_timeout=20,
            )
        assert pow_ok(inputs, MARKET.difficulty, proof)

        # The ask's whole life, in order, on the async iterator.
        first = await client.events().receive()
        assert first.kind == "placed"
        ask = first.ask
        events = [first, *await lifecycle(client, ask)]
        kinds = [e.kind if e.kind != "state" else f"state:{e.detail['state']}" for e in events]
        order = ["placed", "assigned", "delivered", "verified", "state:proven"]
        assert [k for k in kinds if k in order] == order, kinds
        by_kind = {e.kind: e.detail for e in events}
        me = prover.key.public_key.hex()
        assert by_kind["assigned"] == {"prover": me, "price": 7}
        verified = by_kind["verified"]
        assert verified == {"prover": me, "size": len(proof), "verify_ms": verified["verify_ms"]}
        assert isinstance(verified["verify_ms"], int) and verified["verify_ms"] >= 0

        view = client.status(ask)
        assert view["state"] == "proven" and view["paid"] == 7
        assert view["accepted"] == [me] and view["requester"] == client.public_key.hex()
        assert view["confidential"] is confidential
        assert view["inputs_size"] == (0 if confidential else len(inputs))
        # The receipt that pays reaches the prover.
        await until(
            "the accepted receipt at the prover",
            lambda: prover.states[MID].view(ask).state is AskState.PROVEN,
        )
        assert prover.states[MID].view(ask).paid == 7


async def test_no_prover_within_the_caps_is_request_failed_and_nothing_is_asked(
    tmp_path: Path,
) -> None:
    async with (
        prover_node(tmp_path, price=50) as prover,
        open_client([addr(prover)], MARKET) as client,
    ):
        await client.wait_for_provers(timeout=20)  # the bid is there, above the cap below
        with trio.fail_after(30), pytest.raises(RequestFailed) as caught:
            await client.request_proof(
                b"too cheap", max_price=10, max_proof_time=10_000, discover_timeout=3
            )
        assert caught.value.reason == "no_provers"
        assert "no prover within the caps" in str(caught.value)
        assert "cheapest bid 50" in str(caught.value)
        assert caught.value.ask is None
        assert client.bids() and not client.node.states[MID].asks  # the bid, no ask
        assert not prover.states[MID].asks


async def test_an_ask_nobody_meets_expires_as_request_failed(tmp_path: Path) -> None:
    async with (
        prover_node(tmp_path, price=50) as prover,
        open_client([addr(prover)], MARKET) as client,
    ):
        with trio.fail_after(30):
            await client.wait_for_provers(timeout=20)  # the prover's bid, above the cap
            ask = await client.place_ask(
                b"nobody will", max_price=10, max_proof_time=10_000, ttl_ms=1_500
            )
            with pytest.raises(RequestFailed) as caught:
                await client.wait(ask, timeout=15)
        assert caught.value.reason == "expired"
        assert caught.value.ask == ask
        assert "expired before it was proven" in str(caught.value)
        states = [e.detail.get("state") for e in await lifecycle(client, ask)]
        assert states[-1] == "expired"
        await until(
            "the prover to see it expire",
            lambda: (
                ask in prover.states[MID].asks
                and prover.states[MID].view(ask).state is AskState.EXPIRED
            ),
        )
        assert prover.states[MID].view(ask).winners == ()


async def test_no_reachable_peer_is_request_failed_unreachable(tmp_path: Path) -> None:
    async with prover_node(tmp_path, price=5) as prover:
        gone = addr(prover)
    # The prover is stopped: its address leads nowhere now.
    async with open_client([gone], MARKET) as client:
        with trio.fail_after(20), pytest.raises(RequestFailed) as caught:
            await client.request_proof(
                b"x", max_price=10, max_proof_time=10_000, discover_timeout=2
            )
        assert caught.value.reason == "unreachable"
        assert "cannot reach any bootstrap peer (1 given)" in str(caught.value)


async def test_place_bid_publishes_a_signed_bid_and_refuses_a_bad_one(tmp_path: Path) -> None:
    bidder = devnet_key("sdk-bidder")
    async with (
        prover_node(tmp_path, price=5) as prover,
        open_client([addr(prover)], MARKET, key=bidder) as client,
    ):
        with trio.fail_after(30):
            await client.wait_for_provers(timeout=20)  # connected and synced
            bid = await client.place_bid(price=3, proof_time=2_000, capacity=2)
        book = prover.states[MID].book
        await until(
            "the bid at the prover",
            lambda: bidder.public_key in book.current and book.current[bidder.public_key].id == bid,
        )
        seen = book.current[bidder.public_key].bid
        assert (seen.price, seen.proof_time, seen.capacity) == (3, 2_000, 2)
        assert [s.bid.price for s in client.bids()] == [3, 5]  # cheapest first

        for bad in ({"price": -1}, {"proof_time": 0}, {"capacity": 0}):
            fields = {"price": 3, "proof_time": 2_000, **bad}
            with pytest.raises(ValueError):
                await client.place_bid(**fields)
        assert client.node.states[MID].book.current[bidder.public_key].id == bid
