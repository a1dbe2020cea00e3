"""Replaying an honest signer's envelopes costs the honest signer nothing, and a
peer that floods frames of envelopes the node already holds is banned. A whole
`Node` (gossip, SQLite log) and a malicious py-libp2p peer on 127.0.0.1.

The attack this guards against (issue: signer drain): frames of one fresh attacker
bid and the honest prover's and requester's own old envelopes, 25 frames/s. The
per-signer budget was spent before the duplicate check, so the honest signers'
budgets ran dry and their new envelopes were refused for 20 s and more."""

from __future__ import annotations

import itertools
from pathlib import Path

import trio

from p2p_market.core.envelope import message_id
from p2p_market.core.verdict import Reason
from p2p_market.markets.devnet import Actor
from p2p_market.net.frame import encode_frame
from p2p_market.net.gossip import Gossip, topic_for
from p2p_market.net.host import connect_all
from p2p_market.node.runtime import SIGNER_BURST, Node
from tests.node.test_evolution import _bare_gossip
from tests.node.test_runtime import MARKET, MID, make_node, running, wait_until

HONEST_ENVELOPES = 4


async def meshed_peers(nursery: trio.Nursery, victim: Node, *names: str) -> list[Gossip]:
    """Bare gossip peers (no checks of their own), each meshed with the victim."""
    assert victim.gossip is not None
    peers = [await _bare_gossip(nursery, name) for name in names]
    with trio.fail_after(10):
        for peer in peers:
            assert await connect_all(peer.host, [victim.gossip.addr]) == {}
            await peer.wait_for_mesh(MID, victim.gossip.peer_id)
    return peers


async def test_replayed_envelopes_do_not_spend_their_signers_budget(tmp_path: Path) -> None:
    victim = make_node(tmp_path, "victim")
    async with running(victim) as nursery:
        assert victim.gossip is not None
        attacker, relay = await meshed_peers(nursery, victim, "drain-attacker", "drain-relay")
        now = victim.clock()
        honest = Actor("drain-honest", MARKET)
        old = [
            honest.bid(now=now, price=50 + seq, proof_time=1_000, seq=seq)
            for seq in range(1, HONEST_ENVELOPES + 1)
        ]
        await relay.pubsub.publish(topic_for(MID), encode_frame(old))
        state = victim.states[MID]
        await wait_until(lambda: all(state.holds(message_id(raw)) for raw in old))
        # Enough frames to spend the honest signer's whole burst twice over, were
        # its replayed envelopes charged to it; one fresh attacker bid in each.
        frames = 2 * SIGNER_BURST // HONEST_ENVELOPES
        for i in range(frames):
            fresh = Actor(f"drain-attacker-{i}", MARKET).bid(now=now, price=1, proof_time=10)
            await attacker.pubsub.publish(topic_for(MID), encode_frame([fresh, *old]))
            # 40 frames/s: under the peer's frame budget (50/s), and the library's
            # outbound queue (32 RPCs, dropping when full) keeps up
            await trio.sleep(0.025)
        stats = victim.gossip.stats
        await wait_until(lambda: stats.frames_accepted >= frames + 1, 20)
        newest = honest.bid(now=victim.clock(), price=40, proof_time=1_000, seq=10)
        await relay.pubsub.publish(topic_for(MID), encode_frame([newest]))
        await wait_until(lambda: state.holds(message_id(newest)))
        assert stats.reasons[Reason.RATE_LIMITED] == 0
        assert state.book.current[honest.public_key].bid.seq == 10


async def test_a_flood_of_frames_of_held_envelopes_gets_its_peer_banned(tmp_path: Path) -> None:
    victim = make_node(tmp_path, "victim")
    async with running(victim) as nursery:
        assert victim.gossip is not None
        attacker, bystander = await meshed_peers(
            nursery, victim, "stale-attacker", "stale-bystander"
        )
        now = victim.clock()
        held = [
            Actor(f"stale-{i}", MARKET).bid(now=now, price=10 + i, proof_time=1_000)
            for i in range(8)
        ]
        await bystander.pubsub.publish(topic_for(MID), encode_frame(held))
        state = victim.states[MID]
        await wait_until(lambda: all(state.holds(message_id(raw)) for raw in held))
        # New frames (new bytes, so not the library's seen cache) of old envelopes.
        combos = itertools.chain.from_iterable(
            itertools.combinations(held, k) for k in range(2, len(held) + 1)
        )
        sent = 0
        for combo in itertools.islice(combos, 150):
            await attacker.pubsub.publish(topic_for(MID), encode_frame(list(combo)))
            sent += 1
            await trio.sleep(0.01)  # the library's outbound queue drops when full
        await wait_until(lambda: attacker.peer_id not in victim.host.get_connected_peers())  # type: ignore[union-attr]
        stats = victim.gossip.stats
        assert stats.peers_banned == 1 and victim.gossip.pubsub.is_peer_blacklisted(
            attacker.peer_id
        )
        allowance = victim.gossip.config.scores.stale_burst
        assert allowance < stats.frames_stale <= sent  # free up to the allowance
        assert stats.frames_rejected == 0  # nothing it sent was invalid
        assert bystander.peer_id in victim.host.get_connected_peers()  # type: ignore[union-attr]
        assert not victim.gossip.pubsub.is_peer_blacklisted(bystander.peer_id)
