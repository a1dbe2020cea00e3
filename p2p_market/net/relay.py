"""Circuit relay v2 (py-libp2p's `libp2p/relay/circuit_v2`): reaching a node that
takes no inbound connection, through a relay peer both sides can dial.

Measured on 127.0.0.1 with our hosts (Noise, yamux; issue 13, docs/reachability.md):
a reservation takes 10-25 ms once connected to the relay, a dial through the relay
90-160 ms, the first stream 45-280 ms more; 8 MiB crossed a circuit in 1 s. Streams
open both ways on a relayed connection, so direct delivery (node/direct.py) and
sync run over it unchanged.

Three parts, one service per host (`Relaying.run`):

* the STOP side, on every node: a peer that reaches this node through a relay is
  accepted as a connection of its own (libp2p's `CircuitV2Protocol`);
* the HOP side, on a node with `serve=True` (`relay_service = true`): it takes
  reservations and relays circuits, within `RELAY_LIMITS`;
* reservations, on a node given `relays` (`reachability = "private"`): it keeps a
  slot on each relay (taken again on every new connection to it, renewed every
  RESERVE_EVERY_S), redialling a relay it lost, and tells peers its circuit
  addresses `<relay>/p2p-circuit` by identify (`circuit_addrs`).

What py-libp2p 0.8.1 does not do, and this module does: its swarm never dials a
`/p2p-circuit` address (network/swarm.py `dial_peer` drops them: "relay-only"), so
`connect_all` (net/host.py) hands such addresses to `dial_circuit`, and a stream to
a peer known only by its circuit address first goes through `reach`. Its
`BasicHost.get_addrs` cuts an announced circuit address at its first `/p2p/` (the
relay's id) and appends the node's own, which would tell peers the relay's TCP
address under this node's id; so circuit addresses are not announced through
`announce` but added to what `get_addrs` returns (`install_addrs`). Its own
reservation refresher and relay discovery are not used: the loop here is simpler
and runs in our nursery.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
from libp2p.relay.circuit_v2.resources import RelayLimits
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from libp2p.tools.anyio_service import background_trio_service

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

CIRCUIT: Final = "/p2p-circuit"
ADDRS_TTL_S: Final = 1.0
"""How long `get_addrs` reuses its answer. py-libp2p asks for it with every pubsub
RPC it sends (the signed peer record, peer/peerstore.py `env_to_send_in_RPC`), and
one answer took about 0.4 ms here: 3.5 % of a relay's wall samples at 640 orders/s
(`bench net`). Within a second, a new interface address is told all the same."""
RELAY_LIMITS: Final = RelayLimits(
    duration=3600,
    data=256 * 1024 * 1024,
    max_circuit_conns=64,
    max_reservations=64,
    reservation_ttl=3600,
)
"""What a relay gives: a circuit lasts at most an hour and carries 256 MiB (a proof
and its inputs, gossip and sync: the circuit is a whole connection), at most 64
circuits and 64 reservations at once; libp2p also caps them per IP address."""
RESERVE_EVERY_S: Final = 600.0
"""A reservation is renewed this often (it lasts an hour). It is also taken again
whenever the connection to the relay is a new one (a relay that restarted forgot
it), whoever dialled."""
POLL_S: Final = 2.0
"""How often a node checks it is still connected to its relays."""
MAX_RETRY_S: Final = 60.0
"""A relay that refuses or cannot be dialled is tried again after 2, 4, 8 ... s, at
most this far apart (each try costs it a stream, and py-libp2p an ERROR line)."""
DIAL_TIMEOUT_S: Final = 10.0
ADDR_TTL_S: Final = 3600
"""How long the address book keeps a relay's address and a circuit address that
worked."""

_dialers: weakref.WeakKeyDictionary[IHost, Relaying] = weakref.WeakKeyDictionary()
"""The running relay service of each host: what `dial_circuit` dials with."""


def is_circuit(addr: str) -> bool:
    return CIRCUIT + "/" in addr or addr.endswith(CIRCUIT)


def relay_part(addr: str) -> str:
    """`/ip4/…/tcp/…/p2p/RELAY` of a circuit address `…/p2p/RELAY/p2p-circuit[/p2p/X]`."""
    return addr.split(CIRCUIT, 1)[0]


def circuit_addrs(host: IHost) -> list[str]:
    """The addresses this host is reachable at through its relays (without its own
    /p2p/ suffix, as identify lists addresses); empty for a host that has none."""
    relaying = _dialers.get(host)
    return [] if relaying is None else [f"{r}{CIRCUIT}" for r in relaying.relays]


def install_addrs(host: IHost) -> None:
    """Make `host.get_addrs()` end with the host's circuit addresses (full, with its
    own /p2p/), once its relay service runs.

    Through `get_addrs` they reach everything that tells a node's addresses:
    identify, and the signed peer record py-libp2p attaches to pubsub messages and
    caches (peer/peerstore.py `env_to_send_in_RPC`). A receiver *replaces* a peer's
    addresses with those of a record it gets (`consume_peer_record`): a record
    without the circuit addresses wiped them from the relay's address book as soon
    as the private node's first gossip came after its identify (seen as a flaky
    test: the relay listed the prover with no address). They cannot be given as
    `announce` instead: `BasicHost.get_addrs` cuts an address at its first /p2p/
    (the relay's) and appends the node's own, which would give the relay's TCP
    address under this node's id.

    The answer is reused for ADDRS_TTL_S while the circuit addresses stay the same
    (a new relay slot is told at once); an empty one (the host not listening yet)
    is not kept."""
    original = host.get_addrs
    kept: list[multiaddr.Multiaddr] = []
    kept_for: tuple[str, ...] | None = None
    kept_until = float("-inf")

    def get_addrs() -> list[multiaddr.Multiaddr]:
        nonlocal kept, kept_for, kept_until
        circuits = tuple(circuit_addrs(host))
        now = time.monotonic()
        if circuits == kept_for and now < kept_until:
            return list(kept)
        own = original()
        suffix = f"/p2p/{host.get_id().to_base58()}"
        addrs = [*own, *(multiaddr.Multiaddr(c + suffix) for c in circuits)]
        if own:
            kept, kept_for, kept_until = addrs, circuits, now + ADDRS_TTL_S
        return list(addrs)

    host.get_addrs = get_addrs  # type: ignore[method-assign]


@dataclass
class Reservation:
    """One relay a private node keeps a slot on."""

    addr: str
    peer: ID
    expires: float = 0.0
    """Wall-clock time (time.time) the relay said the slot lasts until; 0 if none."""
    renewed_at: float = float("-inf")
    """trio time of the last renewal."""
    via: object = None
    """The connection to the relay the slot was taken on."""
    next_try: float = float("-inf")
    """trio time before which a failing relay is not tried again."""
    failures: int = 0
    last_error: str = ""


class Relaying:
    """Circuit relay v2 for one host: see the module docstring."""

    def __init__(self, host: IHost, *, serve: bool = False, relays: Sequence[str] = ()) -> None:
        self.host = host
        self.serve = serve
        self.relays = tuple(relays)
        self.reservations = {
            a: Reservation(a, info_from_p2p_addr(multiaddr.Multiaddr(a)).peer_id)
            for a in self.relays
        }
        self.protocol = CircuitV2Protocol(host, limits=RELAY_LIMITS, allow_hop=serve)
        # STOP only: libp2p's CLIENT role would make a reservation before every dial
        # (transport.py `dial_peer_info`), on whichever relay it dials through.
        self.transport = CircuitV2Transport(
            host, self.protocol, RelayConfig(roles=RelayRole.STOP, limits=RELAY_LIMITS)
        )
        self.reserved = trio.Event()
        """Set once every relay gave a slot (at once for a node without relays)."""
        if not self.relays:
            self.reserved.set()

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the relay protocols until cancelled; started once the handlers are
        set (reservations are made in the background: a relay that is down must not
        hold the node's start)."""
        async with background_trio_service(self.protocol):
            _dialers[self.host] = self
            try:
                task_status.started()
                if not self.relays:
                    await trio.sleep_forever()
                while True:
                    await self._keep_reservations()
                    await trio.sleep(POLL_S)
            finally:
                _dialers.pop(self.host, None)

    async def _keep_reservations(self) -> None:
        now = trio.current_time()
        for res in self.reservations.values():
            conns = self._conns(res.peer)
            same = res.via is not None and any(c is res.via for c in conns)
            if same and now - res.renewed_at < RESERVE_EVERY_S and res.expires:
                continue
            if now < res.next_try:
                continue
            if not conns:
                try:
                    with trio.fail_after(DIAL_TIMEOUT_S):
                        _unblock(self.host, res.peer)
                        await self.host.connect(info_from_p2p_addr(multiaddr.Multiaddr(res.addr)))
                except Exception as exc:  # the library raises several unrelated types
                    self._failed(res, f"cannot dial the relay: {type(exc).__name__}: {exc}")
                    continue
            await self._reserve(res)
        if all(r.expires > time.time() for r in self.reservations.values()):
            self.reserved.set()

    def _conns(self, peer: ID) -> list[object]:
        held = self.host.get_network().connections.get(peer)
        if held is None:
            return []
        return list(held) if isinstance(held, list | tuple) else [held]

    async def _reserve(self, res: Reservation) -> None:
        try:
            with trio.fail_after(DIAL_TIMEOUT_S):
                stream = await self.host.new_stream(res.peer, [HOP_PROTOCOL])
                try:
                    ok = await self.transport._make_reservation(stream, res.peer)
                finally:
                    await stream.close()
        except Exception as exc:  # the library raises several unrelated types
            self._failed(res, f"{type(exc).__name__}: {exc}")
            return
        if not ok:
            self._failed(res, "the relay refused the reservation (see the libp2p log)")
            return
        if res.failures or not res.expires:
            log.info("reserved a slot on relay %s", res.addr)
        res.expires = float(self.transport._reservations.get(res.peer, 0))
        res.renewed_at = trio.current_time()
        conns = self._conns(res.peer)
        res.via = conns[0] if conns else None
        res.failures = 0
        res.last_error = ""

    def _failed(self, res: Reservation, why: str) -> None:
        if res.failures == 0:
            log.warning(
                "no slot on relay %s: %s; retrying, at most %g s apart", res.addr, why, MAX_RETRY_S
            )
        res.failures += 1
        res.last_error = why
        res.expires = 0.0
        res.via = None
        res.next_try = trio.current_time() + min(2.0**res.failures, MAX_RETRY_S)

    def status(self) -> dict[str, object]:
        now = time.time()
        return {
            "relay_service": self.serve,
            "circuit_addrs": circuit_addrs(self.host),
            "relays": {
                r.addr: {
                    "reserved": r.expires > now,
                    "expires_in_s": max(0, round(r.expires - now)),
                    "failures": r.failures,
                    "last_error": r.last_error,
                }
                for r in self.reservations.values()
            },
        }


def _unblock(host: IHost, peer: ID) -> None:
    """Lift the swarm's 60 s negative cache for a relay we chose to dial (as
    net/host.py `unblock`, which imports this module)."""
    lift = getattr(host.get_network(), "unblock_peer", None)
    if callable(lift):
        lift(peer)


async def dial_circuit(host: IHost, addr: str) -> None:
    """Connect to a peer through a relay, by its circuit address
    `<relay>/p2p-circuit/p2p/<peer>` (the relay is dialled first if need be).
    ConnectionError if this host runs no relay service or the relay refused."""
    relaying = _dialers.get(host)
    if relaying is None:
        raise ConnectionError("this node runs no relay service: cannot dial a /p2p-circuit address")
    maddr = multiaddr.Multiaddr(addr)
    relay = info_from_p2p_addr(multiaddr.Multiaddr(relay_part(addr)))
    store = host.get_peerstore()
    store.add_addrs(relay.peer_id, relay.addrs, ADDR_TTL_S)
    conn = await relaying.transport.dial(maddr)
    # Kept, so that a redial or `reach` finds the peer again the same way.
    store.add_addrs(
        conn.muxed_conn.peer_id, [multiaddr.Multiaddr(relay_part(addr) + CIRCUIT)], ADDR_TTL_S
    )


def connected(host: IHost, peer: ID) -> bool:
    """Whether `host` has an open connection to `peer` (the swarm may still list one
    that closed)."""
    held = host.get_network().connections.get(peer) or []
    return any(not c.is_closed for c in (held if isinstance(held, list) else [held]))


async def reach(host: IHost, peer: ID) -> None:
    """Make sure `host` is connected to `peer` before a stream is opened to it: a
    peer known only by circuit addresses is dialled through a relay (the swarm
    would refuse them). Does nothing when connected (a connection the swarm still
    lists but that closed does not count) or when no circuit address is known;
    failures are left to the stream that follows."""
    if connected(host, peer):
        return
    try:
        known = [str(a) for a in host.get_peerstore().addrs(peer)]
    except Exception:  # the peerstore raises when it has none
        return
    if any(not is_circuit(a) for a in known):
        return  # the swarm dials those itself
    suffix = f"/p2p/{peer.to_base58()}"
    for addr in known:
        full = addr if addr.endswith(suffix) else addr + suffix
        try:
            await dial_circuit(host, full)
            return
        except Exception as exc:  # the library raises several unrelated types
            log.debug("dial of %s through its relay failed: %r", full, exc)
