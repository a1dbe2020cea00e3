"""Dead-peer detection: libp2p's own ping (`/ipfs/ping/1.0.0`, which every host
answers) to every connected peer, and a forced disconnect of a peer that stops
answering.

Why. A peer whose process is frozen (SIGSTOP, a stuck VM) or whose link silently
drops packets sends no TCP FIN or RST: the connection looks alive for as long as the
kernel's retransmissions last (minutes), the peer stays in the GossipSub mesh, and
every node still counts it (issue 13 measured exactly that during a 60 s cut).

Timing, sized for round trips up to 300 ms: a ping every `every_s` (5 s) on one
long-lived stream per peer, each given until the next is due (5 s, over ten times a
300 ms round trip plus a loaded machine's pauses); after `misses` (3) in a row the
peer is dead. A frozen peer is so dropped 15-20 s after it froze; one lost ping (a
pause, a retransmission) never drops a live one.

Why not py-libp2p's connection health monitor (network/health, off by default):
it pings every connection one after the other (one frozen peer delays the checks of
all others by its timeout), and either aborts a connection at its first failed ping
or never replaces one that has streams open, which a pubsub peer always has.

Why the disconnect is forced. `host.disconnect` of a frozen peer hangs: yamux's
close writes a go-away frame behind the pubsub writer, which is blocked on the
peer's full TCP window (measured: still connected, in the mesh, after 5 s). So the
connection's socket is closed first, with SO_LINGER 0 (an RST, nothing left to
flush); every blocked write then fails, and the library's own close and dead-peer
cleanup (pubsub peers, mesh, outbound queue) run at once.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import trio
from libp2p.abc import IHost, INetStream
from libp2p.host.ping import ID as PING_PROTOCOL
from libp2p.host.ping import perform_ping_roundtrip
from libp2p.peer.id import ID

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

DEFAULT_EVERY_S: Final = 5.0
DEFAULT_MISSES: Final = 3
DISCONNECT_TIMEOUT_S: Final = 2.0
"""The library's close after the sockets were aborted: it has nothing to wait on."""
_SOCKET_ATTRS: Final = ("muxed_conn", "secured_conn", "conn", "read_writer", "read_write_closer")
_RST: Final = struct.pack("ii", 1, 0)


@dataclass
class KeepaliveStats:
    pings: int = 0
    missed: int = 0
    dropped: int = 0
    """Peers disconnected as dead."""
    rtt_ms: dict[ID, int] = field(default_factory=dict)
    """The last round trip to each peer that answered."""


def _socket_streams(obj: Any, depth: int = 0) -> list[trio.SocketStream]:
    """The trio socket streams under a libp2p connection (muxer, Noise session, raw
    connection, TCP stream): found by walking the attributes those layers keep."""
    if isinstance(obj, trio.SocketStream):
        return [obj]
    stream = getattr(obj, "stream", None)
    if isinstance(stream, trio.SocketStream):
        return [stream]
    if depth > 6:
        return []
    found: list[trio.SocketStream] = []
    for name in (*_SOCKET_ATTRS, "stream"):
        child = getattr(obj, name, None)
        if child is not None and child is not obj:
            found.extend(_socket_streams(child, depth + 1))
            if found:
                return found
    return found


def abort_socket(stream: trio.SocketStream) -> None:
    """Close a TCP socket at once with an RST, failing every task blocked on it."""
    with contextlib.suppress(OSError):
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST)
    stream.socket.close()


def abort_connections(conn: Any) -> int:
    """Abort the open sockets under one connection (see `abort_socket`); how many."""
    streams = [s for s in _socket_streams(conn) if s.socket.fileno() != -1]
    for stream in streams:
        abort_socket(stream)
    return len(streams)


async def drop_peer(host: IHost, peer: ID) -> int:
    """Disconnect `peer` even if it is frozen: abort its connections' sockets, then
    let the library close them (and notify pubsub, which forgets the peer). The
    peer's addresses stay in the peerstore, for the redial. Returns the number of
    sockets aborted."""
    aborted = sum(abort_connections(c) for c in list(host.get_network().connections.get(peer, [])))
    with trio.move_on_after(DISCONNECT_TIMEOUT_S):
        with contextlib.suppress(Exception):  # the library raises several types
            await host.disconnect(peer)
    return aborted


