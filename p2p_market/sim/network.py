"""The simulated network: an event queue in virtual time and a gossip mesh.

The queue is a heap keyed by (virtual time in ms, sequence number), so two events
at the same millisecond run in the order they were scheduled and a run is a pure
function of its seed. The mesh is a random graph of about `degree` links per node;
each link has its own median latency, each message a lognormal factor on it (which
reorders messages), and may be lost or duplicated. Partitions and isolation cut
links; a message sent over a cut link is dropped, not queued.

Flooding itself is the nodes' business (node.py): a node forwards an envelope to
its mesh peers only when its own core accepted it, as gossipsub's validator does.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from p2p_market.sim.scenarios import Scenario

Callback = Callable[..., None]


class EventLoop:
    """Virtual time only: `now` moves when an event is taken from the queue."""

    def __init__(self, start_ms: int) -> None:
        self.now = start_ms
        self._heap: list[tuple[int, int, Callback, tuple[Any, ...]]] = []
        self._seq = 0
        self.processed = 0

    def at(self, t: int, fn: Callback, *args: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (max(t, self.now), self._seq, fn, args))

    def after(self, delay: int, fn: Callback, *args: Any) -> None:
        self.at(self.now + delay, fn, *args)

    def run_until(self, end_ms: int) -> None:
        heap = self._heap
        while heap and heap[0][0] <= end_ms:
            t, _, fn, args = heapq.heappop(heap)
            self.now = t
            self.processed += 1
            fn(*args)
        self.now = max(self.now, end_ms)


@dataclass(slots=True)
class NetStats:
    sent: int = 0
    delivered: int = 0
    lost: int = 0
    cut: int = 0
    duplicated: int = 0
    sync_batches: int = 0
    sync_envelopes: int = 0


def build_mesh(n: int, degree: int, rng: random.Random) -> list[list[int]]:
    """A random connected graph with about `degree` links per node."""
    links: list[set[int]] = [set() for _ in range(n)]
    half = max(1, degree // 2)
    for a in range(n):
        others = [b for b in range(n) if b != a]
        for b in rng.sample(others, min(half, len(others))):
            links[a].add(b)
            links[b].add(a)
    # join the components, if the draw left more than one
    seen = [False] * n
    roots: list[int] = []
    for start in range(n):
        if seen[start]:
            continue
        roots.append(start)
        stack = [start]
        seen[start] = True
        while stack:
            a = stack.pop()
            for b in links[a]:
                if not seen[b]:
                    seen[b] = True
                    stack.append(b)
    for a, b in itertools.pairwise(roots):
        links[a].add(b)
        links[b].add(a)
    return [sorted(x) for x in links]


class Network:
    def __init__(self, n: int, scenario: Scenario, rng: random.Random, loop: EventLoop) -> None:
        self.n = n
        self.rng = rng
        self.loop = loop
        self.mesh = build_mesh(n, scenario.degree, rng)
        lo, hi = scenario.latency_ms
        self._median: dict[tuple[int, int], float] = {}
        for a in range(n):
            for b in self.mesh[a]:
                if a < b:
                    m = rng.uniform(lo, hi)
                    self._median[(a, b)] = self._median[(b, a)] = m
        self.jitter = scenario.jitter
        self.loss = scenario.loss
        self.duplication = scenario.duplication
        self.burst_loss = 0.0
        self.side = [0] * n
        self.isolated: set[int] = set()
        self.stats = NetStats()
        self.on_deliver: Callable[[int, int, bytes], None] = _unset
        self.on_batch: Callable[[int, int, list[bytes]], None] = _unset_batch

    # -- faults --------------------------------------------------------------------
    def link_up(self, a: int, b: int) -> bool:
        return self.side[a] == self.side[b] and a not in self.isolated and b not in self.isolated

    def split(self, rng: random.Random) -> None:
        """Random halves."""
        order = list(range(self.n))
        rng.shuffle(order)
        for i, node in enumerate(order):
            self.side[node] = i % 2

    def heal(self) -> None:
        self.side = [0] * self.n

    # -- sending ---------------------------------------------------------------------
    def latency(self, a: int, b: int) -> int:
        median = self._median.get((a, b))
        if median is None:  # not a mesh link (sync with a non-neighbour): a typical one
            median = 55.0
        return max(1, round(median * self.rng.lognormvariate(0.0, self.jitter)))

    def send(self, src: int, dst: int, raw: bytes) -> None:
        """One gossip frame: may be lost, duplicated, and arrives after the link's latency."""
        stats = self.stats
        stats.sent += 1
        if not self.link_up(src, dst):
            stats.cut += 1
            return
        rng = self.rng
        loss = self.loss + self.burst_loss
        if loss and rng.random() < loss:
            stats.lost += 1
            return
        self.loop.after(self.latency(src, dst), self._arrive, src, dst, raw)
        if self.duplication and rng.random() < self.duplication:
            stats.duplicated += 1
            self.loop.after(self.latency(src, dst), self._arrive, src, dst, raw)

    def send_batch(self, src: int, dst: int, batch: list[bytes]) -> None:
        """A reliable stream (the sync protocol): no loss, but it needs the link up."""
        if not batch or not self.link_up(src, dst):
            return
        self.stats.sync_batches += 1
        self.stats.sync_envelopes += len(batch)
        self.loop.after(2 * self.latency(src, dst), self._arrive_batch, src, dst, batch)

    def _arrive(self, src: int, dst: int, raw: bytes) -> None:
        if not self.link_up(src, dst):  # cut while in flight
            self.stats.cut += 1
            return
        self.stats.delivered += 1
        self.on_deliver(dst, src, raw)

    def _arrive_batch(self, src: int, dst: int, batch: list[bytes]) -> None:
        if self.link_up(src, dst):
            self.on_batch(dst, src, batch)


def _unset(dst: int, src: int, raw: bytes) -> None:
    raise RuntimeError("Network.on_deliver is not set")


def _unset_batch(dst: int, src: int, batch: list[bytes]) -> None:
    raise RuntimeError("Network.on_batch is not set")
