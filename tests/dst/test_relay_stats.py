"""Relays that skip the work whose only use is a statistic (Scenario.relay_observe
off, dst/relay.py) run the same simulation, message for message: every node ends
in the same state and the report is the same but for the reorgs and the finality
watch's figures, which only the nodes with a role feed then."""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

import pytest

from p2p_market.dst import SCENARIOS, Report
from p2p_market.dst.node import RELAY
from p2p_market.dst.relay import QuietRelay
from p2p_market.dst.run import WALL_FIELDS, simulate_world
from p2p_market.dst.scenarios import Scenario

CASES = {
    "mixed-faults": (replace(SCENARIOS["mixed-faults"], nodes=20, seconds=30), 5),
    "no-tiebreak": (
        replace(SCENARIOS["calm"], nodes=30, seconds=8, asks_per_s=1.0, planted_bug="no-tiebreak"),
        2,
    ),
}


FINALITY = ("final_outcomes", "final_outcomes_changed", "final_asks_changed")


def _stable(r: Report) -> dict[str, Any]:
    d = asdict(r)
    for name in (*WALL_FIELDS, "reorgs", *FINALITY):
        del d[name]
    return d


@pytest.mark.parametrize("case", sorted(CASES))
def test_quiet_relays_leave_the_run_as_it_was(case: str) -> None:
    sc, seed = CASES[case]
    world, counted = simulate_world(sc, seed)
    quiet_sc: Scenario = replace(sc, relay_observe=False)
    quiet_world, quiet = simulate_world(quiet_sc, seed)
    relays = [n for n in quiet_world.nodes if n.role == RELAY]
    assert relays and all(isinstance(n.state, QuietRelay) for n in relays)
    assert not any(isinstance(n.state, QuietRelay) for n in world.nodes)
    assert [n.state.state_hash() for n in quiet_world.nodes] == [
        n.state.state_hash() for n in world.nodes
    ]
    assert _stable(quiet) == _stable(counted)
    assert all(n.reorgs == 0 for n in relays)
    role_reorgs = sum(n.reorgs for n in world.nodes if n.role != RELAY and n.honest)
    assert quiet.reorgs == role_reorgs <= counted.reorgs
    for name in FINALITY:
        assert getattr(quiet, name) <= getattr(counted, name)
    assert quiet.asks > 0 and counted.ok and quiet.ok
