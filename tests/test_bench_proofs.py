"""`bench proofs` runs on its smallest setting (one case, one ask through a market of
two real nodes, real snarkjs) and reports figures that fit together. Shape and
arithmetic only: speed is for the benchmark itself, never a test's assertion."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from p2p_market.bench.proof_market import SPLIT
from p2p_market.bench.proofs import TARGET_SLACK_MS, proofs_bench
from p2p_market.cli.bench_proofs import print_table
from tests.processes import cli

SAMPLE_KEYS = {"p50", "p99", "n", "samples"}


@pytest.fixture(scope="module")
def result() -> dict[str, Any]:
    return proofs_bench(["groth16"], ["multiplier"], samples=1, bare_samples=2, cli_samples=1)


@pytest.fixture(scope="module")
def row(result: dict[str, Any]) -> dict[str, Any]:
    (only,) = result["rows"]
    assert (only["system"], only["circuit"]) == ("groth16", "multiplier")
    assert isinstance(only, dict)
    return only


def test_the_shape(result: dict[str, Any], row: dict[str, Any]) -> None:
    assert result["bench"] == "proofs"
    assert (result["samples"], result["bare_samples"], result["cli_samples"]) == (1, 2, 1)
    assert result["node"].startswith("v")
    json.dumps(result)  # what --json prints
    for stats, n in (
        (row["bare"]["prove_ms"], 2),
        (row["bare"]["verify_ms"], 2),
        (row["cli"]["prove_ms"], 1),
        (row["cli"]["verify_ms"], 1),
        (row["market_latency"]["total_ms"], 1),
    ):
        assert set(stats) == SAMPLE_KEYS and stats["n"] == n == len(stats["samples"])
        assert all(type(v) is int and v > 0 for v in stats["samples"])
        assert stats["p50"] in stats["samples"] and stats["p99"] in stats["samples"]
    assert set(row["market_latency"]["split_p50_ms"]) == set(SPLIT)
    assert row["market"] == "multiplier-groth16-devnet-INSECURE"
    assert len(row["market_id"]) == 64


def test_the_market_costs_at_least_the_proof_and_the_protocol_wait(row: dict[str, Any]) -> None:
    bare = row["bare"]
    market = row["market_latency"]["total_ms"]["p50"]
    window, skew, lag = row["commit_window_ms"], row["skew_ms"], row["award_lag_ms"]
    assert (window, skew, lag) == (3000, 2000, 250)  # the devnet descriptor's, the SDK's
    assert market >= bare["prove_ms"]["p50"] + bare["verify_ms"]["p50"]
    assert market >= window + lag == row["protocol_wait_ms"]
    assert row["market_latency"]["first_ask_ms"] >= window + lag
    assert bare["first_prove_ms"] > 0


def test_the_timeline_adds_up_and_follows_the_protocol(row: dict[str, Any]) -> None:
    """One ask: each part is that ask's, so they add up to its total exactly. The
    window is waited out from the ask's signing, and the winner is told no earlier
    than the requester's award, window end + its award lag (market-v1.md §12)."""
    parts = row["market_latency"]["split_p50_ms"]
    total = row["market_latency"]["total_ms"]["p50"]
    assert sum(parts.values()) == total
    assert parts["commit_window_ms"] >= row["commit_window_ms"]
    assert parts["settle_ms"] >= row["award_lag_ms"]
    for name in ("before_prove_ms", "prove_ms", "delivery_ms", "verify_ms"):
        assert parts[name] >= 0, name
    assert parts["prove_ms"] > 0 and parts["verify_ms"] > 0


def test_overhead_and_target_are_derived_from_the_figures(row: dict[str, Any]) -> None:
    bare, market = row["bare"], row["market_latency"]["total_ms"]
    window = row["commit_window_ms"]
    overhead = row["market_overhead_ms"]
    assert overhead["p50"] == market["p50"] - bare["prove_ms"]["p50"] - bare["verify_ms"]["p50"]
    assert overhead["p99"] == market["p99"] - bare["prove_ms"]["p99"] - bare["verify_ms"]["p99"]
    assert row["overhead_vs_commit_window"]["p50"] == pytest.approx(
        overhead["p50"] / window, abs=1e-3
    )
    assert row["target_overhead_p50_ms"] == window + TARGET_SLACK_MS
    assert row["overhead_within_target"] is (overhead["p50"] <= window + TARGET_SLACK_MS)
    wait = row["protocol_wait_ms"]
    assert row["overhead_beyond_protocol_wait_ms"]["p50"] == overhead["p50"] - wait
    split = row["overhead_split_p50_ms"]
    parts = row["market_latency"]["split_p50_ms"]
    assert split["commit_window"] == parts["commit_window_ms"]
    assert split["prove_beyond_bare"] == parts["prove_ms"] - bare["prove_ms"]["p50"]
    assert split["verify_beyond_bare"] == parts["verify_ms"] - bare["verify_ms"]["p50"]
    assert sum(split.values()) == overhead["p50"]  # one ask: exact


def test_the_worker_is_faster_than_a_process_per_call(row: dict[str, Any]) -> None:
    """What the long-lived worker is for: the plain command line starts Node.js and
    loads snarkjs every time. Not a speed target, an order of magnitude (Node.js
    start-up alone is hundreds of milliseconds)."""
    assert row["cli_vs_worker"]["prove"] > 1 and row["cli_vs_worker"]["verify"] > 1


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--system", "stark"], "unknown system 'stark'"),
        (["--circuit", "poseidon"], "unknown circuit 'poseidon'"),
        (["--samples", "0"], "--samples and --bare-samples must be at least 1"),
        (["--cli-samples", "-1"], "--cli-samples must be 0 or more"),
        (["--samples", "many"], "Invalid value for '--samples'"),
    ],
)
def test_bad_arguments_are_one_line_exit_2(args: list[str], says: str) -> None:
    done = cli("bench", "proofs", *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert says in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_no_node_is_one_line_exit_2(tmp_path: Path) -> None:
    """No Node.js on PATH: said before anything starts."""
    path = str(Path(sys.executable).parent)
    done = cli("bench", "proofs", "--json", env={"PATH": path, "P2P_MARKET_NODE": ""})
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "node (Node.js) not found" in lines[0], done.stderr
    assert done.stdout == ""


def test_the_table_shows_each_case_and_the_split(result: dict[str, Any]) -> None:
    console = Console(record=True, width=240)
    print_table(result, console)
    text = console.export_text()
    row = result["rows"][0]
    overhead = row["market_overhead_ms"]
    assert "groth16" in text and "multiplier" in text
    assert f"{overhead['p50']} / {overhead['p99']}" in text
    assert "protocol wait" in text and str(row["protocol_wait_ms"]) in text
