"""`p2p-market bench market`: how many asks a second the real market serves, with
prover and requester roles, as `p2p-market simulate` runs them.

Each step is one whole simulate run (localnet/run.py: real node processes on
127.0.0.1, a relay, provers, requesters whose workloads place asks) at one total ask
rate, on a proof-of-work market with the least work there is, so that proving costs
next to nothing and the market itself (gossip, matching, commits, awards, proofs,
receipts) is what is measured. Rates double from `start_rate`, then bisect. A step
passes when no check of the run fails (every honest node agrees, see
localnet/checks.py) and the p99 of the asks' assignment latency (signed timestamp to
the requester seeing its winners; an ask never assigned counts as infinitely late)
is at most 3 s. `max_asks_per_s` is the highest passing rate.

Per step: asks placed and assigned, assignment p50/p99, whether the checks passed,
the nodes' CPU per ask per node, envelopes per frame and frames a second, and what
bound the step, as simulate's report tells it (`cpu` when the nodes used 85 % of the
cores, `slots` when the provers stood back for want of a free slot in more than 5 %
of the asks, `transport` when the gossip frame budget or outbound queues did, the
report's notes). Speed is reported, never asserted."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import trio
from rich.console import Console

from p2p_market.localnet.report import build_summary, quantile
from p2p_market.localnet.run import Runner
from p2p_market.localnet.rundata import RunData
from p2p_market.localnet.scenario import Scenario
from p2p_market.localnet.scenario_file import parse_scenario

ASSIGN_P99_MS: Final = 3_000
REQUESTERS: Final = 2


@dataclass(frozen=True)
class MarketSettings:
    seconds: float = 20.0
    """Workload length of each step."""
    start_rate: float = 0.5
    max_rate: float = 32.0
    bisect: int = 2
    """Between the last rate that passed and the first that failed, two halvings:
    from 16 and 32, the steps 24 and then 20 or 28, so the edge is found to 4
    asks/s (one halving could only ever report 24)."""
    provers: int = 5
    """With the relay and the two requesters, 8 nodes."""
    capacity: int = 32
    """Each prover's slots. A proof of the least work takes milliseconds, so slots
    are held by the market's own timing (a commit holds one from its window until
    the proof, plus the settle lag): measured, 3 provers of 8 slots bound the
    market at 8 asks/s (16 asks/s: p99 8.3 s, p50 5.3 s; with 32 slots 1.4 s), which
    is the provers' capacity, not the market. A step whose provers ran out of
    slots says so (`bound_by` "slots")."""
    frames_per_second: float = 2.0
    """Every node's frame budget (the node default)."""

    def check(self) -> None:
        if not 4 <= self.seconds <= 600:
            raise ValueError("--seconds must be between 4 and 600")
        if not 0 < self.start_rate <= self.max_rate:
            raise ValueError("--start-rate must be positive and at most --max-rate")
        if not 1 <= self.provers <= 16:
            raise ValueError("--provers must be between 1 and 16")
        if not 1 <= self.capacity <= 1024:
            raise ValueError("--capacity must be between 1 and 1024")
        if not 0 <= self.bisect <= 10:
            raise ValueError("--bisect must be between 0 and 10")
        if not 0.1 <= self.frames_per_second <= 1000:
            raise ValueError("--frames-per-second must be between 0.1 and 1000")


def scenario(rate: float, settings: MarketSettings) -> Scenario:
    """A relay, `provers` provers and two requesters placing `rate` asks a second in
    all; a pow market of minimal work, 1 s commit window."""
    provers = [
        {"name": f"prover-{i + 1}", "role": "prover", "price": 4 + i, "proof_time": 3000,
         "capacity": settings.capacity}
        for i in range(settings.provers)
    ]  # fmt: skip
    data: dict[str, Any] = {
        "run": {
            "name": "bench-market",
            "seed": 15,
            "duration_s": settings.seconds,
            "settle_s": 15,
            "sync_every_s": 5.0,
            "frames_per_second": settings.frames_per_second,
        },
        "market": {
            "proof_system": "pow",
            "difficulty": 1,
            "commit_window_ms": 1000,
            "stage_ms": 300,
            "skew_ms": 500,
        },
        "workload": {
            "rate": rate / REQUESTERS,
            "max_price": [50, 50],
            "max_proof_time": [8000, 8000],
            "time_share": 0.0,
            "replicas": {"1": 1.0},
            "confidential_share": 0.0,
            "ttl_ms": 20000,
            "work": [1, 1],
        },
        "nodes": [
            {"name": "relay-1", "role": "relay"},
            *provers,
            *({"name": f"requester-{i + 1}", "role": "requester"} for i in range(REQUESTERS)),
        ],
    }
    return parse_scenario(data, Path(tempfile.gettempdir()) / "bench-market.toml")


