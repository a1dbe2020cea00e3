"""Adaptive batching of outgoing envelopes into gossip frames, under a frame budget.

Gossip frames are what a network of py-libp2p nodes runs out of first (measured:
10 node processes on a 2-core box saturated near 17-18 frames/s in total, whatever a
frame carries; 56 since the transport work of docs/transport.md). So each node
spends frames from a token bucket: `frames_per_second` tokens a second, at most
`burst` saved up. While a token is there an envelope goes out at once, alone in its
frame: a quiet market pays no batching delay. While the bucket is empty, envelopes
queue, and the next token sends everything queued for one market as a single frame
(up to the frame's item and byte caps): a busy market gets bigger frames, not more
of them, and its latency is bounded by the token interval.

A full frame (as many envelopes, or bytes, as a frame may carry) goes out without
a token. The budget exists because a frame costs every node the same whatever it
carries; a full frame carries the most it can, so holding it back saves no cost per
envelope, it only lets the queue grow until the publisher must wait. Measured
(`bench net`, 10 nodes, 3 publishers, 2 frames/s): without this rule the batched
rate stopped at 448 orders/s with the machine at 60 %, every frame then full, the
budget and the item cap (2 x 64 a second per publisher) the bound.

A well-filled frame leaves early: once a market's queue holds `early_items`
envelopes (a quarter of a full frame by default) and its oldest has waited
`linger_s` (0.25 s), it goes without a token. Its fixed cost is then shared by at
least that many envelopes, and under a steady flow too slow to fill frames (but
fast enough to fill a quarter of one in the linger) an envelope waits at most the
linger instead of the token interval. Frames sent so number at most the envelope
rate over `early_items`. Measured on one machine in one session, before and after:
`bench net` (10 nodes, 3 publishers, 2 frames/s) at half the batched rate, p99 630
-> 439 ms and p50 319 -> 182 ms (the token wait was up to 500 ms of it), the batched
rate 512 both; `bench market` at 28 asks/s (3 runs each), 11.9 -> 15.4 frames/s,
7.44 -> 8.04 ms of CPU per ask per node and assignment p99 1.85 -> 1.55 s (means):
its requesters' queues fill a quarter frame within the linger.

A frame that goes without a token still takes what the bucket holds (up to one
token). Frames are what the budget counts, and a busy market's early and full
frames are already more than the budget's rate: when they took nothing, the bucket
refilled between them and each token sent whatever had queued since the last frame,
a scrap. Measured on one machine in one session: in a `bench net` step of 640
orders/s (10 nodes, 3 publishers), about half of a publisher's frames carried 3-20
envelopes (36.8 on average; the step fell behind its schedule in 2 runs of 2);
after, every frame went early or full (44.5 on average, about 55 while the flow was
steady), the machine 70 % busy instead of 79 %, and the step passed. In `bench
market` it buys CPU with latency: at 28 asks/s, 7.05-7.67 ms of CPU per ask per
node (3 runs) against 7.67-8.54 (2 runs) and 12.3-13.4 frames/s against 15-15.6,
for an assignment p99 of 2.0-2.5 s against 1.5 s (p50 1.29 s in all: a waiting
envelope now waits for the linger more often than for a token); at 32 asks/s, 2
runs of 2 passed (p99 2.55 and 1.70 s) against 1 of 2 (the other spiralled into
overload: p99 18.9 s).

Pure logic: no I/O, no clock of its own. Every method that depends on time takes
`now` (seconds, any monotonic origin), so the tests drive it with plain numbers and
the gossip service drives it with `trio.current_time()`.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from typing import Final

from p2p_market.net.frame import MAX_FRAME_BYTES, MAX_FRAME_ITEMS, frame_size, item_fits

DEFAULT_FRAMES_PER_SECOND: Final = 2.0
"""A node's share of the network-wide frame capacity measured before the transport
work (~17 frames/s over 10 processes on two cores), rounded up: a node rarely
publishes alone for long. Kept there since: `bench market` with 8 nodes meets its
latency target at 32 asks/s with it (README, Status), and a larger budget buys
lower latency with more frames."""

DEFAULT_BURST: Final = 4
"""Frames a node may send back to back after a quiet spell."""

DEFAULT_LINGER_S: Final = 0.25
"""How long the oldest envelope of a well-filled queue waits before its frame may go
without a token (half the default token interval)."""

EARLY_SHARE: Final = 4
"""A queue holding a full frame's items over this many is well filled."""

DEFAULT_MAX_PENDING: Final = 4096
"""Envelopes waiting for a frame; beyond this `push` refuses and the publisher waits."""


@dataclass(frozen=True, slots=True)
class Batch:
    """Envelopes for one market's topic, to be sent as one frame, in push order."""

    market: bytes
    items: tuple[bytes, ...]


class FrameBudget:
    """A token bucket of frames. Starts full: the first `burst` frames go at once."""

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, frames_per_second: float, burst: int) -> None:
        if frames_per_second <= 0 or burst < 1:
            raise ValueError("a frame budget needs a positive rate and a burst of at least 1")
        self.rate = frames_per_second
        self.burst = burst
        self._tokens = float(burst)
        self._last: float | None = None

    def _refill(self, now: float) -> None:
        if self._last is not None and now > self._last:
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        if self._last is None or now > self._last:
            self._last = now

    def tokens(self, now: float) -> float:
        self._refill(now)
        return self._tokens

    def try_spend(self, now: float, cost: float = 1.0) -> bool:
        self._refill(now)
        if self._tokens < cost:
            return False
        self._tokens -= cost
        return True

    def drain(self, now: float, cost: float = 1.0) -> None:
        """Spend what there is, up to `cost`: for a frame that may go without a token
        (Batcher.take)."""
        self._refill(now)
        self._tokens -= min(self._tokens, cost)

    def next_token_at(self, now: float) -> float:
        """The earliest time at which a frame may be spent (`now` if it may already)."""
        missing = 1.0 - self.tokens(now)
        return now if missing <= 0 else now + missing / self.rate


