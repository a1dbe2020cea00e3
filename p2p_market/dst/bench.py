"""Simulator throughput: simulated seconds per wall second for a big, calm market.

    python -m p2p_market.dst.bench --nodes 200 --seconds 600 --rate 20 [--max-wall 900]
        [--slice-ms 10000] [--profile [--profile-from S]] [--relay-observe]

A benchmark, not a test. It runs the active phase only (no settle phase, no end
checks) in slices of virtual time and records the wall time of each slice, so a
run cut short by --max-wall still gives the rate so far and how it evolves as the
market's state grows. Besides the wall time it reports the process's CPU time
(`sim_per_cpu`: the figure to compare on a machine shared with other work, where
the wall time also counts the time spent waiting for a core) and its peak
resident memory (`peak_rss_mib`). Its relays skip the work that only feeds
statistics (Scenario.relay_observe, dst/relay.py) unless --relay-observe.
With --profile, cProfile runs around the loop and the functions with the largest
share of the time are listed (self time and cumulative), with the split of the time
between the core (p2p_market/core), the simulator (p2p_market/dst) and the rest
(signing, ...): a library or built-in function's time goes to whoever called it.
The profiler charges every Python call, so the simulator's many small calls look
heavier under it than they are.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import resource
import sys
import time
from dataclasses import replace
from typing import Any

from p2p_market.dst.node import World
from p2p_market.dst.run import build, gc_paused
from p2p_market.dst.scenarios import SCENARIOS

SLICE_MS = 10_000


def benchmark(
    nodes: int = 200,
    seconds: int = 600,
    asks_per_s: float = 20.0,
    seed: int = 1,
    max_wall_s: float | None = None,
    profile: bool = False,
    slice_ms: int = SLICE_MS,
    profile_from_s: float = 0.0,
    relay_observe: bool = False,
) -> dict[str, Any]:
    sc = replace(
        SCENARIOS["calm"],
        name="bench",
        nodes=nodes,
        seconds=seconds,
        asks_per_s=asks_per_s,
        relay_observe=relay_observe,
    )
    world = build(sc, seed)
    prof = cProfile.Profile() if profile else None
    slices: list[tuple[float, float, float]] = []
    t = world.start_ms
    wall0 = time.perf_counter()
    cpu0 = time.process_time()
    profiling = False
    with gc_paused():  # as simulate() runs its loop (run.py)
        while t < world.active_end:
            if prof is not None and not profiling and t - world.start_ms >= profile_from_s * 1_000:
                prof.enable()
                profiling = True
            w = time.perf_counter()
            start = t
            t = min(t + slice_ms, world.active_end)
            world.loop.run_until(t)
            slices.append(
                ((t - world.start_ms) / 1_000, (t - start) / 1_000, time.perf_counter() - w)
            )
            if max_wall_s is not None and time.perf_counter() - wall0 > max_wall_s:
                break
        if prof is not None:
            prof.disable()
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    sim = (t - world.start_ms) / 1_000
    net = world.net.stats
    out: dict[str, Any] = {
        "nodes": nodes,
        "asks_per_s": asks_per_s,
        "seed": seed,
        "relay_observe": relay_observe,
        "planned_seconds": seconds,
        "sim_seconds": sim,
        "wall_seconds": round(wall, 4),
        "sim_per_wall": round(sim / wall, 3) if wall else 0.0,
        "cpu_seconds": round(cpu, 4),
        "sim_per_cpu": round(sim / cpu, 3) if cpu else 0.0,
        "peak_rss_mib": peak_rss_mib(),
        "complete": t >= world.active_end,
        "asks": len(world.asks),
        "assigned": sum(r.assigned_at is not None for r in world.asks.values()),
        "proven": sum(r.proven_at is not None for r in world.asks.values()),
        "frames_sent": net.sent,
        "frames_suppressed": net.suppressed,
        "frames_delivered": net.delivered,
        "events": world.loop.processed,
        "signature_checks": world.validator.signature_checks,
        "signatures_verified": world.validator.signatures_verified,
        "fold": _fold_totals(world),
        "sim_per_wall_by_slice": [
            (at, round(span / dt, 3) if dt else None) for at, span, dt in slices
        ],
    }
    if prof is not None:
        out["profile"] = _top(prof, wall)
    return out


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (the world, its caches, the
    Python heap), in MiB: ru_maxrss is in KiB on Linux, in bytes on macOS."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1 << 20 if sys.platform == "darwin" else 1 << 10), 1)


def _fold_totals(world: World) -> dict[str, int]:
    """Summed over the nodes: how the kept settlement folds coped (see
    MarketState.fold_stats), to tell a slow run's core cost apart."""
    total: dict[str, int] = {}
    for node in world.nodes:
        for name, n in node.state.fold_stats().items():
            total[name] = total.get(name, 0) + n
    return total


