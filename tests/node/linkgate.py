"""A node's network link, cut and restored in one trio run: every connection it
holds is closed, every dial it makes fails at the transport and every connection
a peer opens to it is dropped before its handshake, until `restore`.

The gate sits below py-libp2p's swarm (the transport's dial, the listener's
handler), so what happens above it is the library's own: dials fail as they do
when a host is unreachable (its negative cache and retries included), peers see
connections go and their redials fail, and nothing is faked about the node itself.
One process cannot drop its own packets on 127.0.0.1 with a firewall rule, so the
cut is a refused connection rather than silence: what it does not show is TCP's
own back-off on a link that drops packets."""

from __future__ import annotations

from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.transport.exceptions import OpenConnectionError


class LinkGate:
    def __init__(self, host: IHost) -> None:
        self.host = host
        self.down = False
        self.refused = 0
        swarm: Any = host.get_network()
        self._swarm = swarm
        for transport in swarm.transport_manager.get_transports():
            real_dial = transport.dial

            async def dial(maddr: Any, _real: Any = real_dial) -> Any:
                if self.down:
                    self.refused += 1
                    raise OpenConnectionError("link down (LinkGate)")
                return await _real(maddr)

            transport.dial = dial
        real_inbound = swarm._handle_inbound_connection

        async def inbound(raw: Any, maddr: Any) -> None:
            if self.down:
                self.refused += 1
                await raw.close()
                return
            await real_inbound(raw, maddr)

        swarm._handle_inbound_connection = inbound

    async def cut(self) -> None:
        """Down: drop every connection now and refuse new ones."""
        self.down = True
        with trio.fail_after(5):
            # Again until none is left: a connection whose handshake began before
            # the cut is added once it completes.
            while self._swarm.connections:
                for peer in list(self._swarm.connections):
                    await self._swarm.close_peer(peer)
                await trio.sleep(0.05)

    def restore(self) -> None:
        self.down = False
