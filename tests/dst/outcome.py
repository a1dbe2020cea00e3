"""A run's outcome as plain data, for pinning: what a speed-up of the simulator must
leave byte-identical (tests/dst/test_outcomes_pinned.py).

The outcome of a run is everything it decides, not how long it took: the report
(but its wall-clock fields), every node's state hash at the end, each ask's record
(when it was assigned and proven, in virtual time), and the network's and the
shell's counters. The per-node and per-ask lists are long, so they are pinned as
SHA-256 digests of their canonical JSON; the report is kept whole, so that a
difference shows which figure moved."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace
from typing import Any

from p2p_market.dst import SCENARIOS
from p2p_market.dst.run import WALL_FIELDS, simulate_world
from p2p_market.dst.scenarios import Scenario

CASES: dict[str, tuple[Scenario, int]] = {
    "mixed-faults-20x12-seed5": (replace(SCENARIOS["mixed-faults"], nodes=20, seconds=12), 5),
    "mixed-faults-24x10-seed231": (replace(SCENARIOS["mixed-faults"], nodes=24, seconds=10), 231),
    "calm-40x10-rate4-seed1": (
        replace(SCENARIOS["calm"], nodes=40, seconds=10, asks_per_s=4.0),
        1,
    ),
    "no-tiebreak-30x8-seed2": (
        replace(SCENARIOS["calm"], nodes=30, seconds=8, asks_per_s=1.0, planted_bug="no-tiebreak"),
        2,
    ),
}
"""Small runs (a few seconds each) that between them take every path the speed-ups
touch: relays and full nodes, spam (badly signed envelopes), equivocation, crashes
and replays, partitions, withheld commits, and the planted-bug state classes."""


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def outcome(scenario: Scenario, seed: int) -> dict[str, Any]:
    world, report = simulate_world(scenario, seed)
    rep = asdict(report)
    for name in WALL_FIELDS:
        del rep[name]
    asks = [
        [a.id.hex(), a.requester, a.placed_at, a.assigned_at, a.proven_at, a.expected]
        for a in world.asks.values()
    ]
    return {
        "report": rep,
        "state_hashes": _digest([n.state.state_hash() for n in world.nodes]),
        "asks": _digest(asks),
        "net_stats": asdict(world.net.stats),
        "sim_stats": _digest({**asdict(world.stats), "verdicts": world.stats.verdict_counts()}),
        "events": world.loop.processed,
    }
