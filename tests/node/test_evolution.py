"""A v1 node next to a node of a later protocol version (market-v1.md, Protocol
evolution), with real hosts on 127.0.0.1: the v1 node (a whole `Node`: gossip,
sync, SQLite log) IGNOREs the kinds it does not know without blaming the peer that
sent them, keeps and passes on the v1 envelopes that came with them, and never
stores nor forwards the unknown ones, whether they come by gossip or by sync."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import trio

from p2p_market.core.crypto import devnet_key
from p2p_market.core.envelope import Envelope, message_id
from p2p_market.core.validation import check_envelope
from p2p_market.core.verdict import Reason
from p2p_market.markets.devnet import Actor
from p2p_market.net.frame import encode_frame
from p2p_market.net.gossip import Gossip, topic_for
from p2p_market.net.host import connect_all, make_host
from p2p_market.node.runtime import data_path
from p2p_market.node.storage import EnvelopeLog
from tests.net.cluster import nothing_waiting, receive, receive_n
from tests.newer import LATER_KIND, later_kind
from tests.node.test_runtime import MARKET, MID, make_node, running, wait_until
from tests.node.test_sync import NewerServer

FRAMES = 12
"""Mixed frames from the newer peer: more than twice GossipConfig.max_rejects (5)."""


def _serving(raws: list[bytes]) -> Callable[[bytes], list[Envelope] | None]:
    """A sync source holding these (valid) envelopes."""
    envelopes = [env for _, env in map(check_envelope, raws) if env is not None]
    assert len(envelopes) == len(raws)
    return lambda market: envelopes if market == MID else None


async def _bare_gossip(nursery: trio.Nursery, name: str) -> Gossip:
    """A gossip service alone (no peer exchange, no sync server of its own)."""
    host, listen = make_host(devnet_key(name))
    node = Gossip(host, listen, markets=[MID])
    await nursery.start(node.run)
    return node


async def test_a_newer_peers_unknown_kinds_split_nothing_and_are_never_kept(
    tmp_path: Path,
) -> None:
    b = make_node(tmp_path, "b")
    async with running(b) as nursery:
        assert b.gossip is not None and b.host is not None
        now = b.clock()
        author = Actor("evo-newer-author", MARKET)
        # The newer node: sends raw frames, and serves sync with its book (a v1 bid
        # that is never gossiped, one new-kind envelope listed as such, and one
        # listed, falsely, as a bid).
        only_by_sync = Actor("evo-synced", MARKET).bid(now=now, price=7, proof_time=800)
        synced_new = later_kind(author, now=now, n=100)
        synced_mislabelled = later_kind(author, now=now, n=101)
        newer = await _bare_gossip(nursery, "evo-newer")
        third = await _bare_gossip(nursery, "evo-third")  # v1; hears the newer via b only
        book = NewerServer(
            _serving([only_by_sync]), [(synced_new, LATER_KIND), (synced_mislabelled, 2)]
        )
        book.attach(newer.host)
        with trio.fail_after(10):
            for peer in (newer, third):
                assert await connect_all(peer.host, [b.gossip.addr]) == {}
                await peer.wait_for_mesh(MID, b.gossip.peer_id)
                await b.gossip.wait_for_mesh(MID, peer.peer_id)

        valid: list[bytes] = []
        unknown: list[bytes] = []
        for i in range(FRAMES):
            ok = Actor(f"evo-prover-{i}", MARKET).bid(now=now, price=10 + i, proof_time=900)
            new = later_kind(author, now=now, n=i)
            valid.append(ok)
            unknown.append(new)
            frame = [new, ok] if i % 2 else [ok, new]
            await newer.pubsub.publish(topic_for(MID), encode_frame(frame))
        alone = later_kind(author, now=now, n=FRAMES)  # new kinds framed apart, as they should be
        unknown.append(alone)
        await newer.pubsub.publish(topic_for(MID), encode_frame([alone]))

        # The third node gets every v1 envelope, in frames b made of them, and nothing else.
        got = await receive_n(third, len(valid), timeout=10)
        assert sorted(d.raw for d in got) == sorted(valid)
        assert {d.peer for d in got} == {b.gossip.peer_id}
        # The newer peer is still b's peer in good standing: its next frame is forwarded.
        marker = Actor("evo-marker", MARKET).bid(now=now, price=1, proof_time=900)
        await newer.pubsub.publish(topic_for(MID), encode_frame([marker]))
        assert (await receive(third, timeout=10)).raw == marker
        await wait_until(lambda: b.states[MID].holds(message_id(only_by_sync)))
        await trio.sleep(0.5)  # let anything that should not come, come
        assert nothing_waiting(third)
        assert third.stats.reasons[Reason.UNKNOWN_KIND] == 0
        assert third.stats.frames_rejected == 0 and third.bad_peers() == {}

        stats = b.gossip.stats
        assert stats.reasons[Reason.UNKNOWN_KIND] == FRAMES + 1
        assert stats.frames_ignored == FRAMES + 1 and stats.frames_rejected == 0
        assert stats.envelopes_relayed == FRAMES and stats.relays_dropped == 0
        assert b.gossip.bad_peers() == {}
        assert newer.peer_id in b.host.get_connected_peers()
        assert not b.gossip.pubsub.is_peer_blacklisted(newer.peer_id)
        state = b.states[MID]
        assert all(state.holds(message_id(raw)) for raw in [*valid, marker, only_by_sync])
        assert not any(state.holds(message_id(raw)) for raw in [*unknown, synced_new])
        assert not state.holds(message_id(synced_mislabelled))
        assert message_id(synced_new) not in book.asked  # listed as a new kind: not fetched
        assert message_id(synced_mislabelled) in book.asked  # listed as a bid: IGNOREd
        kept = sorted(message_id(raw) for raw in [*valid, marker, only_by_sync])
        assert sorted(e.id for e in state.stored_envelopes()) == kept

    # On disk, after the node stopped: exactly the v1 envelopes.
    with EnvelopeLog(data_path(b.config)) as log:
        assert sorted(message_id(raw) for raw, _ in log.replay_timed(MID)) == kept
