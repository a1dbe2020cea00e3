"""A node's first orders, published before any peer grafted the market's mesh: they
wait (boundedly) for the mesh, instead of going to nobody (issue 13: a bid published
at start reached the others 30-40 s later, by the periodic sync).

py-libp2p 0.8.1 replays its recent messages to a peer that subscribes, but only
those of the gossip window (3 heartbeats, 3 s here): a connection that takes longer
(a bootstrap dial at 300 ms round trips, a keeper busy dialling) misses the frame.
So the peer connects CONNECT_AFTER_S after the publish, beyond that window."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from p2p_market.core.crypto import devnet_key
from p2p_market.net.gossip import Gossip, GossipConfig
from p2p_market.net.host import connect_all, make_host
from tests.net.cluster import MID, bid, nothing_waiting, receive

CONNECT_AFTER_S = 4.0
"""Beyond the library's replay window of recent messages (3 s)."""


@asynccontextmanager
async def two_alone(config: GossipConfig) -> AsyncIterator[tuple[Gossip, Gossip]]:
    """Two running nodes, not connected."""
    async with trio.open_nursery() as nursery:
        pair = []
        for name in ("early", "late"):
            host, listen = make_host(devnet_key(f"startup-{name}"))
            node = Gossip(host, listen, markets=[MID], config=config)
            await nursery.start(node.run)
            pair.append(node)
        yield pair[0], pair[1]
        nursery.cancel_scope.cancel()


async def test_a_first_order_waits_for_the_mesh_and_arrives() -> None:
    async with two_alone(GossipConfig(mesh_wait_s=10.0)) as (early, late):
        await early.publish(MID, bid("first"))
        await trio.sleep(CONNECT_AFTER_S)  # queued: the send loop waits for a mesh
        assert early.stats.frames_published == 0
        assert await connect_all(early.host, [late.addr]) == {}
        delivery = await receive(late, timeout=10)
        assert delivery.peer == early.peer_id
        assert early.stats.mesh_waits == 1
        # the mesh is there: later frames do not wait
        await early.publish(MID, bid("second"))
        await receive(late, timeout=5)
        assert early.stats.mesh_waits == 1


async def test_without_the_wait_a_first_order_reaches_nobody() -> None:
    """The failure the wait prevents (mesh_wait_s = 0, as before)."""
    async with two_alone(GossipConfig(mesh_wait_s=0.0)) as (early, late):
        await early.publish(MID, bid("first"))
        with trio.fail_after(5):
            while early.stats.frames_published == 0:
                await trio.sleep(0.01)
        await trio.sleep(CONNECT_AFTER_S)
        assert await connect_all(early.host, [late.addr]) == {}
        await early.wait_for_mesh(MID, late.peer_id, timeout=10)
        await trio.sleep(1.0)
        assert nothing_waiting(late)


async def test_a_lonely_node_waits_once_not_per_frame() -> None:
    """No peer ever comes: the first frame waits mesh_wait_s, the others not."""
    async with two_alone(GossipConfig(mesh_wait_s=0.5)) as (early, _late):
        started = trio.current_time()
        for i in range(5):
            await early.publish(MID, bid(f"alone-{i}"))
        with trio.fail_after(5):
            while early.stats.envelopes_published < 5:
                await trio.sleep(0.01)
        assert early.stats.mesh_waits == 1
        assert trio.current_time() - started < 3.0
