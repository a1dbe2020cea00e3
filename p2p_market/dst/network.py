"""The simulated network: an event queue in virtual time and a gossip mesh.

Events at one virtual millisecond run in the order they were scheduled (the queue
is a calendar of milliseconds, see EventLoop), so a run is a pure function of its
seed. The mesh is a random graph of about `degree` links per node;
each link has its own median latency, each message a lognormal factor on it (which
reorders messages), and may be lost or duplicated. Partitions and isolation cut
links; a message sent over a cut link is dropped, not queued.

Flooding itself is the nodes' business (node.py): a node forwards an envelope to
its mesh peers only when its own core accepted it, as gossipsub's validator does,
and skips the peers that already hold it. That is the model of gossipsub v1.2's
IDONTWANT: a node that got a message tells its mesh peers not to send it. Here the
sender knows it instantly (it looks at the peer's holdings when it sends), which
slightly overstates IDONTWANT's effect: a real IDONTWANT takes a link's latency to
arrive, so copies that cross it in flight are still sent. Only an up peer over an
up link can have told: a frame to a crashed peer, or over a cut link, is sent and
meets its fate as before (dropped at the crashed node, cut). Suppressed frames are
counted in `NetStats.suppressed`, never in `sent`; the frames that are sent are
lost, duplicated, delayed and cut exactly as before.

The per-frame path (send, the queue, arrival) is the simulator's hot loop: tens of
thousands of frames per simulated second. It keeps each link's median in a list
indexed by node, draws a frame's latency factor from a precomputed table of the
lognormal's quantiles (one draw from the seeded network stream per frame, see
JITTER_BITS), and adds the frame to the queue without a call.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from p2p_market.dst.scenarios import Scenario

Callback = Callable[..., None]


class EventLoop:
    """Virtual time only: `now` moves when an event is taken from the queue.

    A calendar of whole milliseconds: a heap of the distinct times that have events,
    and for each time the list of its events in the order they were scheduled. It
    runs events in exactly the order of a heap keyed by (time, sequence number);
    with many events per millisecond (the frames), each costs a dict lookup and an
    append instead of a push and a pop on a heap of tuples."""

    def __init__(self, start_ms: int) -> None:
        self.now = start_ms
        self._times: list[int] = []
        """Heap of the times in `_due`."""
        self._due: dict[int, list[tuple[Callback, tuple[Any, ...]]]] = {}
        """Time -> its events (fn, args), in the order scheduled. Network.send
        adds its frames here directly (the same code as `at`, inlined)."""
        self.processed = 0

    def at(self, t: int, fn: Callback, *args: Any) -> None:
        if t < self.now:
            t = self.now
        due = self._due.get(t)
        if due is None:
            self._due[t] = [(fn, args)]
            heapq.heappush(self._times, t)
        else:
            due.append((fn, args))

    def after(self, delay: int, fn: Callback, *args: Any) -> None:
        self.at(self.now + delay, fn, *args)

    def run_until(self, end_ms: int) -> None:
        """Events scheduled for the current time while it runs go into a new list for
        the same time, taken right after this one: still in the order scheduled."""
        times, due = self._times, self._due
        pop = heapq.heappop
        while times and times[0] <= end_ms:
            t = pop(times)
            self.now = t
            events = due.pop(t)
            self.processed += len(events)
            for fn, args in events:
                fn(*args)
        self.now = max(self.now, end_ms)


@dataclass(slots=True)
class NetStats:
    sent: int = 0
    delivered: int = 0
    lost: int = 0
    cut: int = 0
    duplicated: int = 0
    suppressed: int = 0
    """Frames not sent because the peer already held the message (IDONTWANT)."""
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


JITTER_BITS = 12
"""A frame's latency factor is one of 2**JITTER_BITS equally likely quantiles of the
lognormal (the midpoints of as many equal-probability bins): one cheap uniform
draw per frame instead of a lognormal variate. The tails stop at about 3.7 sigma."""
DEFAULT_MEDIAN_MS = 55.0
"""A link that is not in the mesh (sync with a non-neighbour) gets a typical median."""


def latency_factors(jitter: float, bits: int = JITTER_BITS) -> list[float]:
    n = 1 << bits
    if not jitter:
        return [1.0] * n
    z = NormalDist(0.0, jitter)
    return [math.exp(z.inv_cdf((i + 0.5) / n)) for i in range(n)]


class Network:
    def __init__(self, n: int, scenario: Scenario, rng: random.Random, loop: EventLoop) -> None:
        self.n = n
        self.rng = rng
        self.loop = loop
        self.mesh = build_mesh(n, scenario.degree, rng)
        lo, hi = scenario.latency_ms
        self._median: list[dict[int, float]] = [{} for _ in range(n)]
        """Per node, the median latency (ms) of each of its links, by peer."""
        for a in range(n):
            for b in self.mesh[a]:
                if a < b:
                    m = rng.uniform(lo, hi)
                    self._median[a][b] = self._median[b][a] = m
        self.jitter = scenario.jitter
        self._factors = latency_factors(self.jitter)
        self.loss = scenario.loss
        self.duplication = scenario.duplication
        self.burst_loss = 0.0
        self.side = [0] * n
        self.isolated: set[int] = set()
        self.stats = NetStats()
        self.receivers: list[Callable[[bytes, int], None]] = []
        """Per node, what a frame that arrives is handed to, as (raw, src)."""
        self.on_batch: Callable[[int, int, list[bytes]], None] = _unset_batch

    # -- faults --------------------------------------------------------------------
    def link_up(self, a: int, b: int) -> bool:
        iso = self.isolated
        return self.side[a] == self.side[b] and not (iso and (a in iso or b in iso))

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
        """The link's median times a factor drawn from the lognormal (see JITTER_BITS),
        in whole ms, at least 1."""
        median = self._median[a].get(b, DEFAULT_MEDIAN_MS)
        ms = int(median * self._factors[self.rng.getrandbits(JITTER_BITS)] + 0.5)
        return ms if ms > 0 else 1

    def send(self, src: int, dst: int, raw: bytes) -> None:
        """One gossip frame: may be lost, duplicated, and arrives after the link's latency."""
        self.send_many(src, (dst,), raw)

    def send_many(self, src: int, dsts: Sequence[int], raw: bytes) -> None:
        """One frame to each of `dsts`, in order: each exactly as `send` (the same
        draws from the network stream, in the same order), with what they share
        looked up once (this runs for every frame; `latency` and `EventLoop.at`
        are inlined)."""
        stats = self.stats
        stats.sent += len(dsts)
        side, iso, rng = self.side, self.isolated, self.rng
        here = side[src]
        src_cut = src in iso
        loss = self.loss + self.burst_loss
        duplication = self.duplication
        medians, factors, bits = self._median[src], self._factors, rng.getrandbits
        loop = self.loop
        now, due, arrive = loop.now, loop._due, self._arrive
        for dst in dsts:
            if side[dst] != here or (iso and (src_cut or dst in iso)):
                stats.cut += 1
                continue
            if loss and rng.random() < loss:
                stats.lost += 1
                continue
            ms = int(medians.get(dst, DEFAULT_MEDIAN_MS) * factors[bits(JITTER_BITS)] + 0.5)
            t = now + (ms if ms > 0 else 1)
            event = (arrive, (src, dst, raw))
            events = due.get(t)
            if events is None:
                due[t] = [event]
                heapq.heappush(loop._times, t)
            else:
                events.append(event)
            if duplication and rng.random() < duplication:
                stats.duplicated += 1
                loop.after(self.latency(src, dst), arrive, src, dst, raw)

    def send_batch(self, src: int, dst: int, batch: list[bytes]) -> None:
        """A reliable stream (the sync protocol): no loss, but it needs the link up."""
        if not batch or not self.link_up(src, dst):
            return
        self.stats.sync_batches += 1
        self.stats.sync_envelopes += len(batch)
        self.loop.after(2 * self.latency(src, dst), self._arrive_batch, src, dst, batch)

    def _arrive(self, src: int, dst: int, raw: bytes) -> None:
        iso = self.isolated
        if self.side[src] != self.side[dst] or (iso and (src in iso or dst in iso)):
            self.stats.cut += 1  # cut while in flight
            return
        self.stats.delivered += 1
        self.receivers[dst](raw, src)

    def _arrive_batch(self, src: int, dst: int, batch: list[bytes]) -> None:
        if self.link_up(src, dst):
            self.on_batch(dst, src, batch)


def _unset_batch(dst: int, src: int, batch: list[bytes]) -> None:
    raise RuntimeError("Network.on_batch is not set")
