"""The core benchmark runs, on small inputs, and reports consistent numbers.

Only shape and arithmetic are checked here: speed is for `make bench`, not tests."""

from __future__ import annotations

import platform

import pytest

from p2p_market.bench.core import core_bench

RATES = ("ingest_per_s", "verify_per_s", "ingest_prover_per_s", "match_per_s", "scan_match_per_s")


@pytest.fixture(scope="module")
def result() -> dict[str, float | int | str]:
    return core_bench(bids=500, orders=200, asks=100, repeats=1)


def test_reports_every_key(result: dict[str, float | int | str]) -> None:
    for key in (*RATES, "ingest_vs_verify", "match_vs_scan", "bids", "orders", "asks"):
        assert key in result
    assert (result["bids"], result["orders"], result["asks"]) == (500, 200, 100)
    assert result["python"] == f"{platform.python_implementation()} {platform.python_version()}"
    note = result["note"]
    assert isinstance(note, str)
    assert "ingest_vs_verify >= 0.7" in note and "match_vs_scan >= 20" in note


def test_rates_are_positive(result: dict[str, float | int | str]) -> None:
    for key in RATES:
        value = result[key]
        assert isinstance(value, float) and value > 0, key


def test_ratios_are_quotients_of_the_rates(result: dict[str, float | int | str]) -> None:
    def num(key: str) -> float:
        value = result[key]
        assert isinstance(value, float)
        return value

    assert num("ingest_vs_verify") == pytest.approx(num("ingest_per_s") / num("verify_per_s"))
    assert num("match_vs_scan") == pytest.approx(num("match_per_s") / num("scan_match_per_s"))


def test_same_seed_same_inputs() -> None:
    a = core_bench(bids=50, orders=20, asks=10, seed=7, repeats=1)
    b = core_bench(bids=50, orders=20, asks=10, seed=7, repeats=1)
    assert a["eligible_fraction"] == b["eligible_fraction"]


def test_rejects_empty_sizes() -> None:
    with pytest.raises(ValueError):
        core_bench(bids=0, orders=20, asks=10)
