"""Real hosts on 127.0.0.1: delivery, validation before forwarding, frames, and
robustness. Every wait is bounded (trio.fail_after) so a bug fails, never hangs."""

from __future__ import annotations

import trio
from libp2p.custom_types import TProtocol
from libp2p.utils import encode_varint_prefixed

from p2p_market.core.envelope import Envelope
from p2p_market.core.verdict import ACCEPTED, Reason, Verdict, ignore
from p2p_market.net.frame import encode_frame
from p2p_market.net.gossip import PROTOCOLS, GossipConfig, topic_for, unbatched
from p2p_market.net.scores import ScoreConfig
from tests.net.cluster import (
    MID,
    NOW,
    actor,
    bid,
    cluster,
    dial,
    nothing_waiting,
    receive,
    receive_n,
)
from tests.net.test_frame import bad_signature, non_canonical
from tests.newer import later_kind


async def test_an_envelope_reaches_every_node_of_a_line() -> None:
    async with cluster(4, [(0, 1), (1, 2), (2, 3)]) as nodes:
        raw = bid("alice")
        assert (await nodes[0].publish(MID, raw)).accepted
        for i in (1, 2, 3):
            got = await receive(nodes[i])
            assert (got.raw, got.market) == (raw, MID)
            assert got.peer == nodes[i - 1].peer_id  # the forwarding peer, not the author
        await trio.sleep(0.2)
        assert all(nothing_waiting(n) for n in nodes)  # once each, never to its author


async def test_an_envelope_reaches_every_leaf_of_a_star() -> None:
    async with cluster(4, [(0, 1), (0, 2), (0, 3)]) as nodes:
        raw = bid("bob")
        await nodes[3].publish(MID, raw)
        for i in (0, 1, 2):
            assert (await receive(nodes[i])).raw == raw


async def test_invalid_envelopes_are_never_delivered_nor_forwarded() -> None:
    # 0 is dishonest and skips its own checks; 1 and 2 are honest; 2 hears 0 only via 1.
    async with cluster(3, [(0, 1), (1, 2)]) as (evil, honest, far):
        topic = topic_for(MID)
        bad_sig, bad_form = bad_signature(bid("m1")), non_canonical(bid("m2"))
        # Its own publish path would refuse them...
        assert (await evil.publish(MID, bad_sig)).reason is Reason.BAD_SIGNATURE
        assert (await evil.publish(MID, bad_form)).reason is Reason.NOT_CANONICAL
        # ...so it publishes the raw frames itself, one alone each and one hidden
        # among good envelopes.
        good = bid("m3")
        for frame in ([bad_sig], [bad_form], [good, bad_sig]):
            await evil.pubsub.publish(topic, encode_frame(frame))
        marker = bid("m4")
        await evil.pubsub.publish(topic, encode_frame([marker]))
        # Frames leave in order but each is judged in a task of its own: once the
        # marker is through, a moment more lets every earlier frame be judged (and,
        # were it forwarded, reach 2).
        assert (await receive(honest)).raw == marker
        assert (await receive(far)).raw == marker
        await trio.sleep(0.3)
        assert nothing_waiting(honest) and nothing_waiting(far)
        assert honest.stats.frames_rejected == 3
        assert honest.stats.reasons[Reason.BAD_SIGNATURE] == 2
        assert honest.stats.reasons[Reason.NOT_CANONICAL] == 1
        assert honest.bad_peers() == {evil.peer_id: 3}
        assert far.stats.frames_rejected == 0 and far.bad_peers() == {}
        assert far.stats.frames_accepted == 1


async def test_a_peer_is_cut_off_at_the_ban_threshold() -> None:
    config = GossipConfig(scores=ScoreConfig(ban_at=2))
    async with cluster(2, [(0, 1)], config=config) as (evil, honest):
        topic = topic_for(MID)
        for i in range(2):
            await evil.pubsub.publish(topic, encode_frame([bad_signature(bid("m", i + 1))]))
        with trio.fail_after(5):
            while evil.peer_id in honest.host.get_connected_peers():
                await trio.sleep(0.05)
        assert honest.bad_peers() == {evil.peer_id: 2}
        assert honest.pubsub.is_peer_blacklisted(evil.peer_id)
        with trio.fail_after(5):  # the library's dead-peer cleanup ran
            while evil.peer_id in honest.pubsub.peer_queues:
                await trio.sleep(0.05)
        assert evil.peer_id not in honest.router.peer_protocol


