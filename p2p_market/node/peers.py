"""Peer exchange (`/p2p-market/peers/1`): a node learns more peers than its
bootstrap list by asking the peers it has for theirs, so the network does not
hang on a few bootstrap nodes and a lost bootstrap node does not isolate anyone.

The answer lists connected peers only (addresses that worked a moment ago), capped;
the asker dials the ones it does not know, concurrently, until it has `target`
connections. Addresses are only hints: dialing authenticates the peer (Noise).

An answer is chosen by the peer that sends it, so the asker dials only addresses
inside the networks it is configured for (`DialScopes`), never one an attacker picked
to make it probe its LAN, its own machine or a third party. Address scopes:
loopback (127/8, ::1), private (RFC 1918, 100.64/10, fc00::/7 and the other ranges
that are not globally reachable) and public (globally reachable). A node may dial the
scope of each of its listen addresses (a wildcard listen, 0.0.0.0 or ::, counts as
private and public: every interface but loopback) and of each of its bootstrap
addresses. So a node on 127.0.0.1 dials only loopback, one on 10.0.0.5 only private
addresses, a public node only public ones unless it was told to bootstrap from a
private or loopback one. Whatever the scopes, an exchanged address is dialled only if
it is /ip4 or /ip6 with /tcp and a port (no DNS name, which could resolve anywhere),
and never an unspecified, multicast, link-local or reserved one.

The server side answers at most `max_streams` askers at once and one stream per peer
at a time; a request must arrive within TIMEOUT_S and fit 1 KiB.
"""

from __future__ import annotations

import contextlib
import enum
import ipaddress
import logging
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import multiaddr
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from p2p_market.net import relay
from p2p_market.net.addrs import for_remote, remote_is_local
from p2p_market.net.host import PeerSlots, connect_all, guarded
from p2p_market.node import wire

log = logging.getLogger(__name__)

PROTOCOL: Final = TProtocol("/p2p-market/peers/1")
MAX_PEERS_LISTED: Final = 32
MAX_ADDRS_PER_PEER: Final = 4
TIMEOUT_S: Final = 5.0
MAX_REQUEST_BYTES: Final = 1024
DEFAULT_MAX_STREAMS: Final = 8
DEFAULT_MAX_STREAMS_PER_PEER: Final = 1
"""An asker needs one answer at a time; more streams from one peer only hold slots."""


class Scope(enum.Enum):
    """Where an address is: the classes of network a node may be configured for."""

    LOOPBACK = "loopback"
    PRIVATE = "private"
    PUBLIC = "public"


_SHARED: Final = ipaddress.ip_network("100.64.0.0/10")
"""Carrier-grade NAT space: not globally reachable, not in `is_private` either."""

IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def scope_of_ip(ip: IP) -> Scope | None:
    """The scope of an address, or None for one never dialled from an exchange
    (unspecified, multicast, link-local, reserved)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:  # before is_reserved, which ::1 also is
        return Scope.LOOPBACK
    if ip.is_unspecified or ip.is_multicast or ip.is_link_local or ip.is_reserved:
        return None
    if ip.is_global:
        return Scope.PUBLIC
    if ip.is_private or ip in _SHARED:
        return Scope.PRIVATE
    return None


def _tcp_ip(addr: str) -> IP | None:
    """The IP of an `/ip4|ip6/ADDR/tcp/PORT[/p2p/ID]` multiaddr with a real port;
    None for anything else (DNS names, other transports, relays, port 0)."""
    parts = addr.split("/")
    if len(parts) not in (5, 7) or parts[0] != "" or parts[1] not in ("ip4", "ip6"):
        return None
    if parts[3] != "tcp" or not parts[4].isdigit() or not 0 < int(parts[4]) < 65_536:
        return None
    if len(parts) == 7 and parts[5] != "p2p":
        return None
    try:
        ip = ipaddress.ip_address(parts[2])
    except ValueError:
        return None
    return ip if (ip.version == 4) == (parts[1] == "ip4") else None


@dataclass(frozen=True)
class DialScopes:
    """The scopes a node dials addresses it learns by peer exchange in (see the
    module docstring for the rule)."""

    allowed: frozenset[Scope]

    @classmethod
    def for_node(cls, listen: Iterable[str], bootstrap: Iterable[str]) -> DialScopes:
        """From the node's listen addresses and its bootstrap addresses."""
        allowed: set[Scope] = set()
        for addr in listen:
            ip = _listen_ip(addr)
            if ip is not None and ip.is_unspecified:
                allowed |= {Scope.PRIVATE, Scope.PUBLIC}
            elif ip is not None and (scope := scope_of_ip(ip)) is not None:
                allowed.add(scope)
        for addr in bootstrap:
            ip = _tcp_ip(addr)
            if ip is not None and (scope := scope_of_ip(ip)) is not None:
                allowed.add(scope)
        return cls(frozenset(allowed))

    def allows(self, addr: str) -> bool:
        """Whether an address learnt from a peer may be dialled. A circuit address
        (`<relay>/p2p-circuit/p2p/<peer>`, a node behind a relay: net/relay.py) is
        judged by its relay's address, the one dialled."""
        if relay.is_circuit(addr):
            relay_addr, _, rest = addr.partition(relay.CIRCUIT)
            return rest.count("/") == 2 and rest.startswith("/p2p/") and self.allows(relay_addr)
        ip = _tcp_ip(addr)
        return ip is not None and scope_of_ip(ip) in self.allowed


