"""A peer that was unreachable is dialled again as soon as it is back. py-libp2p's
swarm refuses, for 60 s after the last failure, to dial a peer whose every address
failed ("recently failed all addresses (negative cache)"); a node that redials
through a partition keeps that block fresh, and could not reconnect for up to a
minute after the link came back (issue 13). `connect_all` lifts it for the peers
we choose to dial."""

from __future__ import annotations

import trio

from p2p_market.net.host import connect_all, dial_addr
from tests.node.hosts import keys, started_hosts
from tests.node.linkgate import LinkGate


async def test_a_peer_that_comes_back_is_dialled_at_once() -> None:
    async with started_hosts(*keys("redial-back", 2)) as (a, b):
        gate = LinkGate(b)
        where = [dial_addr(b)]
        await gate.cut()
        for _ in range(2):  # redials through the cut: each one fails
            failed = await connect_all(a, where, timeout=5)
            assert list(failed) == where
        gate.restore()
        with trio.fail_after(5):
            assert await connect_all(a, where, timeout=5) == {}
        assert b.get_id() in a.get_network().connections