async def test_a_ban_runs_out_and_the_peer_may_come_back() -> None:
    config = GossipConfig(scores=ScoreConfig(ban_at=2, ban_s=1.0))
    async with cluster(2, [(0, 1)], config=config) as (evil, honest):
        topic = topic_for(MID)
        for i in range(2):
            await evil.pubsub.publish(topic, encode_frame([bad_signature(bid("b", i + 1))]))
        with trio.fail_after(5):
            while evil.peer_id in honest.host.get_connected_peers():
                await trio.sleep(0.05)
        assert honest.pubsub.is_peer_blacklisted(evil.peer_id)
        assert honest.stats.peers_banned == 1
        with trio.fail_after(5):
            while honest.pubsub.is_peer_blacklisted(evil.peer_id):
                await trio.sleep(0.05)
        assert honest.scores.penalty(evil.peer_id, trio.current_time()) == 0.0
        with trio.fail_after(10):  # it may dial again, and is heard again
            await dial(evil, honest)
            await evil.wait_for_mesh(MID, honest.peer_id)
            await honest.wait_for_mesh(MID, evil.peer_id)
        marker = bid("b-back")
        await evil.publish(MID, marker)
        assert (await receive(honest)).raw == marker


async def test_unknown_kinds_spend_the_peers_rate_but_earn_it_no_blame() -> None:
    """A later version's kinds are never held against the peer that sends them, but
    they are frames like any other for its rate limit (their signatures are never
    checked, so they are not charged to the signer they name)."""
    config = GossipConfig(
        scores=ScoreConfig(ban_at=2), peer_frames_per_second=0.001, peer_frame_burst=3
    )
    async with cluster(2, [(0, 1)], config=config) as (newer, honest):
        author = actor("newer")
        for i in range(6):
            frame = encode_frame([later_kind(author, now=NOW, n=i)])
            await newer.pubsub.publish(topic_for(MID), frame)
        with trio.fail_after(5):
            while honest.stats.frames_ignored < 6:
                await trio.sleep(0.05)
        assert honest.stats.reasons[Reason.UNKNOWN_KIND] == 3
        assert honest.stats.reasons[Reason.RATE_LIMITED] == 3
        assert honest.stats.frames_rejected == 0 and honest.bad_peers() == {}
        assert newer.peer_id in honest.host.get_connected_peers()
        assert nothing_waiting(honest)


async def test_a_frame_of_several_envelopes_delivers_each() -> None:
    async with cluster(3, [(0, 1), (1, 2)]) as nodes:
        batch = [bid("carol", seq) for seq in range(1, 11)]
        await nodes[0].pubsub.publish(topic_for(MID), encode_frame(batch))
        for node in nodes[1:]:
            got = await receive_n(node, len(batch))
            assert [d.raw for d in got] == batch
            assert node.stats.frames_accepted == 1


async def test_under_budget_an_envelope_leaves_alone_over_budget_they_share_a_frame() -> None:
    config = GossipConfig(frames_per_second=4.0, burst=1)
    async with cluster(2, [(0, 1)], config=config) as (sender, receiver):
        first = bid("dave", 1)
        await sender.publish(MID, first)
        assert (await receive(receiver)).raw == first
        assert (sender.stats.frames_published, sender.stats.envelopes_published) == (1, 1)
        # The bucket is empty now: the next 39 wait together for the next token.
        rest = [bid("dave", seq) for seq in range(2, 41)]
        for raw in rest:
            assert (await sender.publish(MID, raw)).accepted
        got = await receive_n(receiver, len(rest))
        assert [d.raw for d in got] == rest
        assert (sender.stats.frames_published, sender.stats.envelopes_published) == (2, 40)
        assert receiver.stats.frames_accepted == 2


async def test_a_full_frame_leaves_without_waiting_for_a_token() -> None:
    # One token per 100 s: after the first envelope, only full frames (and, after
    # the linger, queues of a quarter frame) can leave within this test; full ones
    # leave as each fills, and what is left waits for the token.
    config = GossipConfig(frames_per_second=0.01, burst=1, max_envelopes_per_frame=8)
    async with cluster(2, [(0, 1)], config=config) as (sender, receiver):
        first = bid("fay", 1)
        await sender.publish(MID, first)
        assert (await receive(receiver)).raw == first
        # 17 more: two full frames, and one envelope, too few to go early (a quarter
        # of a frame is 2), that waits for the token however long it lingers
        rest = [bid("fay", seq) for seq in range(2, 19)]
        for raw in rest:
            assert (await sender.publish(MID, raw)).accepted
        got = await receive_n(receiver, 16, timeout=10)
        assert [d.raw for d in got] == rest[:16]
        assert (sender.stats.frames_published, sender.stats.envelopes_published) == (3, 17)
        await trio.sleep(0.5)
        assert nothing_waiting(receiver) and sender.stats.frames_published == 3