def _listen_ip(addr: str) -> IP | None:
    parts = addr.split("/")
    if len(parts) < 3 or parts[1] not in ("ip4", "ip6"):
        return None
    try:
        return ipaddress.ip_address(parts[2])
    except ValueError:
        return None


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


def _listing(host: IHost, exclude: ID, *, remote_local: bool = False) -> list[dict[str, Any]]:
    """Connected peers and their addresses, for the asker `exclude`. To an asker not
    on loopback, no loopback or unspecified address (net/addrs.py `for_remote`): it
    could not dial them, and a peer that listed only such addresses (bound to
    0.0.0.0 before nodes told concrete addresses) is left out rather than listed
    with nothing dialable."""
    out: list[dict[str, Any]] = []
    store = host.get_peerstore()
    for peer in connected_peers(host):
        if peer == exclude:
            continue
        try:
            told = for_remote((str(a) for a in store.addrs(peer)), remote_local)
            addrs = told[:MAX_ADDRS_PER_PEER]
        except Exception:  # the peerstore raises when it has no address
            continue
        if addrs:
            out.append({"id": peer.to_base58(), "addrs": addrs})
        if len(out) >= MAX_PEERS_LISTED:
            break
    return out


@dataclass
class PeerExchangeServer:
    """Answers `PROTOCOL`: at most `max_streams` askers at once, at most
    `max_streams_per_peer` of them from one peer; a refused asker is told why
    ("busy", "peer busy") and, to the asking code, it is an empty answer."""

    max_streams: int = DEFAULT_MAX_STREAMS
    max_streams_per_peer: int = DEFAULT_MAX_STREAMS_PER_PEER
    timeout_s: float = TIMEOUT_S
    refused: Counter[str] = field(default_factory=Counter)
    answered: int = 0

    def __post_init__(self) -> None:
        self.slots = PeerSlots(total=self.max_streams, per_peer=self.max_streams_per_peer)

    def attach(self, host: IHost) -> None:
        async def handle(stream: INetStream) -> None:
            await self.handle(host, stream)

        host.set_stream_handler(PROTOCOL, guarded(handle, PROTOCOL))

    async def handle(self, host: IHost, stream: INetStream) -> None:
        asker = stream.muxed_conn.peer_id
        refused = self.slots.take(asker)
        try:
            if refused is not None:
                self.refused[refused] += 1
                await wire.write_msg(stream, {"error": refused}, timeout_s=self.timeout_s)
                return
            try:
                await wire.read_msg(stream, max_bytes=MAX_REQUEST_BYTES, timeout_s=self.timeout_s)
                local = remote_is_local(_remote_address(stream))
                listing = {"peers": _listing(host, asker, remote_local=local)}
                await wire.write_msg(stream, listing, timeout_s=self.timeout_s)
                self.answered += 1
            finally:
                self.slots.give_back(asker)
        except wire.WireError as exc:
            log.debug("peer exchange with %s ended: %s", asker, exc)
        finally:
            await wire.close_quietly(stream)


