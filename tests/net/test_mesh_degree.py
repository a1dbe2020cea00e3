"""The mesh degree sized to the market (net/gossip.py `sized_degree`, node key
`mesh_degree = 0`): small markets mesh with 3 peers, large ones up to GossipSub's 6,
on real hosts; and the node config reaches the router."""

from __future__ import annotations

from pathlib import Path

from p2p_market.net import libp2p_speedups
from p2p_market.net.gossip import GossipConfig, degree_bounds, sized_degree, topic_for
from p2p_market.node.config import parse_config
from p2p_market.node.runtime import gossip_config
from tests.net.cluster import MID, bid, cluster, receive

BASE = {"key_file": "k.pem", "data_dir": "d"}


def test_the_degree_grows_with_the_market() -> None:
    sizes = {0: 3, 1: 3, 9: 3, 16: 3, 17: 4, 32: 4, 33: 5, 64: 5, 65: 6, 500: 6}
    assert {n: sized_degree(n) for n in sizes} == sizes
    assert sized_degree(500, most=4) == 4
    assert degree_bounds(6) == (4, 12)  # GossipSub's defaults
    assert degree_bounds(3) == (2, 6)
    assert degree_bounds(1) == (1, 2)


def test_the_node_key_reaches_the_gossip_config(tmp_path: Path) -> None:
    auto = gossip_config(parse_config({"node": BASE}, tmp_path))
    assert auto.auto_degree and auto.degree == 6
    fixed = gossip_config(parse_config({"node": {**BASE, "mesh_degree": 4}}, tmp_path))
    assert not fixed.auto_degree and (fixed.degree, fixed.degree_low, fixed.degree_high) == (
        4,
        3,
        8,
    )
    assert gossip_config(
        parse_config({"node": {**BASE, "gossip_idontwant": True}}, tmp_path)
    ).idontwant


async def test_a_small_market_meshes_with_three_peers_and_still_delivers() -> None:
    async with cluster(4, [(0, 1), (1, 2), (2, 3)], config=GossipConfig().with_degree(0)) as nodes:
        for n in nodes:
            assert n.resize_mesh() == 3
            assert n.stats.mesh_degree == 3
            assert (n.router.degree, n.router.degree_low, n.router.degree_high) == (3, 2, 6)
        sent = [bid(f"mesh-degree-{i}") for i in range(10)]
        for raw in sent:
            assert (await nodes[0].publish(MID, raw)).accepted
        for n in nodes[1:]:
            got = {(await receive(n, timeout=10)).raw for _ in sent}
            assert got == set(sent)


async def test_the_degree_is_raised_as_the_market_grows_and_never_lowered() -> None:
    async with cluster(2, [(0, 1)], config=GossipConfig().with_degree(0)) as nodes:
        node = nodes[0]
        topic = topic_for(MID)
        real = dict(node.pubsub.peer_topics)
        node.pubsub.peer_topics[topic] = {f"peer-{i}" for i in range(40)}  # type: ignore[misc]
        assert node.resize_mesh() == 5
        assert (node.router.degree_low, node.router.degree_high) == (4, 10)
        node.pubsub.peer_topics.clear()
        node.pubsub.peer_topics.update(real)
        assert node.resize_mesh() == 5  # one peer left: kept


async def test_a_fixed_degree_is_left_alone() -> None:
    async with cluster(3, [(0, 1), (1, 2)], config=GossipConfig().with_degree(5)) as nodes:
        assert all(n.router.degree == 5 and n.stats.mesh_degree == 5 for n in nodes)


async def test_an_unpatched_library_keeps_gossipsubs_degree() -> None:
    """Small meshes lost frames on the unpatched library (docs/transport.md): a node
    whose py-libp2p the patches do not fit does not size its mesh down."""
    libp2p_speedups.leave_out("sender-record")
    try:
        async with cluster(2, [(0, 1)], config=GossipConfig().with_degree(0)) as nodes:
            assert not nodes[0].config.auto_degree
            assert nodes[0].router.degree == 6 and nodes[0].resize_mesh() == 6
    finally:
        libp2p_speedups._left_out.clear()
        libp2p_speedups.apply()
