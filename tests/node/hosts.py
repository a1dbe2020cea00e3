"""Bare py-libp2p hosts on 127.0.0.1 for the stream-protocol tests (sync, direct):
real Noise + yamux connections, no pubsub, no mocks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import trio
from libp2p.abc import IHost

from p2p_market.core.crypto import SigningKey, devnet_key
from p2p_market.net.host import connect_all, dial_addr, make_host


async def _close(host: IHost) -> None:
    # Shielded, as in Gossip._close_host: leaving `host.run` alone leaves the listener.
    with trio.move_on_after(5) as scope:
        scope.shield = True
        await host.close()


@asynccontextmanager
async def started_hosts(*keys: SigningKey) -> AsyncIterator[list[IHost]]:
    """One running host per key, connected to nobody."""
    async with AsyncExitStack() as stack:
        hosts: list[IHost] = []
        for key in keys:
            host, listen = make_host(key)
            await stack.enter_async_context(host.run(listen))
            stack.push_async_callback(_close, host)
            hosts.append(host)
        yield hosts


@asynccontextmanager
async def running_hosts(*keys: SigningKey) -> AsyncIterator[list[IHost]]:
    """One running host per key, each connected to the first (a star)."""
    async with started_hosts(*keys) as hosts:
        with trio.fail_after(10):
            assert await connect_all(hosts[0], [dial_addr(h) for h in hosts[1:]]) == {}
        yield hosts


def keys(prefix: str, n: int) -> list[SigningKey]:
    return [devnet_key(f"{prefix}-{i}") for i in range(n)]