def _remote_address(stream: INetStream) -> Any:
    try:
        return stream.get_remote_address()
    except Exception:  # unknown: the asker is told less, never more
        return None


def attach(host: IHost, **limits: Any) -> PeerExchangeServer:
    """Serve peer exchange on `host` (limits: PeerExchangeServer's fields)."""
    server = PeerExchangeServer(**limits)
    server.attach(host)
    return server


MAX_ANSWER_BYTES: Final = 64 * 1024
"""32 peers x 4 addresses fit in a few KiB; a larger answer is not read."""


@dataclass
class Exchanged:
    """What one round of peer exchange did."""

    dialled: list[str] = field(default_factory=list)
    connected: int = 0
    outside: int = 0
    """Listed addresses not dialled: outside the node's scopes, or not /tcp over an IP."""


def _dialable(entry: Any, own: ID, scopes: DialScopes, out: Exchanged) -> str | None:
    """The first address of one listed peer that `scopes` allows, as a full multiaddr
    naming that peer; None if there is none or the entry is malformed."""
    if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
        return None
    try:
        peer = ID.from_base58(entry["id"])
    except Exception:
        return None
    if peer == own or not isinstance(entry.get("addrs"), list | tuple):
        return None
    suffix = f"/p2p/{peer.to_base58()}"
    for addr in entry["addrs"][:MAX_ADDRS_PER_PEER]:
        if not isinstance(addr, str):
            continue
        full = addr if addr.endswith(suffix) else addr + suffix
        if not scopes.allows(full):  # also refuses a /p2p/ naming another peer
            out.outside += 1
            continue
        try:
            multiaddr.Multiaddr(full)
        except Exception:
            continue
        return full
    return None


async def ask_peers(host: IHost, peer: ID, scopes: DialScopes, out: Exchanged) -> list[str]:
    """The addresses `peer` lists that we may dial (inside `scopes`, of peers we are
    not connected to); empty on any failure."""
    try:
        stream = await host.new_stream(peer, [PROTOCOL])
    except Exception as exc:
        log.debug("peer exchange with %s failed to open: %s", peer, exc)
        return []
    try:
        await wire.write_msg(stream, {}, timeout_s=TIMEOUT_S)
        answer = await wire.read_msg(stream, max_bytes=MAX_ANSWER_BYTES, timeout_s=TIMEOUT_S)
    except wire.WireError as exc:
        log.debug("peer exchange with %s failed: %s", peer, exc)
        # Reset, not close: a close only ends our side, and the muxer goes on taking
        # (and keeping, until the peer ends its side) whatever the peer still sends,
        # such as the rest of an answer refused on its length (MBs per stream).
        with contextlib.suppress(Exception):
            await stream.reset()
        return []
    finally:
        await wire.close_quietly(stream)
    listed = answer.get("peers") if isinstance(answer, dict) else None
    if not isinstance(listed, list | tuple):
        return []
    own = host.get_id()
    known = {p.to_base58() for p in connected_peers(host)}
    found: list[str] = []
    for entry in listed[:MAX_PEERS_LISTED]:
        addr = _dialable(entry, own, scopes, out)
        if addr is not None and entry["id"] not in known:
            found.append(addr)
    return found


async def exchange(
    host: IHost, *, target: int, rng: random.Random, scopes: DialScopes
) -> Exchanged:
    """One round: if below `target` connections, ask a random peer for more and dial
    those inside `scopes`."""
    out = Exchanged()
    peers = connected_peers(host)
    if not peers or len(peers) >= target:
        return out
    candidates = await ask_peers(host, rng.choice(peers), scopes, out)
    out.dialled = candidates[: target - len(peers)]
    if out.dialled:
        failures = await connect_all(host, out.dialled)
        out.connected = len(out.dialled) - len(failures)
    return out
