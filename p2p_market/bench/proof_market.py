"""Proofs bought through a real market, one ask at a time, and where their time goes.

Two whole nodes in one trio run, on 127.0.0.1: a prover node (the prover role, as
`node run` wires it from a `[prover]` section, with the market's own back-end) and a
requester (the SDK's `open_client`, which verifies every proof with the market's
verifier and receipts it). Real py-libp2p hosts, SQLite logs, signatures and
snarkjs workers; nothing is replaced.

Asks are placed one after the other (the next once the previous is PROVEN), so that
each one's latency is the market's and not a queue's. The first ask starts both
Node.js workers and is reported apart (`first_ask_ms`). Every time is read from the
nodes' one clock (both nodes run in this process) as the events happen:

    placed ─ commit window ─ window end ─ settle ─ Assigned (prover) ─ before prove ─
    prove ─ delivery ─ delivered (requester) ─ … ─ verify ─ verified (requester)

`other_ms` is what the named parts leave of the total (the gap between delivery and
the verifier starting, and the event loop's own turns).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import trio

from p2p_market.core import effects as fx
from p2p_market.core.crypto import devnet_key
from p2p_market.core.messages import Market
from p2p_market.node.config import NodeConfig
from p2p_market.node.runtime import Node
from p2p_market.roles.prover import ProverRole
from p2p_market.roles.wiring import RolePlan, prover_plan, start_roles
from p2p_market.sdk import Client, open_client

PRICE: Final = 5
MAX_PRICE: Final = 10
PROOF_TIME_MS: Final = 20_000
"""The prover's promise: generous, as it does not change when an ask is assigned
(when the award arrives, whatever the proof time), only how long a slot may take."""
ASK_TIMEOUT_S: Final = 90.0
DISCOVER_S: Final = 30.0
SPLIT: Final = (
    "commit_window_ms",
    "settle_ms",
    "before_prove_ms",
    "prove_ms",
    "delivery_ms",
    "verify_ms",
    "other_ms",
)
"""The parts of one ask's time, in the order they happen."""


class MarketBenchError(RuntimeError):
    """An ask of the bench did not end with a verified proof, or its timeline has a
    hole (an event the bench waits for never came)."""


@dataclass(frozen=True, slots=True)
class MarketSample:
    """One ask, placed → verified proof at the requester (ms)."""

    total_ms: int
    commit_window_ms: int
    """Placed → the end of the commit window the winner committed in."""
    settle_ms: int
    """Window end → the prover's node tells it that it won (the requester's award lag,
    then the award's hop and a fold)."""
    before_prove_ms: int
    """Won → the back-end is called (the input check, the wait for the inputs)."""
    prove_ms: int
    """The back-end's prove call, on the prover."""
    delivery_ms: int
    """Proof made → the requester's node holds its notice (signing, gossip)."""
    verify_ms: int
    """The back-end's verify call, on the requester."""
    other_ms: int

    def part(self, name: str) -> int:
        value: int = getattr(self, name)
        return value


@dataclass
class _Timeline:
    """What the two nodes saw of the bench's asks (epoch ms of the nodes' clock)."""

    assigned: dict[bytes, tuple[int, int]]
    """ask → (when the prover's node said Assigned, the attempt's window end)."""
    events: dict[tuple[bytes, str], tuple[int, dict[str, object]]]
    """(ask, requester event kind) → (when, detail); the first of each kind."""


def _watch_prover(node: Node, timeline: _Timeline, skew_ms: int) -> None:
    me = node.key.public_key

    async def hook(market: bytes, effect: fx.Effect) -> None:
        if isinstance(effect, fx.Assigned) and effect.prover == me:
            window_end = effect.deadline - skew_ms - effect.proof_time
            timeline.assigned.setdefault(effect.ask, (node.clock(), window_end))

    node.hooks.insert(0, hook)  # before the role's: stamped before any work starts


