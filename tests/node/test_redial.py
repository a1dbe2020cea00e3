"""The redial schedule of dropped peers (node/redial.py): 1 s, then doubling up to
the cap; at once when the peer's addresses change; nothing once it is back. The
dials themselves are tested against a real frozen process in
tests/net/test_keepalive.py and tests/e2e/test_dead_peer_e2e.py."""

from __future__ import annotations

import trio
from libp2p.peer.id import ID

from p2p_market.net.host import peer_id_of
from p2p_market.node.redial import Redialer
from tests.node.hosts import keys, started_hosts

PEER = peer_id_of(keys("redial-peer", 1)[0].public_key)


def test_back_off_doubles_to_the_cap_and_new_addresses_skip_it() -> None:
    addrs: dict[ID, tuple[str, ...]] = {PEER: ("/ip4/127.0.0.1/tcp/1/p2p/x",)}

    async def main() -> None:
        async with started_hosts(*keys("redial-host", 1)) as (host,):
            redialer = Redialer(host, max_delay_s=8.0, addrs_of=lambda p: addrs.get(p, ()))
            redialer.dropped(PEER)
            t0 = redialer.lost[PEER].since
            assert redialer.due(t0) == []
            assert redialer.due(t0 + 1.0) == [PEER]
            gaps = []
            now = t0 + 1.0
            for _ in range(5):
                redialer.failed(PEER, now)
                gap = redialer.lost[PEER].next_at - now
                gaps.append(gap)
                assert redialer.due(now + gap - 0.01) == []
                now += gap
            assert gaps == [2.0, 4.0, 8.0, 8.0, 8.0]
            redialer.failed(PEER, now)
            addrs[PEER] = ("/ip4/127.0.0.2/tcp/1/p2p/x",)  # peer exchange told a new one
            assert redialer.due(now + 0.01) == [PEER]
            redialer.heard(PEER)
            assert redialer.due(now + 100) == [] and redialer.reconnected == 1

    trio.run(main)


def test_a_peer_is_given_up_after_a_while() -> None:
    async def main() -> None:
        async with started_hosts(*keys("redial-host-2", 1)) as (host,):
            redialer = Redialer(host, give_up_s=60.0, addrs_of=lambda p: ("/ip4/127.0.0.1/tcp/1",))
            redialer.dropped(PEER)
            t0 = redialer.lost[PEER].since
            assert redialer.due(t0 + 61.0) == []
            assert PEER not in redialer.lost

    trio.run(main)