class Batcher:
    """Queues envelopes per market and hands out batches as the frame budget allows.

    Order is kept within a market (a node's ask is never overtaken by its own
    cancel), and markets take turns by the age of their oldest waiting envelope."""

    def __init__(
        self,
        *,
        frames_per_second: float = DEFAULT_FRAMES_PER_SECOND,
        burst: int = DEFAULT_BURST,
        max_items: int = MAX_FRAME_ITEMS,
        max_bytes: int = MAX_FRAME_BYTES,
        max_pending: int = DEFAULT_MAX_PENDING,
        early_items: int | None = None,
        linger_s: float = DEFAULT_LINGER_S,
    ) -> None:
        if not 1 <= max_items <= MAX_FRAME_ITEMS:
            raise ValueError(f"max_items must be in 1..{MAX_FRAME_ITEMS}")
        if not 0 < max_bytes <= MAX_FRAME_BYTES:
            raise ValueError(f"max_bytes must be in 1..{MAX_FRAME_BYTES}")
        if early_items is None:
            early_items = max(1, max_items // EARLY_SHARE)
        if early_items < 1 or linger_s < 0:
            raise ValueError("early_items must be positive and linger_s not negative")
        self.budget = FrameBudget(frames_per_second, burst)
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.max_pending = max_pending
        self.early_items = early_items
        self.linger_s = linger_s
        self._queues: dict[bytes, deque[tuple[int, bytes, float]]] = {}
        self._queued_bytes: dict[bytes, int] = {}
        self._pending: set[bytes] = set()
        self._arrival = itertools.count()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def has_room(self) -> bool:
        return len(self._pending) < self.max_pending

    def push(self, market: bytes, envelope: bytes, now: float) -> bool:
        """Queue an envelope for `market`'s topic at `now`. False when the queue is
        full (the caller waits for a `take`); an envelope already waiting is not
        queued twice. Raises ValueError for an envelope no frame could carry."""
        if not item_fits(len(envelope)) or frame_size([len(envelope)]) > self.max_bytes:
            raise ValueError(f"an envelope of {len(envelope)} bytes does not fit in a frame")
        if envelope in self._pending:
            return True
        if not self.has_room():
            return False
        self._pending.add(envelope)
        self._queues.setdefault(market, deque()).append((next(self._arrival), envelope, now))
        self._queued_bytes[market] = self._queued_bytes.get(market, 0) + len(envelope)
        return True

    def _fills_a_frame(self, market: bytes) -> bool:
        """Whether `market`'s queue holds at least a full frame (by items, or by
        bytes beyond what one frame can carry)."""
        queue = self._queues.get(market)
        if not queue:
            return False
        return len(queue) >= self.max_items or self._queued_bytes[market] >= self.max_bytes

    def _early_at(self, market: bytes) -> float | None:
        """When `market`'s queue may leave early (well filled, its oldest envelope
        having lingered), or None while it holds too few envelopes."""
        queue = self._queues[market]
        return queue[0][2] + self.linger_s if len(queue) >= self.early_items else None

    def free_frame_waiting(self, now: float) -> bytes | None:
        """A market whose frame may go out without a token at `now` (it is full, or
        well filled and lingered; the one whose envelope has waited longest), or
        None if none may."""
        free = [
            m
            for m in self._queues
            if self._fills_a_frame(m) or ((at := self._early_at(m)) is not None and at <= now)
        ]
        return min(free, key=lambda m: self._queues[m][0][0]) if free else None

    def next_due(self, now: float) -> float | None:
        """When `take` will next return a batch: `now` if it would already, else the
        earlier of the next frame token and the moment a well-filled queue has
        lingered; None if nothing waits."""
        if not self._pending:
            return None
        due = self.budget.next_token_at(now)
        for market in self._queues:
            if self._fills_a_frame(market):
                return now
            at = self._early_at(market)
            if at is not None and at < due:
                due = at
        return max(due, now)

    def take(self, now: float) -> Batch | None:
        """A frame that may go without a token (full, or well filled and lingered:
        the market whose such queue has waited longest), which takes what tokens
        there are, up to one (the module's docstring); else spend one frame token
        on the market whose envelope has waited longest. Either way as many of its
        envelopes, oldest first, as fit in one frame. None (and nothing spent) when
        nothing waits, or the budget is exhausted and no frame may go without it."""
        if not self._pending:
            return None
        market = self.free_frame_waiting(now)
        if market is not None:
            self.budget.drain(now)
        else:
            if not self.budget.try_spend(now):
                return None
            market = min(self._queues, key=lambda m: self._queues[m][0][0])
        queue = self._queues[market]
        items: list[bytes] = []
        sizes: list[int] = []
        while queue and len(items) < self.max_items:
            envelope = queue[0][1]
            if items and frame_size([*sizes, len(envelope)]) > self.max_bytes:
                break
            queue.popleft()
            items.append(envelope)
            sizes.append(len(envelope))
            self._pending.discard(envelope)
        self._queued_bytes[market] -= sum(sizes)
        if not queue:
            del self._queues[market]
            del self._queued_bytes[market]
        return Batch(market, tuple(items))
