"""A requester's workload: asks placed at a seeded random rate, for simulations and
load tests, by a real requester node (`node run` with [requester] and [workload]).

    [workload]                        # needs [requester] in the same config
    market = "market.toml"            # devnet, a descriptor file, or a market id
                                      #   (default: the node's first market)
    rate = 0.5                        # asks per second (Poisson arrivals)
    seed = 1                          # the schedule and the asks' terms follow from it
    duration_s = 60.0                 # stop placing after this long (0: never stop)
    start_file = "go"                 # optional: wait until this file exists; a JSON
                                      #   {"start_ms": ...} in it is the schedule's origin
    max_price = [5, 20]               # per unit of work: an integer, or [low, high]
                                      #   drawn uniformly; an ask of size s (its
                                      #   work, see core/work.py) offers s times it
    max_proof_time = [2000, 8000]     # ms; an integer or [low, high]
    time_share = 0.3                  # share of asks that prefer time (the rest: cost)
    replicas = { 1 = 0.9, 2 = 0.1 }   # an integer, or weights by replica count
    confidential_share = 0.2          # share of asks whose inputs go to winners only
    ttl_ms = 30000                    # each ask's lifetime
    work = [12, 16]                   # pow: the difficulty=N line of the inputs
    input_bytes = 64                  # random payload per ask
    inputs = ['{"a":"3","b":"11"}']   # instead: each ask's inputs, drawn from this list
                                      #   (e.g. a groth16 / plonk market's circuit inputs)
    events_file = "workload.jsonl"    # default: <data_dir>/workload.jsonl

The schedule is a pure function of (seed, start): a restarted requester regenerates
it and skips the arrivals already past, so a killed and restarted node goes on with
the same sequence instead of starting it again.

Every event of the node's own asks (placed, assigned, delivered, verified,
rejected, timed out, state changes) is appended to `events_file` as one JSON line
with the node's wall-clock time `t` (ms), so a launcher can follow the run and
measure latencies from each ask's signed timestamp as this requester saw them.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

import trio

from p2p_market.core.envelope import market_id
from p2p_market.core.messages import Ask, Market
from p2p_market.core.work import inputs_size
from p2p_market.markets.descriptor import MarketSpecError, resolve_market
from p2p_market.node.config import ConfigError, NodeConfig
from p2p_market.node.config_schema import WorkloadSection, validate
from p2p_market.node.runtime import Node
from p2p_market.roles.requester import RequesterRole

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger("p2p_market.workload")

WORKLOAD_KEYS: Final = frozenset(WorkloadSection.model_fields)
START_POLL_S: Final = 0.1


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkloadPlan:
    market: Market
    rate: float
    seed: int = 0
    duration_s: float = 0.0
    start_file: Path | None = None
    max_price: tuple[int, int] = (10, 10)
    max_proof_time: tuple[int, int] = (10_000, 10_000)
    time_share: float = 0.0
    replicas: tuple[tuple[int, float], ...] = ((1, 1.0),)
    confidential_share: float = 0.0
    ttl_ms: int = 30_000
    work: tuple[int, int] | None = None
    input_bytes: int = 64
    inputs: tuple[bytes, ...] = ()
    """If not empty, each ask's inputs are drawn from these (work, input_bytes unused)."""
    events_file: Path | None = None


@dataclass(frozen=True, slots=True)
class Arrival:
    """One ask of the schedule: when (ms after the origin) and on what terms."""

    index: int
    at_ms: int
    max_price: int
    max_proof_time: int
    prefer: str
    replicas: int
    confidential: bool
    inputs: bytes


def schedule(plan: WorkloadPlan) -> Any:
    """The arrivals, in order, forever (or until `duration_s`): a generator."""
    rng = random.Random(f"p2p-market/workload/{plan.seed}")
    t = 0.0
    counts = [c for c, _ in plan.replicas]
    weights = [w for _, w in plan.replicas]
    index = 0
    while True:
        t += rng.expovariate(plan.rate)
        if plan.duration_s and t > plan.duration_s:
            return
        payload = rng.randbytes(plan.input_bytes)
        work = b""
        if plan.work is not None:
            work = f"difficulty={rng.randint(*plan.work)}\n".encode()
        per_unit = rng.randint(*plan.max_price)
        max_proof_time = rng.randint(*plan.max_proof_time)
        prefer = "time" if rng.random() < plan.time_share else "cost"
        replicas = rng.choices(counts, weights)[0]
        confidential = rng.random() < plan.confidential_share
        inputs = (
            rng.choice(plan.inputs)
            if plan.inputs
            else work + f"workload {plan.seed} ask {index}\n".encode() + payload.hex().encode()
        )
        yield Arrival(
            index=index,
            at_ms=int(t * 1000),
            max_price=per_unit * (inputs_size(plan.market, inputs) or 1),
            max_proof_time=max_proof_time,
            prefer=prefer,
            replicas=replicas,
            confidential=confidential,
            inputs=inputs,
        )
        index += 1


