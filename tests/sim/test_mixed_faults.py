"""Every fault at once, over many seeds: the CI gate of the simulator.

200 seeds of the `mixed-faults` preset with 50 nodes (20 virtual seconds of asks
and faults, then 36 of settling each). Seeds are independent, so they run in two
worker processes; each report is a pure function of its seed either way.
`P2P_MARKET_DST_SEEDS=A..B` runs another range (e.g. a long hunt before a release).

Known, until the incremental fold is fixed (settlement.py, being rewritten): the
kept fold sometimes differs from the fold from scratch (tests/core/
test_fold_findings.py), and a node can then end with a wrong view of an ask, which
the agreement check reports as a divergent ask (seed 34 of the 200, since the
withholder's late commits joined the preset). A failing seed passes this gate only
if divergence is its only failure and `--check-fold` finds, for each divergent ask
it names, a node whose kept fold of that ask differs from the fold from scratch.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ProcessPoolExecutor

from p2p_market.sim import SCENARIOS, Report, simulate
from p2p_market.sim.cli import parse_seeds, replay_command
from p2p_market.sim.run import Options

SEEDS = parse_seeds(os.environ.get("P2P_MARKET_DST_SEEDS", "1..200"))
WORKERS = max(1, min(2, os.cpu_count() or 1))


def run_seed(seed: int) -> Report:
    return simulate(SCENARIOS["mixed-faults"], seed)


def explained_by_the_fold_bug(r: Report) -> bool:
    """Divergence is its only failure, and the kept fold of every divergent ask it
    names differs from the fold from scratch on some node (see the module's doc)."""
    if not all(re.fullmatch(r"\d+ divergent asks between honest nodes", f) for f in r.failures):
        return False
    named = re.findall(r"divergent ask ([0-9a-f]{12})", " ".join(r.examples))
    checked = simulate(SCENARIOS["mixed-faults"], r.seed, Options(check_fold=True))
    found = " ".join(checked.fold_examples)
    return bool(named) and all(f"runs {a}" in found or f"attempts {a}/" in found for a in named)


def test_mixed_faults_over_many_seeds() -> None:
    assert SCENARIOS["mixed-faults"].nodes == 50
    with ProcessPoolExecutor(WORKERS) as pool:
        reports = list(pool.map(run_seed, SEEDS, chunksize=4))
    failed = [r for r in reports if not r.ok and not explained_by_the_fold_bug(r)]
    detail = "\n".join(f"{replay_command(r)}  # {'; '.join(r.failures)}" for r in failed)
    assert not failed, f"{len(failed)} of {len(reports)} seeds failed:\n{detail}"
    assert sum(not r.ok for r in reports) <= len(reports) // 50, "the fold bug got worse"
    # the faults did happen, and were survived
    assert sum(r.crashes for r in reports) == 2 * len(reports)
    assert sum(r.reassigned for r in reports) > 0
    assert sum(r.equivocations_seen for r in reports) > 0
    assert sum(r.garbage_sent for r in reports) > 0
    assert sum(r.garbage_forwarded + r.garbage_accepted for r in reports) == 0
    assert sum(r.proven for r in reports) >= sum(r.expected for r in reports) > 0
    # the adversaries acted: commits came out late and moved outcomes thought final,
    # and the no-effect actor's messages changed nothing
    assert sum(r.held_back_released for r in reports) == sum(r.held_back for r in reports) > 0
    assert sum(r.final_outcomes for r in reports) > 0
    assert sum(r.no_effect_sent for r in reports) > 0
    assert sum(r.no_effect_won for r in reports) == 0
