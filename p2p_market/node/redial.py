"""Redialling peers the keepalive dropped as dead (net/keepalive.py), with capped
exponential back-off.

A dropped peer may come back (a frozen process resumed, a link restored). Without
this, the node only finds it again through its bootstrap list, its known-peers file
or peer exchange, on the keeper's 30 s period, or when the peer dials it. Here it
is dialled 1 s after the drop, then after 2, 4, 8 ... s, at most `max_delay_s` apart
(a dead peer costs one failed dial a minute, not a storm); it is dialled at once,
whatever its back-off, when the addresses the node holds for it change (peer
exchange or identify told a new one), and forgotten when it connects (it was heard
from again, whoever dialled) or after `give_up_s` without success.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID

from p2p_market.net.host import connect_all

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

FIRST_DELAY_S: Final = 1.0
DEFAULT_MAX_DELAY_S: Final = 60.0
GIVE_UP_S: Final = 24 * 3600.0
DIAL_TIMEOUT_S: Final = 10.0
"""A dial's TCP connect, Noise and yamux: a few round trips, far under this at 300 ms."""
POLL_S: Final = 0.5


@dataclass
class Lost:
    """One dropped peer: when to dial next, the back-off, the addresses last tried."""

    since: float
    next_at: float
    delay: float
    addrs: tuple[str, ...]
    attempts: int = 0


class Redialer:
    """The table of dropped peers and the task that dials them."""

    def __init__(
        self,
        host: IHost,
        *,
        max_delay_s: float = DEFAULT_MAX_DELAY_S,
        give_up_s: float = GIVE_UP_S,
        addrs_of: Callable[[ID], Sequence[str]] | None = None,
    ) -> None:
        self.host = host
        self.max_delay_s = max_delay_s
        self.give_up_s = give_up_s
        self._addrs_of = addrs_of or self._peerstore_addrs
        self.lost: dict[ID, Lost] = {}
        self.dials = 0
        self.reconnected = 0
        self._wake = trio.Event()

    def _peerstore_addrs(self, peer: ID) -> tuple[str, ...]:
        """The peer's addresses as the peerstore holds them, as full multiaddrs."""
        try:
            addrs = self.host.get_peerstore().addrs(peer)
        except Exception:  # the peerstore raises when it has none
            return ()
        suffix = f"/p2p/{peer.to_base58()}"
        return tuple(sorted(str(a) if str(a).endswith(suffix) else f"{a}{suffix}" for a in addrs))

    def dropped(self, peer: ID) -> None:
        """The keepalive dropped `peer`: dial it again soon."""
        now = trio.current_time()
        self.lost[peer] = Lost(now, now + FIRST_DELAY_S, FIRST_DELAY_S, tuple(self._addrs_of(peer)))
        self._wake.set()

    def heard(self, peer: ID) -> None:
        """`peer` connected (in or out): nothing left to redial."""
        if self.lost.pop(peer, None) is not None:
            self.reconnected += 1
            log.info("dropped peer %s is back", peer)

    def due(self, now: float) -> list[ID]:
        """Peers to dial now: their time came, or their addresses changed. Forgets
        those given up on."""
        out: list[ID] = []
        for peer, entry in list(self.lost.items()):
            if now - entry.since > self.give_up_s:
                del self.lost[peer]
                continue
            addrs = tuple(self._addrs_of(peer))
            if addrs and addrs != entry.addrs:
                entry.addrs = addrs
                entry.next_at = now
            if entry.next_at <= now:
                out.append(peer)
        return out

    def failed(self, peer: ID, now: float) -> None:
        entry = self.lost.get(peer)
        if entry is None:
            return
        entry.attempts += 1
        entry.delay = min(entry.delay * 2, self.max_delay_s)
        entry.next_at = now + entry.delay

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async with trio.open_nursery() as nursery:
            dialling: set[ID] = set()

            async def dial(peer: ID, addrs: tuple[str, ...]) -> None:
                try:
                    self.dials += 1
                    failures = await connect_all(self.host, list(addrs), timeout=DIAL_TIMEOUT_S)
                    if self.host.get_network().connections.get(peer):
                        self.heard(peer)
                    else:
                        log.debug("redial of %s failed: %s", peer, list(failures.values())[:1])
                        self.failed(peer, trio.current_time())
                finally:
                    dialling.discard(peer)

            while True:
                now = trio.current_time()
                for peer in self.due(now):
                    entry = self.lost[peer]
                    if peer in dialling:
                        continue
                    if self.host.get_network().connections.get(peer):
                        self.heard(peer)
                        continue
                    if not entry.addrs:
                        self.failed(peer, now)
                        continue
                    dialling.add(peer)
                    nursery.start_soon(dial, peer, entry.addrs)
                self._wake = trio.Event()
                with trio.move_on_after(POLL_S):
                    await self._wake.wait()
