"""The deterministic simulator: many core nodes in one process, a simulated gossip
network, virtual time and seeded faults. Everything is a pure function of the
scenario and the seed; the only clock read is run.py's wall-clock measurement
around the event loop (for the sim_per_wall figure), never inside the simulation.

    from p2p_market.sim import SCENARIOS, simulate
    report = simulate(SCENARIOS["mixed-faults"], seed=7)
"""

from p2p_market.sim.run import Report, simulate
from p2p_market.sim.scenarios import SCENARIOS, Scenario

__all__ = ["SCENARIOS", "Report", "Scenario", "simulate"]
