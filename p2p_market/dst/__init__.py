"""The deterministic simulator: many core nodes in one process, a simulated gossip
network, virtual time and seeded faults. Everything is a pure function of the
scenario and the seed; the only clock reads are run.py's wall-clock measurements
(of the event loop, for the sim_per_wall figure, and of the --check-fold
comparisons, for their cost), which nothing in the simulation depends on.

    from p2p_market.dst import SCENARIOS, simulate
    report = simulate(SCENARIOS["mixed-faults"], seed=7)
"""

from p2p_market.dst.run import Report, simulate
from p2p_market.dst.scenarios import SCENARIOS, Scenario

__all__ = ["SCENARIOS", "Report", "Scenario", "simulate"]
