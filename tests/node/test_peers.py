"""Peer exchange between real hosts on 127.0.0.1: an answer is only a hint, and
the asker dials only addresses inside the networks it is configured for; an asker
cannot hold more than its share of the answering side."""

from __future__ import annotations

import contextlib
import random
import socket

import pytest
import trio
from libp2p.abc import INetStream

from p2p_market.net.host import PEER_BUSY, dial_addr, make_host
from p2p_market.node import peers, wire
from p2p_market.node.peers import DialScopes, Scope
from tests.node.hosts import keys, running_hosts, started_hosts

LOOP = Scope.LOOPBACK
LOOPBACK_ONLY = DialScopes.for_node(["/ip4/127.0.0.1/tcp/0"], [])
PEER = "12D3KooWBDosMP18J4dvRUddeWavaofLsWiM9eNn2uiMhaVFj6kq"


@pytest.mark.parametrize(
    ("listen", "bootstrap", "allowed"),
    [
        (["/ip4/127.0.0.1/tcp/0"], [], {Scope.LOOPBACK}),
        (["/ip6/::1/tcp/0"], [], {Scope.LOOPBACK}),
        (["/ip4/10.0.0.5/tcp/4001"], [], {Scope.PRIVATE}),
        (["/ip4/192.168.1.9/tcp/4001"], [], {Scope.PRIVATE}),
        (["/ip4/203.0.113.0/tcp/4001", "/ip4/8.8.4.4/tcp/4001"], [], {Scope.PRIVATE, Scope.PUBLIC}),
        (["/ip4/8.8.4.4/tcp/4001"], [], {Scope.PUBLIC}),
        (["/ip4/0.0.0.0/tcp/4001"], [], {Scope.PRIVATE, Scope.PUBLIC}),
        (["/ip4/0.0.0.0/tcp/4001"], [f"/ip4/127.0.0.1/tcp/4002/p2p/{PEER}"], set(Scope)),
        (
            ["/ip4/8.8.4.4/tcp/4001"],
            [f"/ip4/10.1.1.1/tcp/4002/p2p/{PEER}"],
            {Scope.PUBLIC, Scope.PRIVATE},
        ),
        (["/ip4/8.8.4.4/tcp/4001"], [f"/dns4/boot.example/tcp/4002/p2p/{PEER}"], {Scope.PUBLIC}),
    ],
)
def test_a_node_dials_the_scopes_of_its_listen_and_bootstrap_addresses(
    listen: list[str], bootstrap: list[str], allowed: set[Scope]
) -> None:
    assert DialScopes.for_node(listen, bootstrap).allowed == allowed


@pytest.mark.parametrize(
    ("addr", "dialled"),
    [
        (f"/ip4/127.0.0.1/tcp/4001/p2p/{PEER}", True),
        (f"/ip4/127.9.9.9/tcp/4001/p2p/{PEER}", True),
        (f"/ip6/::1/tcp/4001/p2p/{PEER}", True),
        (f"/ip4/10.0.0.1/tcp/4001/p2p/{PEER}", False),  # the node's LAN
        (f"/ip4/169.254.169.254/tcp/80/p2p/{PEER}", False),  # a cloud metadata service
        (f"/ip4/8.8.8.8/tcp/53/p2p/{PEER}", False),  # a third party
        (f"/ip6/::ffff:10.0.0.1/tcp/4001/p2p/{PEER}", False),
        (f"/ip4/0.0.0.0/tcp/4001/p2p/{PEER}", False),
        (f"/dns4/localhost/tcp/4001/p2p/{PEER}", False),  # a name resolves anywhere
        (f"/ip4/127.0.0.1/tcp/0/p2p/{PEER}", False),
        (f"/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{PEER}", False),
        # a node behind a relay: judged by its relay's address (net/relay.py)
        ("/ip4/127.0.0.1/tcp/4001/p2p/A/p2p-circuit/p2p/B", True),
        ("/ip4/10.0.0.1/tcp/4001/p2p/A/p2p-circuit/p2p/B", False),
    ],
)
def test_a_loopback_node_dials_only_loopback_tcp_addresses(addr: str, dialled: bool) -> None:
    assert LOOPBACK_ONLY.allows(addr) is dialled


def test_a_public_node_does_not_dial_loopback_or_private_addresses() -> None:
    public = DialScopes.for_node(["/ip4/8.8.4.4/tcp/4001"], [])
    assert public.allows(f"/ip4/1.1.1.1/tcp/4001/p2p/{PEER}")
    assert not public.allows(f"/ip4/127.0.0.1/tcp/4001/p2p/{PEER}")
    assert not public.allows(f"/ip4/192.168.0.1/tcp/4001/p2p/{PEER}")
    assert not public.allows(f"/ip4/100.64.0.1/tcp/4001/p2p/{PEER}")


