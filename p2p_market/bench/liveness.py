"""Gossip latency between healthy nodes while one peer is frozen (issue 13, finding
2): three gossiping nodes in this process and a fourth in a process of its own
(bench/frozen_peer.py), all meshed; the fourth is frozen with SIGSTOP and its
outbound queues are filled, as a minute of traffic to a cut-off peer fills them.
Then the first node publishes one envelope every `interval_s`, and each envelope's
latency is the time from its publish call to its delivery at the *last* of the two
other healthy nodes (one clock: same process).

Three runs in one invocation, the baseline measured in the same run:

- `healthy`: nobody frozen (what gossip costs here at all);
- `before`: the frozen peer, with the settings before liveness: every frame waits
  up to 2 s on each full peer queue, every time, and no keepalive;
- `after`: the frozen peer, with the defaults: one 0.25 s wait, then the stuck peer
  is skipped; the keepalive (5 s x 3) drops it during the run.

Speed is reported, never asserted: ratios `after`/`before`, `after`/`healthy`."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

import trio
from libp2p.peer.id import ID

from p2p_market.bench.frozen_peer import MID, freeze, peer_process
from p2p_market.core.crypto import devnet_key
from p2p_market.markets.devnet import GENESIS_MS, Actor, default_market
from p2p_market.net.gossip import Gossip, GossipConfig, topic_for
from p2p_market.net.host import connect_all, make_host
from p2p_market.net.keepalive import Keepalive

NOW = GENESIS_MS + 3_600_000
FRAMES_PER_SECOND = 50.0
"""Well above the publish rate, so that batching adds nothing to the latency."""
TOPIC = topic_for(MID)


@dataclass(frozen=True)
class Case:
    name: str
    config: GossipConfig
    frozen: bool
    keepalive: bool


CASES = (
    Case("healthy", GossipConfig(frames_per_second=FRAMES_PER_SECOND), False, True),
    Case(
        "before",
        GossipConfig(
            frames_per_second=FRAMES_PER_SECOND, outbound_wait_s=2.0, skip_stuck_peers=False
        ),
        True,
        False,
    ),
    Case("after", GossipConfig(frames_per_second=FRAMES_PER_SECOND), True, True),
)


def _bid(tag: str, seq: int) -> bytes:
    return Actor(f"liveness-{tag}", default_market()).bid(
        now=NOW, price=100 + seq, proof_time=1_000, seq=seq
    )


def percentile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _fill(sender: Gossip, peer: ID, tag: str) -> int:
    """Publish until the frozen peer's outbound queue has stayed full for a second."""
    full_since: float | None = None
    i = 0
    with trio.fail_after(120):
        while full_since is None or trio.current_time() - full_since < 1.0:
            await sender.publish(MID, _bid(f"{tag}-fill-{i}", 1))
            i += 1
            await trio.sleep(0.002)
            if peer in sender.outbound_full(TOPIC):
                full_since = full_since or trio.current_time()
            else:
                full_since = None
    return i


async def run_case(case: Case, count: int, interval_s: float) -> dict[str, Any]:
    with peer_process(f"bench-{case.name}") as (proc, addr, peer):
        async with trio.open_nursery() as nursery:
            nodes: list[Gossip] = []
            for i in range(3):
                host, listen = make_host(devnet_key(f"liveness-{case.name}-{i}"))
                node = Gossip(host, listen, markets=[MID], config=case.config)
                await nursery.start(node.run)
                nodes.append(node)
            with trio.fail_after(30):
                for a, b in ((0, 1), (0, 2), (1, 2)):
                    assert await connect_all(nodes[a].host, [nodes[b].addr]) == {}
                for node in nodes:
                    assert await connect_all(node.host, [addr]) == {}
                for node in nodes:
                    await node.wait_for_mesh(MID, peer, timeout=20)
            _progress(case.name, "meshed")
            keepalives = [Keepalive(n.host) for n in nodes] if case.keepalive else []
            for keepalive in keepalives:
                await nursery.start(keepalive.run)
            arrived: dict[bytes, list[float]] = {}

            async def receive(node: Gossip) -> None:
                async for delivery in node.deliveries:
                    arrived.setdefault(delivery.raw, []).append(trio.current_time())

            for node in nodes[1:]:
                nursery.start_soon(receive, node)
            filled = 0
            if case.frozen:
                freeze(proc)
                filled = await _fill(nodes[0], peer, case.name)
            _progress(case.name, f"filled with {filled}")
            sender = nodes[0]
            sender.stats.publish_wait_ms_max = 0
            sent: dict[bytes, float] = {}
            started = trio.current_time()
            for i in range(count):
                raw = _bid(f"{case.name}-measured-{i}", 1)
                sent[raw] = trio.current_time()
                await sender.publish(MID, raw)
                await trio.sleep_until(started + (i + 1) * interval_s)
            with trio.move_on_after(60):
                while not all(len(arrived.get(raw, [])) >= 2 for raw in sent):
                    await trio.sleep(0.05)
            latencies = [
                int((max(arrived[raw][:2]) - at) * 1000)
                for raw, at in sent.items()
                if len(arrived.get(raw, [])) >= 2
            ]
            _progress(case.name, f"measured {len(latencies)}")
            nursery.cancel_scope.cancel()
    return {
        "published": count,
        "delivered_to_both": len(latencies),
        "fill_envelopes": filled,
        "p50_ms": percentile(latencies, 0.50) if latencies else None,
        "p99_ms": percentile(latencies, 0.99) if latencies else None,
        "max_ms": max(latencies) if latencies else None,
        "publish_wait_ms_max": sender.stats.publish_wait_ms_max,
        "stuck_skips": sender.stats.stuck_skips,
        "frozen_peer_dropped_by": sum(k.stats.dropped for k in keepalives),
    }


def _progress(case: str, what: str) -> None:
    print(f"liveness bench: {case}: {what}", file=sys.stderr, flush=True)


def _ratio(a: int | None, b: int | None) -> float | None:
    if a is None or b is None:
        return None
    return round(a / max(b, 1), 3)


async def liveness_bench(count: int = 150, interval_s: float = 0.1) -> dict[str, Any]:
    result: dict[str, Any] = {
        "bench": "liveness",
        "healthy_nodes": 3,
        "frozen_nodes": 1,
        "count": count,
        "interval_ms": int(interval_s * 1000),
    }
    for case in CASES:
        result[case.name] = await run_case(case, count, interval_s)
    for key in ("p50_ms", "p99_ms", "max_ms"):
        result[f"after_over_before_{key}"] = _ratio(result["after"][key], result["before"][key])
        result[f"after_over_healthy_{key}"] = _ratio(result["after"][key], result["healthy"][key])
    return result


if __name__ == "__main__":
    print(json.dumps(trio.run(liveness_bench)))
