"""The prune backoff kept by both ends (net/mesh_backoff.py), on real hosts: a node
that pruned peers from an over-full mesh does not graft them again while they still
back off from it, which the library's own router does; and a node grafts a peer only
some slack after its backoff ended, while judging a GRAFT by the exact end."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from libp2p.pubsub.gossipsub import GossipSub

from p2p_market.core.crypto import devnet_key
from p2p_market.net import mesh_backoff
from p2p_market.net.gossip import Gossip, GossipConfig, topic_for
from p2p_market.net.host import connect_all, make_host
from p2p_market.net.mesh_backoff import (
    BACKOFF_SLACK_S,
    PINS,
    BackoffKeepingGossipSub,
    applicable,
    router_class,
    source_hashes,
)
from tests.net.cluster import MID, bid, cluster, receive

TOPIC = topic_for(MID)
COMPLAINTS = ("GRAFT flood detected", "GRAFT: ignoring request")


def test_the_fix_is_pinned_to_the_library_it_was_written_for() -> None:
    """Fails on another py-libp2p, or if these methods changed: read
    docs/upstream/py-libp2p-prune-backoff.md, check whether the bug is still there,
    then re-pin or remove the module."""
    assert applicable() is None, applicable()
    assert source_hashes() == PINS
    assert router_class() is BackoffKeepingGossipSub


@asynccontextmanager
async def star(leaves: int, tag: str) -> AsyncIterator[list[Gossip]]:
    """A hub and `leaves` nodes that dial only the hub; mesh degree 1 (D_high 2),
    so the hub, grafted by every leaf, prunes all but one at its first heartbeat."""
    config = GossipConfig().with_degree(1)
    async with trio.open_nursery() as nursery:
        nodes = []
        for i in range(leaves + 1):
            host, listen = make_host(devnet_key(f"mesh-backoff-{tag}-{i}"))
            node = Gossip(host, listen, markets=[MID], config=config)
            await nursery.start(node.run)
            nodes.append(node)
        async with trio.open_nursery() as dials:
            for leaf in nodes[1:]:
                dials.start_soon(connect_all, leaf.host, [nodes[0].addr])
        yield nodes
        nursery.cancel_scope.cancel()


async def _pruned_down(hub: Gossip, leaves: int) -> None:
    """Until every leaf has grafted the hub and the hub has pruned its mesh to one."""
    with trio.fail_after(15):
        while not (
            len(hub.pubsub.peer_topics.get(TOPIC, ())) == leaves
            and len(hub.router.mesh.get(TOPIC, ())) == 1
        ):
            await trio.sleep(0.05)


@pytest.mark.parametrize("router", [GossipSub, BackoffKeepingGossipSub])
async def test_a_hub_does_not_graft_again_the_peers_it_just_pruned(
    router: type[GossipSub], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The situation of the bug: the hub's mesh falls below D_low a few seconds after
    it pruned two leaves, and those two are its only other peers. The library's router
    grafts them at once; each takes it for a violation of the backoff it was given
    (a penalty and a PRUNE back). The fixed one leaves them alone until it ends."""
    monkeypatch.setattr(mesh_backoff, "router_class", lambda: router)
    caplog.set_level(logging.WARNING, logger="libp2p.pubsub.gossipsub")
    async with star(3, router.__name__) as nodes:
        hub = nodes[0]
        await _pruned_down(hub, 3)
        (kept,) = hub.router.mesh[TOPIC]
        pruned = {n.peer_id for n in nodes[1:]} - {kept}
        caplog.clear()
        # the one peer left in the hub's mesh goes away
        await hub.host.disconnect(kept)
        with trio.fail_after(10):
            while kept in hub.router.mesh.get(TOPIC, ()):
                await trio.sleep(0.05)
        await trio.sleep(3.5)  # three heartbeats
        said = [r.getMessage() for r in caplog.records]
        complaints = [m for m in said if m.startswith(COMPLAINTS)]
        if router is GossipSub:
            assert complaints, "the library's router no longer re-grafts: is the bug fixed?"
        else:
            assert complaints == []
            assert not pruned & hub.router.mesh[TOPIC]
            assert pruned <= hub.router.backing_off(TOPIC)  # type: ignore[attr-defined]


async def test_a_peer_is_grafted_only_some_slack_after_its_backoff_ended() -> None:
    async with star(2, "slack") as nodes:
        hub = nodes[0]
        router = hub.router
        assert isinstance(router, BackoffKeepingGossipSub)
        with trio.fail_after(15):
            while len(hub.pubsub.peer_topics.get(TOPIC, ())) < 2:
                await trio.sleep(0.05)
        leaf, other = (n.peer_id for n in nodes[1:])
        now = time.time()
        # the backoff ended a second ago: a GRAFT from the peer is no violation ...
        router.back_off.setdefault(TOPIC, {})[other] = int(now) - 1
        assert other in router.backing_off(TOPIC, now)
        # ... but the hub does not pick it to graft yet
        assert router._get_in_topic_gossipsub_peers_from_minus(TOPIC, 5, [], True) == [leaf]
        both = router._get_in_topic_gossipsub_peers_from_minus(TOPIC, 5, [])
        assert set(both) == {leaf, other}
        assert other not in router.backing_off(TOPIC, now + BACKOFF_SLACK_S)
        assert not router._check_back_off(other, TOPIC)


async def test_a_node_every_peer_pruned_still_gets_messages_by_gossip() -> None:
    """The shut-out node of `bench net`: its peers all prune it at once, so it has no
    mesh, every peer backs off from it and it from every peer, and no GRAFT is
    allowed either way for a minute. Each message still reaches it within a few
    heartbeats (IHAVE, then IWANT); the library's gossip skipped backed-off peers, and
    the node heard nothing until the backoffs ended."""
    async with cluster(4, [(a, b) for a in range(4) for b in range(a + 1, 4)]) as nodes:
        *others, lone = nodes
        for peer in others:
            peer.router.mesh[TOPIC].discard(lone.peer_id)
            await peer.router.emit_prune(TOPIC, lone.peer_id, False, False)
        with trio.fail_after(5):
            while lone.router.mesh[TOPIC]:
                await trio.sleep(0.05)
        for peer in others:
            assert peer.peer_id in lone.router.backing_off(TOPIC)  # type: ignore[attr-defined]
            assert lone.peer_id in peer.router.backing_off(TOPIC)  # type: ignore[attr-defined]
        for seq in (1, 2):
            raw = bid("gus", seq)
            assert (await others[0].publish(MID, raw)).accepted
            assert (await receive(lone, timeout=5)).raw == raw
        assert not lone.router.mesh[TOPIC]  # it came by gossip, not by a mesh