# -- from a node config ----------------------------------------------------------------


def workload_plan(section: dict[str, Any], config: NodeConfig, base: Path) -> WorkloadPlan:
    """A checked [workload] section (node/config_schema.py WorkloadSection, then what
    depends on its market); ConfigError with one line naming the setting."""
    w = validate(WorkloadSection, section, "workload")
    market = config.markets[0]
    if w.market is not None:
        try:
            market = resolve_market(w.market, base=base, also=config.markets)
        except MarketSpecError as exc:
            raise ConfigError(f"workload.market: {exc}") from None
    if w.work is not None and market.proof_system != "pow":
        raise ConfigError("workload.work applies to pow markets only")
    ttl = w.ttl_ms[0]
    if ttl > market.max_lifetime_ms:
        raise ConfigError(
            f"workload.ttl_ms must be between 1000 and {market.max_lifetime_ms}"
            f" (market {market.name}'s max lifetime), not {ttl}"
        )
    return WorkloadPlan(
        market=market,
        rate=w.rate,
        seed=w.seed,
        duration_s=w.duration_s,
        start_file=base / w.start_file if w.start_file else None,
        max_price=w.max_price,
        max_proof_time=w.max_proof_time,
        time_share=w.time_share,
        replicas=w.replicas,
        confidential_share=w.confidential_share,
        ttl_ms=ttl,
        work=w.work,
        input_bytes=int(w.input_bytes),
        inputs=w.inputs,
        events_file=base / w.events_file if w.events_file else config.data_dir / "workload.jsonl",
    )


# -- running ---------------------------------------------------------------------------


class WorkloadRole:
    """Places the planned asks through the requester role and logs their events."""

    def __init__(self, node: Node, requester: RequesterRole, plan: WorkloadPlan) -> None:
        self.node = node
        self.requester = requester
        self.plan = plan
        self.market = market_id(plan.market)
        self.placed = 0
        self.refused = 0
        self._out: IO[str] | None = None

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        path = self.plan.events_file
        assert path is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as out:
            self._out = out
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._log_events)
                task_status.started()
                await self._place_all()
                await trio.sleep_forever()  # keep logging the asks' events

    def _write(self, record: dict[str, Any]) -> None:
        if self._out is not None:
            self._out.write(json.dumps(record, separators=(",", ":")) + "\n")
            self._out.flush()

    async def _log_events(self) -> None:
        async for event in self.requester.events:
            if event.kind == "placed":
                continue  # written with the ask's terms by _place
            self._write({"t": self.node.clock(), "ask": event.ask.hex(), "kind": event.kind,
                         **event.detail})  # fmt: skip

    async def _origin(self) -> int:
        """The schedule's origin (wall ms): from the start file, or now."""
        start = self.plan.start_file
        if start is None:
            return self.node.clock()
        while not start.exists():
            await trio.sleep(START_POLL_S)
        try:
            value = json.loads(start.read_text() or "{}").get("start_ms")
        except (ValueError, OSError, AttributeError):
            value = None
        return int(value) if type(value) is int else self.node.clock()

    async def _place_all(self) -> None:
        origin = await self._origin()
        skipped = 0
        for arrival in schedule(self.plan):
            due = origin + arrival.at_ms
            now = self.node.clock()
            if due < now - 1_000:  # past already (a restart): not placed twice
                skipped += 1
                continue
            if due > now:
                await trio.sleep((due - now) / 1000)
            await self._place(arrival)
        log.info(
            "workload done: %d placed, %d refused, %d skipped", self.placed, self.refused, skipped
        )

    async def _place(self, a: Arrival) -> None:
        fields = {
            "market": self.market.hex(),
            "max_price": a.max_price,
            "max_proof_time": a.max_proof_time,
            "prefer": a.prefer,
            "replicas": a.replicas,
            "ttl_ms": self.plan.ttl_ms,
            "confidential": a.confidential,
        }
        try:
            ask_id = await self.requester.request(fields, a.inputs)
        except ValueError as exc:
            self.refused += 1
            self._write({"t": self.node.clock(), "kind": "refused", "index": a.index,
                         "detail": str(exc)})  # fmt: skip
            return
        self.placed += 1
        env = self.node.states[self.market].asks.get(ask_id)
        signed = env.message.timestamp if env is not None and isinstance(env.message, Ask) else 0
        self._write({
            "t": self.node.clock(), "ask": ask_id.hex(), "kind": "placed", "index": a.index,
            "ts": signed, "max_price": a.max_price, "max_proof_time": a.max_proof_time,
            "prefer": a.prefer, "replicas": a.replicas, "confidential": a.confidential,
            "ttl_ms": self.plan.ttl_ms,
        })  # fmt: skip