async def test_a_well_filled_frame_leaves_after_the_linger_without_a_token() -> None:
    # One token per 100 s, spent on the first envelope: the next 20 (more than a
    # quarter of a 64-envelope frame) leave together once the oldest has waited
    # the linger (0.25 s), not at the next token.
    config = GossipConfig(frames_per_second=0.01, burst=1)
    async with cluster(2, [(0, 1)], config=config) as (sender, receiver):
        first = bid("gia", 1)
        await sender.publish(MID, first)
        assert (await receive(receiver)).raw == first
        rest = [bid("gia", seq) for seq in range(2, 22)]
        started = trio.current_time()
        for raw in rest:
            assert (await sender.publish(MID, raw)).accepted
        got = await receive_n(receiver, 20, timeout=10)
        assert [d.raw for d in got] == rest
        assert trio.current_time() - started >= 0.25
        assert (sender.stats.frames_published, sender.stats.envelopes_published) == (2, 21)


async def test_with_batching_off_every_envelope_leaves_at_once_alone_in_its_frame() -> None:
    # The same burst as above, past the budget that batched it into one frame: with
    # batching off (bench net's baseline) it is 40 frames of one, none waiting.
    config = unbatched(GossipConfig(frames_per_second=4.0, burst=1))
    async with cluster(2, [(0, 1)], config=config) as (sender, receiver):
        sent = [bid("erin", seq) for seq in range(1, 41)]
        for raw in sent:
            assert (await sender.publish(MID, raw)).accepted
        got = await receive_n(receiver, len(sent))
        assert [d.raw for d in got] == sent
        assert (sender.stats.frames_published, sender.stats.envelopes_published) == (40, 40)
        assert receiver.stats.frames_accepted == 40


async def test_the_extra_check_decides_delivery() -> None:
    seen: set[bytes] = set()

    def once(env: Envelope) -> Verdict:  # the node's seen-cache, in miniature
        if env.id in seen:
            return ignore(Reason.DUPLICATE)
        seen.add(env.id)
        return ACCEPTED

    async with cluster(2, [(0, 1)], extra_check=once) as (a, b):
        first, second = bid("erin", 1), bid("erin", 2)
        await a.pubsub.publish(topic_for(MID), encode_frame([first]))
        await a.pubsub.publish(topic_for(MID), encode_frame([first, second]))
        assert [d.raw for d in await receive_n(b, 2)] == [first, second]
        await trio.sleep(0.2)
        assert nothing_waiting(b)


async def test_garbage_on_a_pubsub_stream_does_not_take_the_host_down() -> None:
    async with cluster(2, [(0, 1)]) as (a, b):
        # Protobuf garbage inside a valid length prefix: py-libp2p's reader lets the
        # DecodeError escape its stream handler, which would cancel the whole swarm.
        stream = await a.host.new_stream(b.peer_id, [TProtocol(PROTOCOLS[0])])
        await stream.write(encode_varint_prefixed(b"\xff\xff\xff\xff"))
        await trio.sleep(0.3)
        raw = bid("frank")
        await a.publish(MID, raw)
        assert (await receive(b)).raw == raw
        assert b.stats.validator_errors == 0


async def test_cancelling_leaves_no_task_and_no_listener_behind() -> None:
    def tasks_under(task: trio.lowlevel.Task) -> int:
        return sum(1 + tasks_under(t) for n in task.child_nurseries for t in n.child_tasks)

    me = trio.lowlevel.current_task()
    nurseries_before = list(me.child_nurseries)
    before = tasks_under(trio.lowlevel.current_root_task())
    ports: list[int] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            async with cluster(2, [(0, 1)]) as nodes:
                await nodes[0].publish(MID, bid("grace"))
                await receive(nodes[1])
                ports = [int(n.addr.split("/tcp/")[1].split("/")[0]) for n in nodes]
            nursery.cancel_scope.cancel()
    assert me.child_nurseries == nurseries_before
    assert tasks_under(trio.lowlevel.current_root_task()) == before
    for port in ports:
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            continue
        await stream.aclose()
        raise AssertionError(f"port {port} still accepts connections")
