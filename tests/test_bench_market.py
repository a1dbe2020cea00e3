"""`p2p-market bench market` runs on a small size and prints its fields: one step,
one prover, a few seconds of asks (a whole simulate run of real node processes).
Only shape and sense are checked, never speed: whether the step passes depends on
the machine, so `max_asks_per_s` may be None, but the row must add up. The prover
has one slot for 2 asks a second, each of which holds it for about two seconds:
the step must say its capacity bound it."""

from __future__ import annotations

import json

import pytest

from tests.processes import cli

ROW = (
    "rate", "placed", "assigned", "proven", "assign_p50_ms", "assign_p99_ms", "checks_ok",
    "passed", "cpu_ms_per_ask_per_node", "envelopes_per_frame", "frames_per_s", "bound_by",
    "slot_waits", "check_failures", "fold_per_node",
)  # fmt: skip


def test_one_small_step_prints_every_field() -> None:
    args = ("--seconds", "6", "--start-rate", "2", "--max-rate", "2", "--bisect", "0")
    done = cli("bench", "market", *args, "--provers", "1", "--capacity", "1", "--json", timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    for key in ("max_asks_per_s", "cpu_ms_per_ask_per_node", "targets", "load_avg_before"):
        assert key in result, key
    (row,) = result["steps"]
    for key in ROW:
        assert key in row, key
    assert row["rate"] == 2.0 and row["placed"] >= 1
    assert isinstance(row["check_failures"], list)
    assert row["fold_per_node"]["refolds"] >= 1  # every node builds its fold at least once
    assert not (row["check_failures"] and row["checks_ok"])
    assert 0 <= row["assigned"] <= row["placed"]
    assert row["slot_waits"] > 0.05 * row["placed"]
    assert row["bound_by"] == "slots" or (row["bound_by"] == "cpu" and row["passed"] is False)
    if row["assign_p50_ms"] is not None and row["assign_p99_ms"] is not None:
        assert 0 <= row["assign_p50_ms"] <= row["assign_p99_ms"]
    if row["passed"]:
        assert row["checks_ok"] and row["assign_p99_ms"] <= 3000
        assert result["max_asks_per_s"] == 2.0
        assert result["cpu_ms_per_ask_per_node"] == row["cpu_ms_per_ask_per_node"] > 0
    else:
        assert result["max_asks_per_s"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--seconds", "1"), "--seconds must be between 4 and 600"),
        (("--start-rate", "4", "--max-rate", "2"), "--start-rate must be positive"),
        (("--provers", "0"), "--provers must be between 1 and 16"),
        (("--capacity", "0"), "--capacity must be between 1 and 1024"),
        (("--frames-per-second", "0"), "--frames-per-second must be between 0.1 and 1000"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: tuple[str, ...], message: str) -> None:
    done = cli("bench", "market", *args, timeout=60)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
