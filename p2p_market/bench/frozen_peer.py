"""A gossiping py-libp2p node in a process of its own (`python -m
p2p_market.bench.frozen_peer NAME`): prints its full address on one line, then
gossips on the devnet market until killed. A process of its own so that it can be
frozen (SIGSTOP): its kernel keeps the TCP connections open and sends no FIN or RST,
as a hung machine's or a cut link's do, which no peer in the caller's own process
can do. Used by the liveness benchmark and the dead-peer tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import multiaddr
import trio
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr

from p2p_market.core.crypto import devnet_key
from p2p_market.core.envelope import market_id
from p2p_market.markets.devnet import default_market
from p2p_market.net.gossip import Gossip
from p2p_market.net.host import make_host

MID = market_id(default_market())


async def _serve(name: str) -> None:
    host, listen = make_host(devnet_key(f"frozen-peer-{name}"))
    gossip = Gossip(host, listen, markets=[MID])
    async with trio.open_nursery() as nursery:
        await nursery.start(gossip.run)
        print(gossip.addr, flush=True)
        async for _ in gossip.deliveries:
            pass


@contextmanager
def peer_process(name: str) -> Iterator[tuple[subprocess.Popen[str], str, ID]]:
    """A running peer process, its address and peer id; killed after (resumed
    first, if it was frozen)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "p2p_market.bench.frozen_peer", name],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        addr = proc.stdout.readline().strip()
        if not addr:
            raise RuntimeError("the peer process printed no address")
        yield proc, addr, info_from_p2p_addr(multiaddr.Multiaddr(addr)).peer_id
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
        proc.wait(timeout=10)


def freeze(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGSTOP)


def resume(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGCONT)


if __name__ == "__main__":
    trio.run(_serve, sys.argv[1])
