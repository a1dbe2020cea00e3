"""What a node tells peers about its addresses (net/addrs.py), with real hosts.

Issue 13: bound to 0.0.0.0, a node told `/ip4/0.0.0.0/…` in identify and peer
exchange, so nobody could dial it by what it told and the network stayed a star.
A "remote" peer here is one connected over this machine's non-loopback interface
address (the test is skipped on a machine without one)."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

import multiaddr
import pytest
import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID

from p2p_market.core.crypto import devnet_key
from p2p_market.net import relay
from p2p_market.net.addrs import expand, for_remote, interface_ips, local_only
from p2p_market.net.host import connect_all, dial_addr, make_host
from p2p_market.node import peers

REMOTE_IPS = [ip for ip in interface_ips(4) if not ip.is_loopback]
needs_remote = pytest.mark.skipif(
    not REMOTE_IPS, reason="this machine has no non-loopback IPv4 address to connect over"
)


@asynccontextmanager
async def hosts(
    *specs: tuple[str, Sequence[str], Sequence[str]],
) -> AsyncIterator[list[IHost]]:
    """One running host per (name, listen, announce)."""
    async with AsyncExitStack() as stack:
        out: list[IHost] = []
        for name, listen, announce in specs:
            host, addrs = make_host(devnet_key(f"addrs-{name}"), listen, announce=announce)
            await stack.enter_async_context(host.run(addrs))

            async def close(host: IHost = host) -> None:
                with trio.move_on_after(5) as scope:
                    scope.shield = True
                    await host.close()

            stack.push_async_callback(close)
            peers.attach(host)
            out.append(host)
        yield out


def port_of(host: IHost) -> int:
    return int(str(host.get_transport_addrs()[0]).split("/")[4])


def at(host: IHost, ip: str) -> str:
    """The host's full address on `ip` (it listens on 0.0.0.0)."""
    return f"/ip4/{ip}/tcp/{port_of(host)}/p2p/{host.get_id().to_base58()}"


async def told(observer: IHost, peer: ID, ready: Callable[[list[str]], bool]) -> list[str]:
    """The addresses `observer` holds for `peer` once `ready` holds (identify ran)."""
    with trio.fail_after(10):
        while True:
            got = [str(a) for a in observer.get_peerstore().addrs(peer)]
            if ready(got):
                return got
            await trio.sleep(0.05)


def test_a_wildcard_stands_for_the_interface_addresses() -> None:
    wild = multiaddr.Multiaddr("/ip4/0.0.0.0/tcp/4701")
    got = [str(a) for a in expand([wild])]
    assert got, "a machine has at least loopback"
    assert all("0.0.0.0" not in a and a.endswith("/tcp/4701") for a in got)
    if REMOTE_IPS:  # loopback is left out once there is anything else to tell
        assert got == [f"/ip4/{ip}/tcp/4701" for ip in REMOTE_IPS]
    else:
        assert got == ["/ip4/127.0.0.1/tcp/4701"]
    local = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/1")]
    assert [str(a) for a in expand(local)] == ["/ip4/127.0.0.1/tcp/1"]  # a local network
    assert for_remote(["/ip4/0.0.0.0/tcp/1", "/ip6/::1/tcp/1"], remote_local=True) == [
        "/ip4/0.0.0.0/tcp/1",
        "/ip6/::1/tcp/1",
    ]
    assert for_remote(["/ip4/0.0.0.0/tcp/1", "/ip6/::1/tcp/1"], remote_local=False) == []


async def test_announce_replaces_the_listen_addresses() -> None:
    async with hosts(("a", ["/ip4/0.0.0.0/tcp/0"], ["/ip4/203.0.113.7/tcp/4701"])) as (a,):
        peer = a.get_id().to_base58()
        assert [str(x) for x in a.get_addrs()] == [f"/ip4/203.0.113.7/tcp/4701/p2p/{peer}"]
        assert dial_addr(a) == f"/ip4/203.0.113.7/tcp/4701/p2p/{peer}"


