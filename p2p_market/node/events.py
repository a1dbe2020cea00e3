"""What the node tells its event stream (`GET /v1/events`, node/api.py), and the hub
that fans those events out to the stream's clients.

    hub = EventHub()
    with hub.subscribe() as events:     # a bounded queue of its own
        hub.publish("peer_connected", {"peer": "12D3..."})
        event = await events.receive()  # Event(seq=1, kind="peer_connected", ...)

Why a hub of bounded queues: the runtime publishes from its effect dispatcher and
from the paths of local submissions and connections, which must never wait on an
HTTP client. `publish` only ever does `send_nowait`; a client whose queue is full
(it reads slower than the node acts) is dropped: its queue is closed, its stream
ends with a `dropped` event, and it may subscribe again and read `GET /v1/asks/{id}`
for what it missed. A client is dropped, the node never waits.

The events are the core's effects about asks (core/effects.py, rendered by
`effect_event`), and what the node shell itself sees: the verdict of every local
submission (the API's and its roles'), peers connecting and dropped as dead, and the
log failing to be written or written again.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import trio

from p2p_market.core import effects as fx
from p2p_market.core.effects import Effect

QUEUE: Final = 256
"""Events one client may have waiting before it is dropped: a burst of a busy market
(a settlement tells a few events per ask) fits, a client that stopped reading does not."""

EFFECT_KINDS: Final[dict[type[Any], str]] = {
    fx.AskStateChanged: "ask_state",
    fx.CommitToAsk: "commit_to_ask",
    fx.AttemptSettled: "attempt_settled",
    fx.Assigned: "assigned",
    fx.Reorg: "reorg",
    fx.DeadlinePassed: "deadline_passed",
    fx.ProofDelivered: "proof_delivered",
    fx.SlotJudged: "slot_judged",
    fx.EquivocationSeen: "equivocation",
}
"""The event name of each core effect, as the stream tells it."""

NODE_KINDS: Final = ("submitted", "peer_connected", "peer_dropped", "storage")
"""The events of the node shell: a local submission's verdict, a connection up, a peer
the keepalive dropped, the log failing to be written (messages are refused) or
written again."""

STREAM_KINDS: Final = ("subscribed", "dropped")
"""Told by the stream itself: the first event of each stream (it is live from then
on), and the last one of a client whose queue overflowed."""

ALL_KINDS: Final = (*EFFECT_KINDS.values(), *NODE_KINDS, *STREAM_KINDS)


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    """Counts from 1 for each node run: a gap in what a client saw is what it missed."""
    kind: str
    data: dict[str, Any]


def plain(value: Any) -> Any:
    """A value as JSON can carry it: bytes as hex, enums by value, dataclasses and
    tuples as maps and lists (what the API's JSON renders the same way)."""
    if isinstance(value, bytes | bytearray):
        return value.hex()
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list | set | frozenset):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(plain(k)): plain(v) for k, v in value.items()}
    return value


def effect_event(market: bytes, effect: Effect) -> tuple[str, dict[str, Any]]:
    """A core effect as (event name, JSON data), with the market it is about."""
    data = plain(effect)
    assert isinstance(data, dict)
    return EFFECT_KINDS[type(effect)], {"market": market.hex(), **data}


class _Subscriber:
    def __init__(self, size: int) -> None:
        self.send, self.receive = trio.open_memory_channel[Event](size)
        self.dropped = False


class EventHub:
    """Fans each published event out to every subscriber's bounded queue."""

    def __init__(self, queue: int = QUEUE) -> None:
        self.queue = queue
        self.seq = 0
        self.dropped = 0
        """Clients dropped since the node started (their queue overflowed)."""
        self._subscribers: dict[_Subscriber, None] = {}

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    @contextmanager
    def subscribe(self) -> Iterator[trio.MemoryReceiveChannel[Event]]:
        """A queue of the events published from now on. Once dropped it is closed:
        `receive` raises EndOfChannel after the events it still holds."""
        sub = _Subscriber(self.queue)
        self._subscribers[sub] = None
        try:
            yield sub.receive
        finally:
            self._subscribers.pop(sub, None)
            sub.send.close()
            sub.receive.close()

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        """Never waits: a subscriber without room is dropped."""
        self.seq += 1
        event = Event(self.seq, kind, data)
        for sub in list(self._subscribers):
            try:
                sub.send.send_nowait(event)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.pop(sub, None)
                sub.dropped = True
                sub.send.close()
                self.dropped += 1

    def effect(self, market: bytes, effect: Effect) -> None:
        if self._subscribers:  # no rendering for nobody
            self.publish(*effect_event(market, effect))
        else:
            self.seq += 1
