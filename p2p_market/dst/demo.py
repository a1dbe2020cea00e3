"""A deterministic demo of the core: a few devnet provers and requesters trade in one
market, every node runs its own `MarketState`, and at the end every node must hold
the same state.

There is no network here: a zero-latency in-memory broadcast hands every envelope to
every node, and virtual time advances in fixed steps. Nodes are one observer plus one
node per prover (its `MarketState` knows which prover it is, so it tells it when to
commit). The requesters act on the observer's effects. Nothing reads a clock or a
random source, so every run prints the same bytes.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from p2p_market.core import effects as fx
from p2p_market.core.envelope import message_id
from p2p_market.core.lifecycle import TERMINAL
from p2p_market.core.messages import Outcome, sha256
from p2p_market.core.state import MarketState
from p2p_market.markets.devnet import GENESIS_MS, Actor, default_market

STEP_MS = 100
"""Virtual time advances by this much between ticks."""
HORIZON_MS = 120_000
"""The demo gives up (and reports what it has) after this much virtual time."""
VERIFY_MS = 200
"""How long a requester takes to check a proof before it signs its receipt."""


@dataclass(frozen=True, slots=True)
class ProverSpec:
    name: str
    price: int
    proof_time: int
    capacity: int


@dataclass(frozen=True, slots=True)
class AskSpec:
    requester: str
    at: int
    """Offset from the start of the demo, in ms."""
    max_price: int
    max_proof_time: int
    prefer: str
    replicas: int = 1
    ttl: int = 600_000
    cancel_after: int | None = None
    """Cancel this many ms after publishing (None: never)."""


PROVERS: tuple[ProverSpec, ...] = (
    ProverSpec("prover-1", price=100, proof_time=4_000, capacity=2),
    ProverSpec("prover-2", price=80, proof_time=9_000, capacity=1),
    ProverSpec("prover-3", price=150, proof_time=3_000, capacity=1),
    ProverSpec("prover-4", price=120, proof_time=6_000, capacity=3),
)

ASKS: tuple[AskSpec, ...] = (
    # Cheapest wins: prover-2.
    AskSpec("requester-1", at=1_000, max_price=200, max_proof_time=10_000, prefer="cost"),
    # Fastest wins: prover-3.
    AskSpec("requester-1", at=1_500, max_price=200, max_proof_time=10_000, prefer="time"),
    # Two replicas under tighter caps: prover-1 and prover-4.
    AskSpec(
        "requester-2", at=2_000, max_price=130, max_proof_time=8_000, prefer="cost", replicas=2
    ),
    # Only prover-1 fits both caps.
    AskSpec("requester-2", at=2_500, max_price=110, max_proof_time=5_000, prefer="time"),
    # Withdrawn before its commit window closes: prover-4 has committed, but a commit
    # is not an assignment, so the cancel stands.
    AskSpec(
        "requester-1",
        at=3_000,
        max_price=200,
        max_proof_time=10_000,
        prefer="cost",
        cancel_after=400,
    ),
    # The two cheapest provers are full (prover-2 with the first ask, prover-1 with two):
    # the best prover with a free slot, prover-4, takes it.
    AskSpec("requester-1", at=3_500, max_price=200, max_proof_time=10_000, prefer="cost"),
    # Nobody is that cheap: it stays open until it expires.
    AskSpec(
        "requester-2", at=4_000, max_price=50, max_proof_time=10_000, prefer="cost", ttl=30_000
    ),
)


@dataclass(frozen=True, slots=True)
class BidRow:
    prover: str
    public_id: str
    price: int
    proof_time: int
    capacity: int


@dataclass(frozen=True, slots=True)
class AskRow:
    id: str
    """Short hex of the ask's message id."""
    requester: str
    prefer: str
    max_price: int
    max_proof_time: int
    replicas: int
    state: str
    winners: tuple[str, ...]
    paid: int
    """Sum of the accepted winners' own prices (pay-as-bid)."""


@dataclass(frozen=True, slots=True)
class NodeRow:
    node: str
    state_hash: str
    violations: tuple[str, ...]
    reorgs: int


