"""The libp2p host of a node: its identity, transports, and how it dials peers.

One identity: the libp2p peer id is derived from the node's own Ed25519 key (the key
that signs its orders), so a peer id names a signer and vice versa (`peer_id_of`).

The security and muxer lists are explicit because libp2p's defaults are not what we
want: `new_host` without `sec_opt` also offers TLS, SECIO and *plaintext*
(libp2p/__init__.py, new_swarm's `secure_transports_by_protocol`), so a peer could
negotiate an unencrypted, unauthenticated session. Here a node speaks Noise only,
and one muxer (yamux by default; mplex can be chosen for measurements).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Literal

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetStream
from libp2p.crypto.ed25519 import Ed25519PublicKey, create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TMuxerOptions, TProtocol, TSecurityOptions
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.mplex.mplex import MPLEX_PROTOCOL_ID, Mplex
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from p2p_market.core.crypto import SigningKey
from p2p_market.net import addrs as advertised
from p2p_market.net import libp2p_patches, libp2p_speedups, relay

log = logging.getLogger(__name__)

DEFAULT_LISTEN: Final = ("/ip4/127.0.0.1/tcp/0",)
DIAL_TIMEOUT_S: Final = 10.0

Muxer = Literal["yamux", "mplex"]


def make_host(
    key: SigningKey,
    listen: Sequence[str] = DEFAULT_LISTEN,
    *,
    muxer: Muxer = "yamux",
    announce: Sequence[str] = (),
) -> tuple[IHost, list[multiaddr.Multiaddr]]:
    """A host (not yet running) whose identity is `key`, and its parsed listen addrs.

    The host is started by whoever runs it (`host.run(addrs)`): for a gossiping
    node that is `Gossip.run`, which must have pubsub up before the host accepts
    streams (see gossip.py). The library's inbound-slot fix is installed here, once
    for the process (net/libp2p_patches.py).

    What the host tells peers about its addresses (net/addrs.py): `announce` if
    given, else its listen addresses with a wildcard expanded to this machine's
    interface addresses; loopback and unspecified ones only to a peer on loopback.
    libp2p's observed-address discovery is off: an observed address of an outbound
    connection carries its ephemeral port, which nobody can dial. A node behind
    relays also tells its circuit addresses (net/relay.py `install_addrs`)."""
    libp2p_patches.apply()
    libp2p_speedups.apply()
    advertised.install_identify_filter()
    key_pair = create_new_key_pair(key.seed)
    # Noise's static DH key is per process: it is authenticated by the identity key
    # inside the handshake, so it need not be stable.
    noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
    security: TSecurityOptions = {NOISE_PROTOCOL_ID: noise}
    muxers: TMuxerOptions = (
        {TProtocol(YAMUX_PROTOCOL_ID): Yamux}
        if muxer == "yamux"
        else {TProtocol(MPLEX_PROTOCOL_ID): Mplex}
    )
    addrs = [multiaddr.Multiaddr(a) for a in listen]
    host = new_host(
        key_pair=key_pair,
        sec_opt=security,
        muxer_opt=muxers,
        listen_addrs=addrs,
        addrs_factory=advertised.addrs_factory(announce),
        disable_identify_address_discovery=True,
    )
    relay.install_addrs(host)
    return host, addrs


class ListenError(OSError):
    """The host could not listen on an address it was given (a port in use, an
    address not of this machine); the message names it and what to do."""


def check_listening(host: IHost, listen: Sequence[multiaddr.Multiaddr]) -> None:
    """ListenError for the first of `listen` the running host does not listen on.

    py-libp2p only logs a listener that failed to start (network/swarm.py, `listen`
    returns False and `BasicHost.run` ignores it): the host would run deaf, without
    an address to give peers. The reason is found again by binding the address."""
    listening = getattr(host.get_network(), "listeners", {})
    for addr in listen:
        if str(addr) not in listening:
            raise ListenError(
                f"cannot listen on {addr} ({_bind_problem(addr)}): choose another listen"
                " address or port, or stop what uses it"
            )


def _bind_problem(addr: multiaddr.Multiaddr) -> str:
    """Why binding `addr` fails, as the operating system says it."""
    try:
        protocols = {p.name for p in addr.protocols()}
        family = socket.AF_INET6 if "ip6" in protocols else socket.AF_INET
        ip = addr.value_for_protocol("ip6" if family == socket.AF_INET6 else "ip4")
        port = int(addr.value_for_protocol("tcp"))
    except Exception:  # the library raises several unrelated types
        return "not an /ip4 or /ip6 TCP address"
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as trio binds
        try:
            probe.bind((ip, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return "the transport refused it; see the log"


def peer_id_of(public_key: bytes) -> ID:
    """The libp2p peer id of the node whose Ed25519 public key this is."""
    return ID.from_pubkey(Ed25519PublicKey.from_bytes(public_key))


def dial_addr(host: IHost) -> str:
    """The host's full dialable address, `/ip4/…/tcp/PORT/p2p/PEERID`: the first TCP
    one that is neither loopback nor unspecified if there is one (what a peer on
    another machine can dial), else the first TCP one. Only meaningful once the host
    is listening."""
    best = advertised.best_addr(str(a) for a in host.get_addrs())
    if best is not None:
        return best
    raise RuntimeError("the host has no TCP listen address yet: is it running?")


async def connect_all(
    host: IHost, addrs: Sequence[str], *, timeout: float = DIAL_TIMEOUT_S
) -> dict[str, BaseException]:
    """Dial every address at once; return the failures, by address.

    Concurrent on purpose: each libp2p dial waits a fixed ~250 ms happy-eyeballs
    delay even when it succeeds at once (libp2p/network/swarm.py, dial_peer's
    `move_on_after(_HAPPY_EYEBALLS_DELAY)`), so dialing n peers in turn costs n
    quarter-seconds. One unreachable peer never fails the others; our own address
    is skipped. A /dns4, /dns6 or /dns address is resolved first (net/addrs.py
    `resolve`; a name that does not resolve fails with ResolveError), and each
    address it resolves to is tried in turn. A `/p2p-circuit` address is dialled
    through its relay (net/relay.py): the swarm does not dial those."""
    failures: dict[str, BaseException] = {}
    own = host.get_id()

    async def dial(addr: str) -> None:
        try:
            with trio.fail_after(timeout):
                candidates = await advertised.resolve(addr, timeout=timeout)
                last: BaseException | None = None
                for candidate in candidates:
                    info = info_from_p2p_addr(multiaddr.Multiaddr(candidate))
                    if info.peer_id == own:
                        return
                    unblock(host, info.peer_id)
                    try:
                        if relay.is_circuit(candidate):
                            if relay.connected(host, info.peer_id):
                                return
                            await relay.dial_circuit(host, candidate)
                        else:
                            await host.connect(info)
                        return
                    except Exception as exc:
                        last = exc
                if last is not None:
                    raise last
        except Exception as exc:  # any dial failure is data for the caller
            log.debug("dial %s failed: %r", addr, exc)
            failures[addr] = exc

    async with trio.open_nursery() as nursery:
        for addr in addrs:
            nursery.start_soon(dial, addr)
    return failures


def unblock(host: IHost, peer: ID) -> None:
    """Lift py-libp2p's negative cache for `peer` before a dial we chose to make.

    The swarm refuses, for 60 s after the last failure, to dial a peer whose every
    address failed ("recently failed all addresses (negative cache)"), without
    trying. A node that redials its peers every few seconds through a partition
    keeps that block fresh, so its first dial after the link comes back was refused
    for up to a minute: it missed what was published meanwhile, and the asks among
    that expired before it could sync (issue 13). The callers pace their own dials
    (the node's keeper redials every PEER_POLL_S while it has no peer)."""
    network = host.get_network()
    lift = getattr(network, "unblock_peer", None)
    if callable(lift):
        lift(peer)


StreamHandler = Callable[[INetStream], Awaitable[None]]


def guarded(handler: StreamHandler, name: str) -> StreamHandler:
    """A stream handler that cannot take the host down.

    libp2p awaits stream handlers inside the connection's nursery
    (network/connection/swarm_connection.py `_handle_muxed_stream`, host/basic_host.py
    `_swarm_stream_handler`): an exception escaping a handler cancels the swarm and
    so the whole host. Here it is logged and the stream reset instead."""

    async def handle(stream: INetStream) -> None:
        try:
            await handler(stream)
        except Exception as exc:
            log.warning("stream handler %s failed: %r; resetting the stream", name, exc)
            try:
                await stream.reset()
            except Exception:
                log.debug("reset after a failed %s handler failed too", name, exc_info=True)

    return handle


BUSY: Final = "busy"
"""A stream refused because the protocol's sessions are all taken."""
PEER_BUSY: Final = "peer busy"
"""A stream refused because its peer already holds its share of the sessions."""


class PeerSlots:
    """Concurrent sessions of one stream protocol: at most `total` at once, and at
    most `per_peer` of them from any one peer, so that one peer (however many
    streams it opens) can never take every session and refuse everyone else.

    `take` is synchronous (no checkpoint between the check and the count), so
    concurrent handlers cannot all pass it."""

    def __init__(self, *, total: int, per_peer: int) -> None:
        if total < 1 or per_peer < 1:
            raise ValueError("session caps must be at least 1")
        self.total = total
        self.per_peer = per_peer
        self._held: dict[ID, int] = {}
        self._active = 0

    @property
    def active(self) -> int:
        return self._active

    def held_by(self, peer: ID) -> int:
        return self._held.get(peer, 0)

    def take(self, peer: ID) -> str | None:
        """Take a slot for `peer`: None if taken, else why not (BUSY, PEER_BUSY)."""
        if self.held_by(peer) >= self.per_peer:
            return PEER_BUSY
        if self._active >= self.total:
            return BUSY
        self._held[peer] = self.held_by(peer) + 1
        self._active += 1
        return None

    def give_back(self, peer: ID) -> None:
        left = self.held_by(peer) - 1
        if left > 0:
            self._held[peer] = left
        else:
            self._held.pop(peer, None)
        self._active -= 1
