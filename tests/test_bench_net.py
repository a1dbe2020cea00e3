"""`p2p-market bench net` runs on a small size and prints its fields (issue 15: "a
benchmark is a command, not a timed test"). Three real node processes, one
publisher, one short step per mode. Only shape and sense are checked, never speed:
whether a step passes depends on the machine, so the rates may be None, but when a
figure is there it must add up. What must hold whatever the machine: the unbatched run sends exactly
one envelope per frame where the batched one, at the same rate, shares frames, and
bad input gets one line and exit 2."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.processes import cli

TOP = (
    "batched_orders_per_s", "unbatched_orders_per_s", "batching_gain", "p50_ms", "p99_ms",
    "cpu_ms_per_frame_per_node", "envelopes_per_frame", "load_avg_before", "steps",
)  # fmt: skip
ROW = (
    "rate", "achieved_rate", "orders", "delivered", "passed", "p50_ms", "p99_ms",
    "frames_per_s", "envelopes_per_frame", "cpu_ms_per_frame_per_node",
    "cpu_ms_per_order_per_node", "machine_busy_pct", "bound_by", "batching",
    "nodes_cpu_pct_while_sending", "machine_busy_pct_while_sending", "quiet_wait_s",
)  # fmt: skip
BOUNDS = (None, "cpu", "cpu_shared", "publisher", "frame_budget", "latency")


@pytest.fixture(scope="module")
def result() -> dict[str, Any]:
    # One publisher at 16 bids/s for 2 s: well past its frame budget (2 frames/s,
    # burst 4), so that batching has something to batch and its absence shows.
    args = ("--nodes", "3", "--publishers", "1", "--step-s", "2", "--start-rate", "16")
    done = cli("bench", "net", *args, "--max-rate", "16", "--bisect", "0", "--json", timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


def test_prints_every_field(result: dict[str, Any]) -> None:
    for key in TOP:
        assert key in result, key
    assert result["nodes"] == 3 and result["publishers"] == 1
    assert result["targets"] == {"batching_gain": 10, "p99_ms": 500}
    modes = {row["batching"] for row in result["steps"]}
    assert modes == {True, False}
    for row in result["steps"]:
        for key in ROW:
            assert key in row, key
        assert 0.0 <= row["delivered"] <= 1.0
        assert row["orders"] >= 1
        assert row["bound_by"] in BOUNDS
        if row["p50_ms"] is not None:
            assert 0 <= row["p50_ms"] <= row["p99_ms"]
        assert 0.0 <= row["quiet_wait_s"] <= 20.5


def test_the_figures_add_up(result: dict[str, Any]) -> None:
    rows = result["steps"]
    passed = {mode: [r["rate"] for r in rows if r["batching"] is mode and r["passed"]]
              for mode in (True, False)}  # fmt: skip
    if result["batched_orders_per_s"] is not None:
        assert result["batched_orders_per_s"] in passed[True]
        latency = [r for r in rows if r.get("latency_step")]
        assert len(latency) == 1
        assert latency[0]["rate"] == pytest.approx(result["batched_orders_per_s"] / 2, abs=0.1)
        assert result["p99_ms"] == latency[0]["p99_ms"]
    if result["unbatched_orders_per_s"] is not None:
        assert result["unbatched_orders_per_s"] in passed[False]
    if result["batching_gain"] is not None:
        gain = result["batched_orders_per_s"] / result["unbatched_orders_per_s"]
        assert result["batching_gain"] == pytest.approx(gain, abs=0.01)


def test_without_batching_every_frame_holds_one_envelope(result: dict[str, Any]) -> None:
    steps = result["steps"]
    unbatched = [r for r in steps if not r["batching"]]
    assert unbatched
    for row in unbatched:
        assert row["envelopes_per_frame"] == 1.0, row
    # ...while the same rate, batched, shares frames (the situation is there)
    (batched,) = [r for r in steps if r["batching"] and r["rate"] == 16]
    assert batched["envelopes_per_frame"] > 1.5, batched


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--nodes", "1"), "--nodes must be between 2 and 32"),
        (("--nodes", "3", "--publishers", "4"), "--publishers must be between 1 and --nodes"),
        (("--start-rate", "0"), "--start-rate must be positive"),
        (("--bisect", "-1"), "--bisect must be between 0 and 10"),
        (("--frames-per-second", "0"), "--frames-per-second must be between 0.1 and 1000"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: tuple[str, ...], message: str) -> None:
    done = cli("bench", "net", *args, timeout=60)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