def this_machines_other_address() -> str | None:
    """A non-loopback IPv4 address of this machine (none sent: a UDP socket's
    connect only picks the route), or None if it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.123", 9))
        except OSError:
            return None
        ip: str = probe.getsockname()[0]
    return None if ip.startswith("127.") else ip


async def test_an_exchanged_address_outside_the_nodes_networks_is_not_dialled() -> None:
    """A loopback-only node asks a lying peer, which names a real peer on loopback
    and, under this machine's other address, another real peer that listens on
    every interface (so a dial would reach it and be counted), plus addresses of
    third parties. Only the loopback one is dialled."""
    other_ip = this_machines_other_address()
    names = keys("pex-a", 3)
    async with running_hosts(*names[:2]) as (node, liar), started_hosts(names[2]) as (inside,):
        outside_host, outside_listen = make_host(keys("pex-a-out", 1)[0], ["/ip4/0.0.0.0/tcp/0"])
        async with outside_host.run(outside_listen):
            reached: list[object] = []
            peers.watch_connections(outside_host, reached.append)
            port = str(outside_host.get_addrs()[0]).split("/")[4]
            outside_id = outside_host.get_id().to_base58()
            listing = [
                {"id": outside_id, "addrs": [f"/ip4/{other_ip or '10.9.9.9'}/tcp/{port}"]},
                {"id": PEER, "addrs": ["/ip4/169.254.169.254/tcp/80", "/dns4/localhost/tcp/1"]},
                {"id": inside.get_id().to_base58(), "addrs": [dial_addr(inside)]},
            ]

            async def lie(stream: INetStream) -> None:
                await wire.read_msg(stream)
                await wire.write_msg(stream, {"peers": listing})
                await wire.close_quietly(stream)

            liar.set_stream_handler(peers.PROTOCOL, lie)
            with trio.fail_after(15):
                report = await peers.exchange(
                    node, target=8, rng=random.Random(1), scopes=LOOPBACK_ONLY
                )
                await trio.sleep(0.5)  # a dial would have arrived by now
            assert report.dialled == [dial_addr(inside)]
            assert report.connected == 1 and report.outside == 3
            assert inside.get_id() in peers.connected_peers(node)
            assert reached == []  # the peer outside was never dialled
            print(f"outside addresses dialled: {len(reached)} (via {other_ip})")


async def test_one_peer_cannot_hold_more_than_one_peer_exchange_stream() -> None:
    async with running_hosts(*keys("pex-b", 3)) as (node, greedy, honest):
        server = peers.attach(node, max_streams=8, max_streams_per_peer=1)
        with trio.fail_after(10):
            held = await greedy.new_stream(node.get_id(), [peers.PROTOCOL])  # asks nothing
            await wire.write_bytes(held, b"\x00", timeout_s=1)  # a request, begun
            while server.slots.active == 0:
                await trio.sleep(0.01)
            second = await greedy.new_stream(node.get_id(), [peers.PROTOCOL])
            await wire.write_msg(second, {})
            assert await wire.read_msg(second) == {"error": PEER_BUSY}
            found = await peers.ask_peers(honest, node.get_id(), LOOPBACK_ONLY, peers.Exchanged())
        assert found == [dial_addr(greedy)]  # the honest asker got its answer
        assert server.refused[PEER_BUSY] == 1 and server.answered == 1
        with trio.fail_after(peers.TIMEOUT_S + 2):  # the held stream times out
            while server.slots.active:
                await trio.sleep(0.05)


async def test_an_oversized_answer_is_not_read_at_all() -> None:
    """40,000 listed peers (the attack run's answer) are not read, even the one in
    front that the node could dial: past MAX_ANSWER_BYTES the answer is a failure."""
    async with (
        running_hosts(*keys("pex-c", 2)) as (node, liar),
        started_hosts(keys("pex-c-in", 1)[0]) as (inside,),
    ):
        bogus = {"id": PEER, "addrs": ["/ip4/127.0.0.1/tcp/1"]}
        listing = [{"id": inside.get_id().to_base58(), "addrs": [dial_addr(inside)]}]
        listing += [bogus] * 40_000

        async def flood(stream: INetStream) -> None:
            await wire.read_msg(stream)
            await wire.write_msg(stream, {"peers": listing}, timeout_s=30)
            await wire.close_quietly(stream)

        liar.set_stream_handler(peers.PROTOCOL, flood)
        with trio.fail_after(10):
            found = await peers.ask_peers(node, liar.get_id(), LOOPBACK_ONLY, peers.Exchanged())
    assert found == []


async def test_the_rest_of_an_oversized_answer_is_not_taken_in_either() -> None:
    """The asker resets the stream of an answer it refuses on its length: a peer that
    goes on sending (and never ends its side) fills no buffer of the asker's muxer.
    With a close instead of the reset, the asker's muxer took all 7 MB and kept it
    while the peer kept the stream open (the bench's `peer-exchange` row)."""
    answer = wire.encode({"peers": [{"id": PEER, "addrs": ["/ip4/10.0.0.1/tcp/1"]}] * 100_000})
    answer = len(answer).to_bytes(4, "big") + answer
    sent = 0
    async with running_hosts(*keys("pex-d", 2)) as (node, liar):

        async def flood(stream: INetStream) -> None:
            nonlocal sent
            await wire.read_msg(stream)
            with contextlib.suppress(Exception):
                for i in range(0, len(answer), 16 * 1024):
                    await stream.write(answer[i : i + 16 * 1024])
                    sent = i + 16 * 1024
            await trio.sleep_forever()  # never ends its side

        liar.set_stream_handler(peers.PROTOCOL, flood)
        with trio.fail_after(10):
            found = await peers.ask_peers(node, liar.get_id(), LOOPBACK_ONLY, peers.Exchanged())
        await trio.sleep(1.0)
        conns = node.get_network().connections[liar.get_id()]
        muxers = [c.muxed_conn for c in (conns if isinstance(conns, list) else [conns])]
        buffered = sum(len(b) for m in muxers for b in getattr(m, "stream_buffers", {}).values())
    assert found == []
    assert len(answer) > 4 * 2**20
    assert sent < 1 * 2**20 and buffered < 1 * 2**20, (sent, buffered)