async def test_the_addresses_are_reused_for_a_while_but_not_before_listening(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """py-libp2p asks for them with every pubsub RPC (net/relay.py ADDRS_TTL_S): the
    answer is reused, except an empty one from before the host listened, and worked
    out again once the time is up."""
    host, listen = make_host(devnet_key("addrs-ttl"), ["/ip4/127.0.0.1/tcp/0"])
    assert host.get_addrs() == []
    worked_out = 0
    transport_addrs = host.get_transport_addrs

    def counted() -> list[multiaddr.Multiaddr]:
        nonlocal worked_out
        worked_out += 1
        return transport_addrs()

    host.get_transport_addrs = counted  # type: ignore[method-assign]
    monkeypatch.setattr(relay, "ADDRS_TTL_S", 0.2)
    async with host.run(listen):
        first = [str(a) for a in host.get_addrs()]
        port = port_of(host)
        assert first == [f"/ip4/127.0.0.1/tcp/{port}/p2p/{host.get_id()}"]
        before = worked_out
        for _ in range(50):
            assert [str(a) for a in host.get_addrs()] == first
        assert worked_out == before
        await trio.sleep(0.3)
        assert [str(a) for a in host.get_addrs()] == first
        assert worked_out == before + 1
        await host.close()


@needs_remote
async def test_a_wildcard_node_tells_no_unspecified_and_banners_a_concrete_address() -> None:
    async with hosts(("a", ["/ip4/0.0.0.0/tcp/0"], [])) as (a,):
        addrs = [str(x) for x in a.get_addrs()]
        assert not any("/0.0.0.0/" in x for x in addrs), addrs
        assert any(f"/ip4/{ip}/" in x for x in addrs for ip in REMOTE_IPS), addrs
        banner = dial_addr(a)  # what the ready line and the prover's banner print
        assert not local_only(banner), banner


@needs_remote
async def test_identify_tells_loopback_only_to_a_peer_on_loopback() -> None:
    """A host that has a loopback address to tell (here by announce) tells it to a
    peer connected over loopback only; a peer over the interface address is told
    the rest."""
    remote = str(REMOTE_IPS[0])
    async with hosts(("probe", ["/ip4/0.0.0.0/tcp/0"], [])) as (probe,):
        port = port_of(probe)  # a free port for the hub: its announce names it
    announce = [f"/ip4/127.0.0.1/tcp/{port}", f"/ip4/{remote}/tcp/{port}"]
    async with hosts(
        ("hub", [f"/ip4/0.0.0.0/tcp/{port}"], announce),
        ("near", ["/ip4/127.0.0.1/tcp/0"], []),
        ("far", [f"/ip4/{remote}/tcp/0"], []),
    ) as (hub, near, far):
        assert await connect_all(near, [at(hub, "127.0.0.1")]) == {}
        assert await connect_all(far, [at(hub, remote)]) == {}
        both = {a.removesuffix(f"/p2p/{hub.get_id()}") for a in map(str, hub.get_addrs())}
        assert both == set(announce)
        # The loopback peer holds both addresses (the dial gave it the loopback one;
        # identify added the other).
        await told(near, hub.get_id(), lambda got: any(f"/{remote}/" in a for a in got))
        # The remote peer holds only the interface address once identify ran: the
        # loopback one was never told (identify replaces what the peer held).
        with trio.move_on_after(3):
            await told(far, hub.get_id(), lambda got: any(local_only(a) for a in got))
        seen_far = [str(a) for a in far.get_peerstore().addrs(hub.get_id())]
        assert seen_far and not any(local_only(a) for a in seen_far), seen_far


@needs_remote
async def test_peer_exchange_lists_loopback_only_to_an_asker_on_loopback() -> None:
    """A peer that told the hub only 127.0.0.1 (a local node) is not handed to an
    asker on another address; a loopback asker still gets it."""
    remote = str(REMOTE_IPS[0])
    everything = peers.DialScopes(frozenset(peers.Scope))
    async with hosts(
        ("hub2", ["/ip4/0.0.0.0/tcp/0"], []),
        ("local", ["/ip4/127.0.0.1/tcp/0"], []),
        ("wide", ["/ip4/0.0.0.0/tcp/0"], []),
        ("near2", ["/ip4/127.0.0.1/tcp/0"], []),
        ("far2", [f"/ip4/{remote}/tcp/0"], []),
    ) as (hub, local, wide, near, far):
        for h in (local, near):
            assert await connect_all(h, [at(hub, "127.0.0.1")]) == {}
        for h in (wide, far):
            assert await connect_all(h, [at(hub, remote)]) == {}
        await told(hub, local.get_id(), lambda got: any("127.0.0.1" in a for a in got))
        await told(hub, wide.get_id(), lambda got: any(remote in a for a in got))

        far_gets = await peers.ask_peers(far, hub.get_id(), everything, peers.Exchanged())
        assert far_gets and not any(local_only(a) for a in far_gets), far_gets
        assert not any(local.get_id().to_base58() in a for a in far_gets), far_gets
        assert any(wide.get_id().to_base58() in a for a in far_gets), far_gets

        near_gets = await peers.ask_peers(near, hub.get_id(), everything, peers.Exchanged())
        assert any(local.get_id().to_base58() in a for a in near_gets), near_gets


def test_interface_addresses_never_include_link_local() -> None:
    for version in (4, 6):
        for ip in interface_ips(version):
            assert not ip.is_link_local and not ip.is_unspecified
            assert isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address)
