"""A gossiping py-libp2p node in a process of its own (`python -m
tests.net.peer_process NAME`): prints its full address on one line, then gossips on
the test market until killed. A separate process, so that a test can freeze it
(SIGSTOP): its kernel keeps the TCP connections open and sends no FIN or RST, as a
hung machine or a cut link does, which no peer in the test's own process can do."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import multiaddr
import trio
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr

ROOT = Path(__file__).resolve().parents[2]


async def _serve(name: str) -> None:
    from p2p_market.core.crypto import devnet_key
    from p2p_market.net.gossip import Gossip
    from p2p_market.net.host import make_host
    from tests.net.cluster import MID

    host, listen = make_host(devnet_key(f"peer-process-{name}"))
    gossip = Gossip(host, listen, markets=[MID])
    async with trio.open_nursery() as nursery:
        await nursery.start(gossip.run)
        print(gossip.addr, flush=True)
        async for _ in gossip.deliveries:
            pass


@contextmanager
def peer_process(name: str) -> Iterator[tuple[subprocess.Popen[str], str, ID]]:
    """A running peer process, its address and peer id; killed after (and resumed
    first, if the test froze it)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.net.peer_process", name],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        addr = proc.stdout.readline().strip()
        assert addr, "the peer process printed no address"
        yield proc, addr, info_from_p2p_addr(multiaddr.Multiaddr(addr)).peer_id
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
        proc.wait(timeout=10)


if __name__ == "__main__":
    trio.run(_serve, sys.argv[1])