def _top(prof: cProfile.Profile, wall: float, n: int = 25) -> dict[str, list[str]]:
    stats = pstats.Stats(prof)
    rows = [
        (tt, ct, nc, f"{f.split('p2p_market/')[-1]}:{line}({fn})")
        for (f, line, fn), (_cc, nc, tt, ct, _callers) in stats.stats.items()  # type: ignore[attr-defined]
    ]
    total = sum(r[0] for r in rows) or 1.0

    def fmt(r: tuple[float, float, int, str]) -> str:
        return f"{r[0] / total:6.1%} self {r[1] / total:6.1%} cum {r[2]:>10} calls  {r[3]}"

    split = _split(stats.stats)  # type: ignore[attr-defined]
    return {
        "split": [f"{k} {v / total:6.1%}" for k, v in sorted(split.items(), key=lambda kv: -kv[1])],
        "by_self_time": [fmt(r) for r in sorted(rows, key=lambda r: -r[0])[:n]],
        "by_cumulative": [fmt(r) for r in sorted(rows, key=lambda r: -r[1])[:n]],
    }


Func = tuple[str, int, str]


def _owner(func: Func) -> str | None:
    path = func[0].replace("\\", "/")
    for part in ("core", "dst"):
        if f"p2p_market/{part}/" in path:
            return part
    return "other" if "p2p_market/" in path else None


def _split(entries: dict[Func, tuple[Any, ...]]) -> dict[str, float]:
    """Self time by owner: "core", "dst" (the simulator) or "other"; a function outside p2p_market
    (the standard library, a built-in) is charged to its callers, in proportion to
    the time it spent for each."""
    memo: dict[Func, dict[str, float]] = {}

    def shares(func: Func) -> dict[str, float]:
        owner = _owner(func)
        if owner is not None:
            return {owner: 1.0}
        if func in memo:
            return memo[func]
        memo[func] = {"other": 1.0}  # while being computed: a cycle of callers ends here
        callers = entries[func][4] if func in entries else {}
        spent = sum(v[2] for v in callers.values())
        out: dict[str, float] = {}
        for caller, v in callers.items():
            if spent <= 0:
                break
            for k, x in shares(caller).items():
                out[k] = out.get(k, 0.0) + v[2] / spent * x
        memo[func] = out or {"other": 1.0}
        return memo[func]

    totals: dict[str, float] = {}
    for func, entry in entries.items():
        for k, x in shares(func).items():
            totals[k] = totals.get(k, 0.0) + entry[2] * x
    return totals


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--rate", type=float, default=20.0, help="asks per simulated second")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-wall", type=float, default=None, help="stop after this many s")
    ap.add_argument("--slice-ms", type=int, default=SLICE_MS, help="virtual ms per slice")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument(
        "--profile-from", type=float, default=0.0, help="simulated s before profiling starts"
    )
    ap.add_argument(
        "--relay-observe",
        action="store_true",
        help="relays count their reorgs, as the DST's runs do (slower; see dst/relay.py)",
    )
    a = ap.parse_args(argv)
    result = benchmark(
        a.nodes,
        a.seconds,
        a.rate,
        a.seed,
        a.max_wall,
        a.profile,
        a.slice_ms,
        a.profile_from,
        a.relay_observe,
    )
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
