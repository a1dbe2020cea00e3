"""Connection churn against a real host: many short, cleanly closed inbound
connections, each a full TCP + Noise + yamux upgrade on the listening side.

The churners are real libp2p identities (hosts that are never run): each
connection is the library's own dial and upgrade (the TCP transport, the Noise and
yamux negotiation of `Swarm.upgrader`) and then a yamux go-away and a TCP close.
Skipping the dialling swarm costs nothing that matters to the listener, which
sees what any dialling peer shows it (and takes an inbound slot, registers the
connection, notifies, tears it down), and it avoids the 250 ms happy-eyeballs wait
of every `host.connect`. Several identities share the work because the library's
resource manager admits at most 10 connections per second per peer (burst 50)."""

from __future__ import annotations

from dataclasses import dataclass

import multiaddr
import trio
from libp2p.network.swarm import Swarm
from libp2p.peer.peerinfo import info_from_p2p_addr

from p2p_market.core.crypto import devnet_key
from p2p_market.net.host import make_host


@dataclass
class Churned:
    ok: int = 0
    failed: int = 0
    elapsed_s: float = 0.0


async def churn(target: str, connections: int, *, identities: int = 10) -> Churned:
    """Open and cleanly close `connections` connections to `target` (a full
    multiaddr with /p2p), `identities` peers at a time, each peer one connection
    after the other."""
    info = info_from_p2p_addr(multiaddr.Multiaddr(target))
    addr = info.addrs[0]
    result = Churned()
    started = trio.current_time()
    seed = int(started * 1000)  # fresh identities per run

    async def one_peer(index: int, count: int) -> None:
        host, _ = make_host(devnet_key(f"churner-{index}-{seed}"))
        swarm = host.get_network()
        assert isinstance(swarm, Swarm)
        transport = swarm.transport_manager.transport_for_dialing(addr)
        assert transport is not None
        for _ in range(count):
            try:
                with trio.fail_after(10):
                    raw = await transport.dial(addr)
                    secured = await swarm.upgrader.upgrade_security(raw, True, info.peer_id)
                    muxed = await swarm.upgrader.upgrade_connection(secured, info.peer_id)
                    await muxed.close()
                result.ok += 1
            except Exception:  # refused: the point of the test that shows the bug
                result.failed += 1

    async with trio.open_nursery() as nursery:
        for i in range(identities):
            share = connections // identities + (1 if i < connections % identities else 0)
            nursery.start_soon(one_peer, i, share)
    result.elapsed_s = trio.current_time() - started
    return result