def run_step(rate: float, settings: MarketSettings, workdir: Path) -> dict[str, Any]:
    """One simulate run at `rate` asks a second; its row."""
    sc = scenario(rate, settings)
    run_dir = workdir / f"rate-{rate:g}"
    run_dir.mkdir(parents=True, exist_ok=True)

    async def main() -> Any:
        return await Runner(sc, run_dir, Console(quiet=True)).run()

    data = trio.run(main)
    if data.interrupted:  # the run stopped its nodes and says so; the benchmark ends
        raise KeyboardInterrupt
    summary = build_summary(data)
    tracks = list(data.asks.asks.values())
    late = float("inf")
    latencies = [float(a.assigned_t - a.ts) if a.assigned_t is not None else late for a in tracks]
    p50, p99 = quantile(latencies, 0.5), quantile(latencies, 0.99)
    nodes = len(data.nodes)
    cpu_ms = _cpu_ms(data)
    placed = len(tracks)
    checks_ok = bool(summary["checks"]["ok"]) and data.error is None
    passed = checks_ok and placed > 0 and p99 is not None and p99 <= ASSIGN_P99_MS
    if summary["cpu_bound"]:
        bound: str | None = "cpu"
    elif summary["slots_bound"]:
        bound = "slots"
    elif summary["transport_bound"]:
        bound = "transport"
    else:
        bound = None
    return {
        "rate": rate,
        "placed": placed,
        "assigned": sum(1 for a in tracks if a.assigned_t is not None),
        "proven": summary["asks"]["proven"],
        "assign_p50_ms": None if p50 is None or p50 == late else p50,
        "assign_p99_ms": None if p99 is None or p99 == late else p99,
        "checks_ok": checks_ok,
        "check_failures": list(summary["checks"]["failures"])[:5],
        "error": data.error,
        "passed": passed,
        "cpu_ms_per_ask_per_node": round(cpu_ms / placed / nodes, 2) if placed else None,
        "nodes_cpu_percent_of_one_core": summary["cpu"]["mean_total_percent"],
        "envelopes_per_frame": summary["gossip"]["envelopes_per_frame"],
        "frames_per_s": summary["gossip"]["frames_per_s_mean"],
        "bound_by": bound,
        "slot_waits": summary["slot_waits"],
        "bound_notes": summary["bound_notes"],
        "fold_per_node": _fold_per_node(data),
    }


def _fold_per_node(data: RunData) -> dict[str, float]:
    """Each fold count (`MarketState.fold_stats`: refolds, conflicts, ...) averaged
    over the nodes that answered the final check: a node rebuilding its fold from
    scratch often pays for it in CPU, which is what tips a step over."""
    folds = [f.check["fold"] for f in data.finals if f.check and "fold" in f.check]
    if not folds:
        return {}
    names = sorted({name for fold in folds for name in fold})
    return {name: round(sum(f.get(name, 0) for f in folds) / len(folds), 1) for name in names}


def _cpu_ms(data: RunData) -> float:
    """The nodes' CPU (ms, all nodes) from the workload's start until the run settled
    (every ask placed had its time to finish): simulate's samples, each the percent
    of one core since the node's previous sample."""
    if data.start_ms is None:
        return 0.0
    lo = (data.start_ms - data.t0_ms) / 1000
    hi = ((data.settled_ms or data.end_ms or data.start_ms) - data.t0_ms) / 1000
    last: dict[str, float] = {}
    total = 0.0
    for sample in data.samples:
        before = last.get(sample.node)
        last[sample.node] = sample.t
        if before is not None and sample.up and lo < sample.t <= hi:
            total += sample.cpu / 100 * (sample.t - before) * 1000
    return total


def market_bench(
    settings: MarketSettings, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    settings.check()
    say = progress or (lambda _s: None)
    started = time.time()
    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="bench-market-"))
    rows: list[dict[str, Any]] = []

    def step(rate: float) -> dict[str, Any]:
        row = run_step(rate, settings, workdir)
        rows.append(row)
        ok = "pass" if row["passed"] else "FAIL"
        say(
            f"{rate:g} asks/s: {ok}, {row['assigned']}/{row['placed']} assigned, "
            f"p99 {row['assign_p99_ms']} ms, checks {'ok' if row['checks_ok'] else 'FAILED'}, "
            f"{row['envelopes_per_frame']} env/frame, bound_by {row['bound_by']}"
        )
        return row

    try:
        best: dict[str, Any] | None = None
        failed: float | None = None
        rate = settings.start_rate
        while rate <= settings.max_rate:
            if not step(rate)["passed"]:
                failed = rate
                break
            best = {"rate": rate}
            rate *= 2
        low = best["rate"] if best else 0.0
        for _ in range(settings.bisect if failed is not None else 0):
            assert failed is not None
            mid = round((low + failed) / 2, 2)
            if mid - low < 0.1:
                break
            if step(mid)["passed"]:
                best, low = {"rate": mid}, mid
            else:
                failed = mid
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    top = next((r for r in rows if best and r["rate"] == best["rate"] and r["passed"]), None)
    return {
        "bench": "market",
        "seconds": settings.seconds,
        "provers": settings.provers,
        "requesters": REQUESTERS,
        "max_asks_per_s": best["rate"] if best else None,
        "cpu_ms_per_ask_per_node": top["cpu_ms_per_ask_per_node"] if top else None,
        "targets": {"assign_p99_ms": ASSIGN_P99_MS, "checks": "all pass"},
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "wall_s": round(time.time() - started, 1),
        "steps": rows,
    }
