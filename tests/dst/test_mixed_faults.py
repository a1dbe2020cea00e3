"""Every fault at once, over many seeds: the CI gate of the simulator.

100 seeds of the `mixed-faults` preset with 50 nodes (20 virtual seconds of asks
and faults, then 36 of settling each; about 3 s of CPU a seed). Seeds are
independent, so they run in two worker processes; each report is a pure function of
its seed either way. `P2P_MARKET_DST_SEEDS=A..B` runs another range: a change to the
core or the sync is closed with `P2P_MARKET_DST_SEEDS=1..1000` (about half an hour
here), CI keeps to the first 100 so that the whole suite stays near 20 minutes.

Every seed runs with `--check-fold` (each node's kept settlement fold against the
fold from scratch, at checkpoints and at the end) and `--require-finality` (no
outcome final on a node when a withheld commit came out may change).
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

from p2p_market.cli.dst import parse_seeds, replay_command
from p2p_market.dst import SCENARIOS, Report, simulate
from p2p_market.dst.run import Options

SEEDS = parse_seeds(os.environ.get("P2P_MARKET_DST_SEEDS", "1..100"))
WORKERS = max(1, min(2, os.cpu_count() or 1))


def run_seed(seed: int) -> Report:
    return simulate(
        SCENARIOS["mixed-faults"], seed, Options(check_fold=True, require_finality=True)
    )


def test_mixed_faults_over_many_seeds() -> None:
    assert SCENARIOS["mixed-faults"].nodes == 50
    with ProcessPoolExecutor(WORKERS) as pool:
        reports = list(pool.map(run_seed, SEEDS, chunksize=4))
    failed = [r for r in reports if not r.ok]
    detail = "\n".join(f"{replay_command(r)}  # {'; '.join(r.failures)}" for r in failed)
    assert not failed, f"{len(failed)} of {len(reports)} seeds failed:\n{detail}"
    assert all(r.check_fold and r.fold_differences == 0 for r in reports)
    # the faults did happen, and were survived
    assert sum(r.crashes for r in reports) == 2 * len(reports)
    assert sum(r.reassigned for r in reports) > 0
    assert sum(r.equivocations_seen for r in reports) > 0
    assert sum(r.garbage_sent for r in reports) > 0
    assert sum(r.garbage_forwarded + r.garbage_accepted for r in reports) == 0
    assert sum(r.proven for r in reports) >= sum(r.expected for r in reports) > 0
    # the adversaries acted: commits came out late and moved no final outcome, and
    # the no-effect actor's messages changed nothing
    assert sum(r.held_back_released for r in reports) == sum(r.held_back for r in reports) > 0
    assert sum(r.final_outcomes for r in reports) > 0
    assert sum(r.final_outcomes_changed for r in reports) == 0
    assert sum(r.no_effect_sent for r in reports) > 0
    assert sum(r.no_effect_won for r in reports) == 0
