"""The runner against real libFuzzer runs: it counts the inputs, reads coverage,
and catches and saves an input that breaks a contract."""

from __future__ import annotations

from pathlib import Path

from p2p_market.fuzz.replay import saved_inputs
from p2p_market.fuzz.runner import TargetRun, parse_output, run_target

STRICT = "tests.fuzz.strict:STRICT"


def test_a_clean_run_counts_its_inputs_and_reads_coverage(tmp_path: Path) -> None:
    run = run_target("frame", 500, seed=3, crashes_dir=tmp_path)
    assert run.ok, run
    assert run.inputs == 500
    assert run.cov > 50 and run.ft >= run.cov
    assert run.corpus >= 4  # the seeds at least
    assert saved_inputs(tmp_path) == []


def test_a_broken_contract_is_a_crash_with_its_input_saved(tmp_path: Path) -> None:
    run = run_target(STRICT, 100_000, seed=3, crashes_dir=tmp_path)
    assert not run.ok
    assert run.inputs < 100_000  # stopped at the first crash
    [crash] = run.crashes
    assert crash.kind == "crash"
    assert "FrameError" in crash.error
    [saved] = saved_inputs(tmp_path)
    assert saved.name.startswith("STRICT-")
    assert str(saved) == crash.path


def test_saved_inputs_of_a_target_are_run_first(tmp_path: Path) -> None:
    """An input from --corpus that breaks the contract crashes the run at once."""
    found = run_target(STRICT, 100_000, seed=3, crashes_dir=tmp_path / "first")
    assert found.crashes
    again = run_target(
        STRICT, 100_000, seed=4, crashes_dir=tmp_path / "again", start_from=[tmp_path / "first"]
    )
    assert again.crashes
    assert again.inputs <= found.inputs


def test_libfuzzer_figures_are_read_from_its_output() -> None:
    log = (
        "#2\tINITED cov: 10 ft: 11 corp: 2/20b exec/s: 0 rss: 40Mb\n"
        "#1000\tNEW    cov: 120 ft: 300 corp: 30/2Kb lim: 40 exec/s: 0 rss: 47Mb\n"
        "#5000\tDONE   cov: 121 ft: 310 corp: 31/2Kb lim: 40 exec/s: 0 rss: 47Mb\n"
        "Done 5000 runs in 1 second(s)\n"
    )
    run = TargetRun(target="frame", requested=5000)
    parse_output(run, log)
    assert (run.inputs, run.cov, run.ft, run.corpus) == (5000, 121, 310, 31)
