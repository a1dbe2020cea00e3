"""The simulator's throughput benchmark runs, slice by slice, and stops at its wall
budget with the rate so far (the full 200-node target is run by hand, see bench.py)."""

from __future__ import annotations

from p2p_market.dst.bench import benchmark


def test_a_small_benchmark_reports_each_slice() -> None:
    out = benchmark(nodes=12, seconds=4, asks_per_s=2.0, slice_ms=2_000)
    assert out["complete"] is True and out["sim_seconds"] == 4.0
    assert [at for at, _ in out["sim_per_wall_by_slice"]] == [2.0, 4.0]
    assert out["asks"] > 0 and out["frames_sent"] > 0 and out["sim_per_wall"] > 0
    assert out["cpu_seconds"] > 0 and out["sim_per_cpu"] > 0 and out["peak_rss_mib"] > 10


def test_the_wall_budget_cuts_a_run_short() -> None:
    out = benchmark(nodes=12, seconds=60, asks_per_s=2.0, max_wall_s=0.0, slice_ms=2_000)
    assert out["complete"] is False
    assert out["sim_seconds"] == 2.0  # one slice, then the budget was spent
