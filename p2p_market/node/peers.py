"""Peer exchange (`/p2p-market/peers/1`): a node learns more peers than its
bootstrap list by asking the peers it has for theirs, so the network does not
hang on a few bootstrap nodes and a lost bootstrap node does not isolate anyone.

The answer lists connected peers only (addresses that worked a moment ago), capped;
the asker dials the ones it does not know, concurrently, until it has `target`
connections. Addresses are only hints: dialing authenticates the peer (Noise).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any, Final

import multiaddr
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from p2p_market.net.host import connect_all, guarded
from p2p_market.node import wire

log = logging.getLogger(__name__)

PROTOCOL: Final = TProtocol("/p2p-market/peers/1")
MAX_PEERS_LISTED: Final = 32
MAX_ADDRS_PER_PEER: Final = 4
TIMEOUT_S: Final = 5.0


def connected_peers(host: IHost) -> list[ID]:
    return list(host.get_network().connections)


class _ConnectionWatch(INotifee):
    """Tells `on_connect` the peer of every connection that comes up, in or out."""

    def __init__(self, on_connect: Callable[[ID], None]) -> None:
        self.on_connect = on_connect

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self.on_connect(conn.muxed_conn.peer_id)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        return None

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None


def watch_connections(host: IHost, on_connect: Callable[[ID], None]) -> None:
    """Call `on_connect(peer)` (synchronously, it must not block) whenever a connection
    comes up. Polling the connection table instead misses a peer that went and came
    back between two polls (a node restarted on its address), and a poll period is
    a delay before the first sync with a node that holds what others lack."""
    host.get_network().register_notifee(_ConnectionWatch(on_connect))


def _listing(host: IHost, exclude: ID) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    store = host.get_peerstore()
    for peer in connected_peers(host):
        if peer == exclude:
            continue
        try:
            addrs = [str(a) for a in store.addrs(peer)][:MAX_ADDRS_PER_PEER]
        except Exception:  # the peerstore raises when it has no address
            continue
        if addrs:
            out.append({"id": peer.to_base58(), "addrs": addrs})
        if len(out) >= MAX_PEERS_LISTED:
            break
    return out


def attach(host: IHost) -> None:
    async def handle(stream: INetStream) -> None:
        try:
            await wire.read_msg(stream, max_bytes=1024, timeout_s=TIMEOUT_S)
            asker = stream.muxed_conn.peer_id
            await wire.write_msg(stream, {"peers": _listing(host, asker)}, timeout_s=TIMEOUT_S)
        finally:
            await wire.close_quietly(stream)

    host.set_stream_handler(PROTOCOL, guarded(handle, PROTOCOL))


def _dialable(entry: Any, own: ID) -> list[str]:
    """Full multiaddrs (with /p2p/) from one listed peer, or none if malformed."""
    if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
        return []
    try:
        peer = ID.from_base58(entry["id"])
    except Exception:
        return []
    if peer == own or not isinstance(entry.get("addrs"), list | tuple):
        return []
    out = []
    for addr in entry["addrs"][:MAX_ADDRS_PER_PEER]:
        if not isinstance(addr, str):
            continue
        try:
            multiaddr.Multiaddr(addr)
        except Exception:
            continue
        out.append(addr if "/p2p/" in addr else f"{addr}/p2p/{peer.to_base58()}")
    return out[:1]


async def ask_peers(host: IHost, peer: ID) -> list[str]:
    """The dialable addresses `peer` knows; empty on any failure."""
    try:
        stream = await host.new_stream(peer, [PROTOCOL])
    except Exception as exc:
        log.debug("peer exchange with %s failed to open: %s", peer, exc)
        return []
    try:
        await wire.write_msg(stream, {}, timeout_s=TIMEOUT_S)
        answer = await wire.read_msg(stream, timeout_s=TIMEOUT_S)
    except wire.WireError as exc:
        log.debug("peer exchange with %s failed: %s", peer, exc)
        return []
    finally:
        await wire.close_quietly(stream)
    listed = answer.get("peers") if isinstance(answer, dict) else None
    if not isinstance(listed, list | tuple):
        return []
    own = host.get_id()
    known = set(connected_peers(host))
    out: list[str] = []
    for entry in listed[:MAX_PEERS_LISTED]:
        addrs = _dialable(entry, own)
        if addrs and ID.from_base58(entry["id"]) not in known:
            out.extend(addrs)
    return out


async def exchange(host: IHost, *, target: int, rng: random.Random) -> int:
    """One round: if below `target` connections, ask a random peer for more and dial
    them. Returns how many new connections were made."""
    peers = connected_peers(host)
    if not peers or len(peers) >= target:
        return 0
    candidates = await ask_peers(host, rng.choice(peers))
    candidates = candidates[: target - len(peers)]
    if not candidates:
        return 0
    failures = await connect_all(host, candidates)
    return len(candidates) - len(failures)
