"""A speed-up of the simulator changes nothing a run decides: for fixed seeds, the
outcome (report, every node's state hash, each ask's record, the counters) is the
one recorded on the simulator before its speed-ups (issue 15), in
tests/dst/outcomes/pinned.json.

Figures added to the report or to the network's counters since (new keys) are not
in the recording and are not compared; every recorded figure must still be there,
equal. To re-record after a deliberate change of behaviour (never for a speed-up):
    PYTHONPATH=. python -c 'from tests.dst.test_outcomes_pinned import record; record()'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.dst.outcome import CASES, outcome

PINNED = Path(__file__).parent / "outcomes" / "pinned.json"


def _subset(now: dict[str, Any], then: dict[str, Any]) -> dict[str, Any]:
    """`now`'s entries for the keys `then` has (a missing one shows as missing)."""
    return {k: now.get(k, "<missing>") for k in then}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_seed_decides_what_it_decided_before_the_speed_ups(case: str) -> None:
    then = json.loads(PINNED.read_text())[case]
    scenario, seed = CASES[case]
    now = outcome(scenario, seed)
    assert _subset(now["report"], then["report"]) == then["report"]
    assert _subset(now["net_stats"], then["net_stats"]) == then["net_stats"]
    for key in ("state_hashes", "asks", "sim_stats", "events"):
        assert now[key] == then[key], key


def record() -> None:
    out = {name: outcome(sc, seed) for name, (sc, seed) in CASES.items()}
    PINNED.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