class _Probe:
    """The ping in flight to one peer, and its stream (kept between pings)."""

    def __init__(self) -> None:
        self.stream: INetStream | None = None
        self.running = False
        self.ok = False
        self.answered = trio.Event()

    def start(self) -> None:
        self.running = True
        self.ok = False
        self.answered = trio.Event()


class Keepalive:
    """Pings every connected peer; `on_dead(peer)` after a peer was dropped. A trio
    service: `await nursery.start(keepalive.run)`; one task per connected peer."""

    def __init__(
        self,
        host: IHost,
        *,
        every_s: float = DEFAULT_EVERY_S,
        misses: int = DEFAULT_MISSES,
        on_dead: Callable[[ID], None] | None = None,
    ) -> None:
        if every_s <= 0 or misses < 1:
            raise ValueError("keepalive needs every_s > 0 and misses >= 1")
        self.host = host
        self.every_s = every_s
        self.misses = misses
        self.on_dead = on_dead
        self.stats = KeepaliveStats()
        self._watched: set[ID] = set()

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                for peer in list(self.host.get_network().connections):
                    if peer not in self._watched:
                        self._watched.add(peer)
                        nursery.start_soon(self._watch, peer)
                await trio.sleep(min(1.0, self.every_s))

    def _connected(self, peer: ID) -> bool:
        return bool(self.host.get_network().connections.get(peer))

    async def _watch(self, peer: ID) -> None:
        """Ping `peer` while it is connected; drop it after `misses` misses in a row.

        Each ping runs in a task of its own that is never waited on beyond the
        ping's time: on a frozen peer whose TCP window is full, py-libp2p's
        `new_stream` ends a failed or cancelled open with a *shielded* stream reset
        (host/basic_host.py), a write that blocks until the socket dies. A ping still
        hanging when the next is due counts as a miss (no second one is started);
        dropping the peer aborts its sockets, which ends the hanging one."""
        probe = _Probe()
        try:
            async with trio.open_nursery() as attempts:
                try:
                    await self._rounds(peer, probe, attempts)
                finally:
                    if probe.running:
                        # A ping hung in a shielded write (stopping, or the peer
                        # left): abort the peer's sockets, or this nursery never exits.
                        for conn in list(self.host.get_network().connections.get(peer, [])):
                            abort_connections(conn)
                    attempts.cancel_scope.cancel()
        finally:
            self._watched.discard(peer)
            self.stats.rtt_ms.pop(peer, None)

    async def _rounds(self, peer: ID, probe: _Probe, attempts: trio.Nursery) -> None:
        missed = 0
        while self._connected(peer):
            due = trio.current_time() + self.every_s
            if not probe.running:
                probe.start()
                attempts.start_soon(self._attempt, peer, probe)
            with trio.move_on_after(self.every_s):
                await probe.answered.wait()
            self.stats.pings += 1
            if probe.answered.is_set() and probe.ok:
                missed = 0
            else:
                missed += 1
                self.stats.missed += 1
                if missed >= self.misses:
                    await self._dead(peer, missed)
                    return
            await trio.sleep_until(due)

    async def _attempt(self, peer: ID, probe: _Probe) -> None:
        """One ping, twice at most: a stream the peer closed while idle (its ping
        handler ends one after 10 s of silence) is not a missed ping."""
        try:
            for _ in range(2):
                try:
                    if probe.stream is None:
                        probe.stream = await self.host.new_stream(peer, [PING_PROTOCOL])
                    rtt = await perform_ping_roundtrip(probe.stream)
                except Exception as exc:  # the library raises many types
                    log.debug("ping to %s failed: %r", peer, exc)
                    stream, probe.stream = probe.stream, None
                    if stream is not None:
                        with contextlib.suppress(Exception):
                            await stream.reset()
                    continue
                self.stats.rtt_ms[peer] = rtt
                probe.ok = True
                return
        finally:
            probe.running = False
            probe.answered.set()

    async def _dead(self, peer: ID, missed: int) -> None:
        self.stats.dropped += 1
        log.warning(
            "peer %s answered none of %d pings (%g s each): disconnecting it",
            peer,
            missed,
            self.every_s,
        )
        await drop_peer(self.host, peer)
        if self.on_dead is not None:
            self.on_dead(peer)
