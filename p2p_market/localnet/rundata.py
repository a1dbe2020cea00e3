"""What one `p2p-market simulate` run gathers as it goes (RunData): run.py fills it,
progress.py shows it live and report.py writes the report from it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2p_market.core.envelope import market_id
from p2p_market.localnet.checks import Agreement, NodeFinal
from p2p_market.localnet.collect import AskBook, ProveTimes, Sample
from p2p_market.localnet.launcher import NodeProcess
from p2p_market.localnet.scenario import Scenario


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class RunData:
    """Everything the report is made of."""

    scenario: Scenario
    run_dir: Path
    nodes: list[NodeProcess]
    t0_ms: int
    asks: AskBook = field(default_factory=AskBook)
    samples: list[Sample] = field(default_factory=list)
    prove_times: ProveTimes = field(default_factory=ProveTimes)
    faults: list[dict[str, Any]] = field(default_factory=list)
    finals: list[NodeFinal] = field(default_factory=list)
    agreement: Agreement | None = None
    agree_attempts: int = 0
    final_stats: dict[str, dict[str, int]] = field(default_factory=dict)
    formed_ms: int | None = None
    start_ms: int | None = None
    """The workload's origin (wall ms)."""
    end_ms: int | None = None
    settled_ms: int | None = None
    agreed_ms: int | None = None
    """When the final comparison found every honest node's state_hash equal (or the
    differences explained and stable); None if it never did."""
    stopped_ms: int | None = None
    healed_ms: int | None = None
    """When the last fault ended (a restart, a thaw, a rejoin, a healed partition)."""
    caught_up_ms: int | None = None
    """When every node first held the history of every ask placed before the last
    partition or isolation healed (catchup.py); None if not before the checks."""
    catch_up: dict[str, Any] | None = None
    """The catch-up watch's last finding: asks watched, and the time or who lacked what."""
    switch: dict[str, Any] | None = None
    """The WAN switch's counters at the end (frames, drops by cause); None on loopback."""
    phase: str = "starting"
    error: str | None = None
    interrupted: bool = False

    @property
    def market(self) -> str:
        return market_id(self.scenario.market).hex()

    def elapsed(self) -> float:
        return (wall_ms() - self.t0_ms) / 1000