async def _watch_requester(client: Client, timeline: _Timeline) -> None:
    async for event in client.events():
        key = (event.ask, event.kind)
        if key not in timeline.events:
            timeline.events[key] = (client.node.clock(), dict(event.detail))


async def _event(timeline: _Timeline, ask: bytes, kind: str) -> tuple[int, dict[str, object]]:
    with trio.move_on_after(5):
        while (ask, kind) not in timeline.events:
            await trio.sleep(0.01)
    found = timeline.events.get((ask, kind))
    if found is None:
        raise MarketBenchError(f"ask {ask.hex()[:16]}: no {kind!r} event at the requester")
    return found


async def _one_ask(
    client: Client, prover: ProverRole, timeline: _Timeline, inputs: bytes
) -> MarketSample:
    placed = client.node.clock()
    ask = await client.place_ask(
        inputs, max_price=MAX_PRICE, max_proof_time=PROOF_TIME_MS, prefer="cost"
    )
    await client.wait(ask, timeout=ASK_TIMEOUT_S)  # RequestFailed: no proof
    verified_at, verified = await _event(timeline, ask, "verified")
    delivered_at, _ = await _event(timeline, ask, "delivered")
    if ask not in timeline.assigned:
        raise MarketBenchError(f"ask {ask.hex()[:16]}: the prover's node never said Assigned")
    assigned_at, window_end = timeline.assigned[ask]
    made = [t for t in prover.stats.prove_times if t.ask == ask]
    if not made:
        raise MarketBenchError(f"ask {ask.hex()[:16]}: the prover kept no prove time")
    prove = made[-1]
    verify_ms = verified.get("verify_ms")
    if not isinstance(verify_ms, int):
        raise MarketBenchError(f"ask {ask.hex()[:16]}: the requester told no verify time")
    total = verified_at - placed
    parts = {
        "commit_window_ms": window_end - placed,
        "settle_ms": assigned_at - window_end,
        "before_prove_ms": prove.started - assigned_at,
        "prove_ms": prove.ms,
        "delivery_ms": delivered_at - (prove.started + prove.ms),
        "verify_ms": verify_ms,
    }
    return MarketSample(total_ms=total, other_ms=total - sum(parts.values()), **parts)


async def market_samples(
    market: Market, inputs: Sequence[bytes], samples: int, *, data_dir: Path | None = None
) -> tuple[int, list[MarketSample]]:
    """(the first ask's total ms, `samples` more asks) through a prover node and a
    requester node on `market`; inputs are taken in turn. MarketBenchError, or the
    SDK's RequestFailed, if an ask does not end with a verified proof."""
    if samples < 1 or not inputs:
        raise ValueError("at least one sample and one input are needed")
    with tempfile.TemporaryDirectory(prefix="p2p-market-bench-") as tmp:
        base = Path(tmp) if data_dir is None else data_dir
        timeline = _Timeline({}, {})
        config = NodeConfig(key_file=Path("<bench>"), data_dir=base / "prover", markets=(market,))
        node = Node(config, devnet_key("bench-prover"), prover=True)
        plan = RolePlan(prover=prover_plan(market, price=PRICE, proof_time=PROOF_TIME_MS))
        async with trio.open_nursery() as nursery:
            _watch_prover(node, timeline, market.skew_ms)
            await nursery.start(node.run)
            roles = await start_roles(node, plan, nursery)
            assert roles.prover is not None and node.gossip is not None
            async with open_client(
                [node.gossip.addr],
                market,
                key=devnet_key("bench-requester"),
                data_dir=base / "requester",
            ) as client:
                nursery.start_soon(_watch_requester, client, timeline)
                await client.wait_for_provers(timeout=DISCOVER_S, max_price=MAX_PRICE)
                first = await _one_ask(client, roles.prover, timeline, inputs[0])
                out = []
                for i in range(1, samples + 1):
                    chosen = inputs[i % len(inputs)]
                    out.append(await _one_ask(client, roles.prover, timeline, chosen))
            nursery.cancel_scope.cancel()
    return first.total_ms, out
