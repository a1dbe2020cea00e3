"""Real py-libp2p nodes on 127.0.0.1 in one process, wired in a given topology,
for the network tests. No mocks: every node is a full host with Noise, yamux and
GossipSub, and the only shortcut is that all of them share one trio run."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import trio

from p2p_market.core.crypto import devnet_key
from p2p_market.core.envelope import market_id
from p2p_market.markets.devnet import GENESIS_MS, Actor, default_market
from p2p_market.net.frame import ExtraCheck
from p2p_market.net.gossip import Delivery, Gossip, GossipConfig
from p2p_market.net.host import Muxer, connect_all, make_host

MARKET = default_market()
MID = market_id(MARKET)
NOW = GENESIS_MS + 3_600_000


def actor(name: str) -> Actor:
    return Actor(name, MARKET)


def bid(name: str, seq: int = 1) -> bytes:
    """A fresh, valid, signed envelope for the devnet market."""
    return actor(name).bid(now=NOW, price=100 + seq, proof_time=1_000, seq=seq)


@asynccontextmanager
async def cluster(
    size: int,
    edges: Sequence[tuple[int, int]],
    *,
    config: GossipConfig | None = None,
    extra_check: ExtraCheck | None = None,
    muxer: Muxer = "yamux",
) -> AsyncIterator[list[Gossip]]:
    """`size` running nodes, each edge dialled (concurrently) and meshed both ways."""
    async with trio.open_nursery() as nursery:
        nodes: list[Gossip] = []
        for i in range(size):
            host, listen = make_host(devnet_key(f"net-node-{i}"), muxer=muxer)
            node = Gossip(host, listen, markets=[MID], config=config, extra_check=extra_check)
            await nursery.start(node.run)
            nodes.append(node)
        with trio.fail_after(10):
            async with trio.open_nursery() as dials:
                for a, b in edges:
                    dials.start_soon(dial, nodes[a], nodes[b])
            for a, b in edges:
                await nodes[a].wait_for_mesh(MID, nodes[b].peer_id)
                await nodes[b].wait_for_mesh(MID, nodes[a].peer_id)
        yield nodes
        nursery.cancel_scope.cancel()


async def dial(a: Gossip, b: Gossip) -> None:
    failures = await connect_all(a.host, [b.addr])
    assert failures == {}


async def receive(node: Gossip, timeout: float = 5.0) -> Delivery:
    with trio.fail_after(timeout):
        return await node.deliveries.receive()


async def receive_n(node: Gossip, n: int, timeout: float = 5.0) -> list[Delivery]:
    with trio.fail_after(timeout):
        return [await node.deliveries.receive() for _ in range(n)]


def nothing_waiting(node: Gossip) -> bool:
    try:
        extra = node.deliveries.receive_nowait()
    except trio.WouldBlock:
        return True
    raise AssertionError(f"unexpected delivery {extra!r}")