@dataclass(frozen=True, slots=True)
class DemoResult:
    bids: tuple[BidRow, ...]
    asks: tuple[AskRow, ...]
    nodes: tuple[NodeRow, ...]
    envelopes: int
    """Distinct envelopes broadcast."""
    refused: tuple[str, ...]
    """Every verdict other than accept, as `node: verdict` (expected to be empty)."""
    started_at: int
    finished_at: int

    @property
    def agree(self) -> bool:
        return len({n.state_hash for n in self.nodes}) == 1

    @property
    def invariants_hold(self) -> bool:
        return all(not n.violations for n in self.nodes)

    @property
    def ok(self) -> bool:
        return self.agree and self.invariants_hold


Publish = Callable[[int], bytes]
"""Signs a message with the given timestamp."""


class _Demo:
    def __init__(self) -> None:
        self.market = default_market(difficulty=0)
        self.t0 = GENESIS_MS + 60_000
        self.provers = {p.name: Actor(p.name, self.market) for p in PROVERS}
        self.specs = {p.name: p for p in PROVERS}
        names = sorted({a.requester for a in ASKS})
        self.requesters = {n: Actor(n, self.market) for n in names}
        self.names = {a.public_key: n for n, a in (self.provers | self.requesters).items()}
        self.nodes: dict[str, MarketState] = {"observer": MarketState(self.market)}
        for name, actor in self.provers.items():
            self.nodes[name] = MarketState(self.market, local_prover=actor.public_key)
        self.queue: list[tuple[int, int, Publish]] = []
        self.counter = 0
        self.sent = 0
        self.refused: list[str] = []
        self.ask_ids: list[bytes] = []

    def later(self, at: int, publish: Publish) -> None:
        self.counter += 1
        heapq.heappush(self.queue, (at, self.counter, publish))

    # -- the in-memory broadcast ------------------------------------------------
    def broadcast(self, raw: bytes, now: int) -> None:
        wire = deque([raw])
        while wire:
            envelope = wire.popleft()
            self.sent += 1
            for name, node in self.nodes.items():
                verdict, effects = node.apply(envelope, now)
                if not verdict.accepted:
                    self.refused.append(f"{name}: {verdict}")
                wire.extend(self.react(name, effects, now))

    def react(self, node: str, effects: list[fx.Effect], now: int) -> list[bytes]:
        """Act on a node's effects; returns what must be broadcast at once."""
        out: list[bytes] = []
        prover = self.provers.get(node)
        for e in effects:
            if prover is not None and isinstance(e, fx.CommitToAsk):
                out.append(
                    prover.commit(
                        now=now,
                        ask=e.ask,
                        bid=e.bid,
                        price=e.price,
                        proof_time=e.proof_time,
                        round=e.round,
                        attempt=e.attempt,
                    )
                )
            elif prover is not None and isinstance(e, fx.Assigned):
                if e.prover == prover.public_key:
                    self._prove(prover, e, now)
            elif node == "observer" and isinstance(e, fx.ProofDelivered | fx.DeadlinePassed):
                self._judge(e, now)
            elif node == "observer" and isinstance(e, fx.AttemptSettled):
                self._award(e, now)
        return out

    def _prove(self, prover: Actor, e: fx.Assigned, now: int) -> None:
        """The prover works for half its advertised proof time from the window's end,
        but publishes no sooner than the next step after it knows it won."""
        proof_time = self.specs[prover.name].proof_time
        window_end = e.deadline - proof_time
        at = max(now + STEP_MS, window_end + proof_time // 2)
        body = sha256(b"demo proof of " + e.ask)[:8]  # a valid nonce at difficulty 0
        self.later(at, lambda t: prover.proof(now=t, ask=e.ask, proof=body))

    def _award(self, e: fx.AttemptSettled, now: int) -> None:
        """The ask's requester makes the settled winners final."""
        if e.final or not e.commits:
            return
        view = self.nodes["observer"].view(e.ask)
        requester = self.requesters[self.names[view.requester]]
        self.later(
            max(now + STEP_MS, e.window_end),
            lambda t: requester.award(
                now=t, ask=e.ask, commits=list(e.commits), round=e.round, attempt=e.attempt
            ),
        )

    def _judge(self, e: fx.ProofDelivered | fx.DeadlinePassed, now: int) -> None:
        view = self.nodes["observer"].view(e.ask)
        requester = self.requesters[self.names[view.requester]]
        outcome = Outcome.ACCEPTED if isinstance(e, fx.ProofDelivered) else Outcome.TIMED_OUT
        self.later(
            now + VERIFY_MS,
            lambda t: requester.receipt(now=t, ask=e.ask, prover=e.prover, outcome=outcome.value),
        )

    # -- the script -------------------------------------------------------------
    def setup(self) -> None:
        for prover in PROVERS:
            self.later(self.t0, self._bidder(prover))
        for ask in ASKS:
            self.later(self.t0 + ask.at, self._asker(ask))

    def _bidder(self, spec: ProverSpec) -> Publish:
        actor = self.provers[spec.name]

        def publish(t: int) -> bytes:
            return actor.bid(
                now=t, price=spec.price, proof_time=spec.proof_time, capacity=spec.capacity
            )

        return publish

    def _asker(self, spec: AskSpec) -> Publish:
        requester = self.requesters[spec.requester]

        def publish(t: int) -> bytes:
            raw = requester.ask(
                now=t,
                max_price=spec.max_price,
                max_proof_time=spec.max_proof_time,
                prefer=spec.prefer,
                replicas=spec.replicas,
                ttl=spec.ttl,
                inputs=f"demo inputs {len(self.ask_ids)}".encode(),
            )
            ask_id = message_id(raw)
            self.ask_ids.append(ask_id)
            if spec.cancel_after is not None:
                self.later(t + spec.cancel_after, lambda t2: requester.cancel(now=t2, ask=ask_id))
            return raw

        return publish

    def settled(self) -> bool:
        observer = self.nodes["observer"]
        return (
            not self.queue
            and len(self.ask_ids) == len(ASKS)
            and all(observer.ask_state(a) in TERMINAL for a in self.ask_ids)
        )

    def run(self) -> DemoResult:
        self.setup()
        now = self.t0
        while now <= self.t0 + HORIZON_MS:
            while self.queue and self.queue[0][0] <= now:
                _, _, publish = heapq.heappop(self.queue)
                self.broadcast(publish(now), now)
            for name, node in self.nodes.items():
                for raw in self.react(name, node.tick(now), now):
                    self.broadcast(raw, now)
            if self.settled():
                break
            now += STEP_MS
        for node in self.nodes.values():
            node.tick(now)
        return self.result(now)

    def result(self, now: int) -> DemoResult:
        observer = self.nodes["observer"]
        bids = tuple(
            BidRow(s.name, self.provers[s.name].public_key.hex(), s.price, s.proof_time, s.capacity)
            for s in PROVERS
        )
        asks = []
        for ask_id in self.ask_ids:
            view = observer.view(ask_id)
            asks.append(
                AskRow(
                    id=ask_id.hex()[:12],
                    requester=self.names[view.requester],
                    prefer=view.ask.prefer,
                    max_price=view.ask.max_price,
                    max_proof_time=view.ask.max_proof_time,
                    replicas=view.ask.replicas,
                    state=view.state.value,
                    winners=tuple(self.names[w] for w in view.winners),
                    paid=view.paid,
                )
            )
        nodes = tuple(
            NodeRow(name, node.state_hash(), tuple(node.check_invariants()), node.reorgs)
            for name, node in self.nodes.items()
        )
        return DemoResult(
            bids=bids,
            asks=tuple(asks),
            nodes=nodes,
            envelopes=self.sent,
            refused=tuple(self.refused),
            started_at=self.t0,
            finished_at=now,
        )


def run_demo() -> DemoResult:
    """Run the scripted market to completion; pure and deterministic."""
    return _Demo().run()
