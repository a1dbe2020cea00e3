"""`dst_command`, the function behind `p2p-market dst`, and the command itself."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from p2p_market.cli.app import app
from p2p_market.cli.dst import dst_command, parse_seeds
from p2p_market.dst import SCENARIOS


def test_one_seed_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert dst_command(12, 8, 3, None, "calm", True) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert (report["nodes"], report["seconds"], report["seed"]) == (12, 8, 3)


def test_one_seed_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert dst_command(12, 8, 3, None, "calm", False) == 0
    out = capsys.readouterr().out
    assert "dst calm seed=3 nodes=12 seconds=8: ok" in out
    assert "sim s per wall s" in out


def test_a_seed_range_prints_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert dst_command(12, 6, 0, "1..3", "calm", False) == 0
    out = capsys.readouterr().out
    assert "3 of 3 seeds ok" in out
    assert "replay:" not in out


def test_failing_seeds_come_with_their_replay_command(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    planted = replace(SCENARIOS["calm"], name="planted", planted_bug="no-tiebreak", asks_per_s=1.0)
    monkeypatch.setitem(SCENARIOS, "planted", planted)
    assert dst_command(30, 20, 0, "1..2", "planted", True) == 1
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["failed_seeds"] == [1, 2]
    assert len(summary["runs"]) == 2
    replay = "p2p-market dst --nodes 30 --seconds 20 --seed 1 --scenario planted"
    assert replay in summary["replay"]
    assert f"replay: {replay}" in captured.err


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert dst_command(12, 8, 1, None, "no-such-scenario", False) == 2
    assert dst_command(12, 8, 1, "5..2", "calm", False) == 2
    assert dst_command(12, 8, 1, "x..y", "calm", False) == 2
    assert capsys.readouterr().err.count("error:") == 3


def test_parse_seeds() -> None:
    assert parse_seeds("3..5") == [3, 4, 5]
    assert parse_seeds("7") == [7]
    with pytest.raises(ValueError):
        parse_seeds("-1..2")


# -- the `p2p-market dst` command ------------------------------------------------------
runner = CliRunner()


def test_the_command_is_registered_on_the_main_cli() -> None:
    result = runner.invoke(app, ["dst", "--nodes", "12", "--seconds", "6", "--seed", "3", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["ok"], report["nodes"], report["seed"]) == (True, 12, 3)
    for key in ("asks", "proven", "reorgs", "divergent_asks", "assign_p50_ms", "sim_per_wall"):
        assert key in report


@pytest.mark.parametrize(
    "args",
    [
        ["--nodes", "2"],
        ["--nodes", "x"],
        ["--seconds", "0"],
        ["--scenario", "no-such-scenario"],
        ["--seeds", "5..2"],
        ["--seeds", "1...3"],
        ["--holdback-max-s", "0"],
        ["--holdback-max-s", "x"],
        ["--no-such-option"],
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(args: list[str]) -> None:
    result = runner.invoke(app, ["dst", *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert result.stdout == "" and "Traceback" not in result.output


def test_a_seed_range_with_every_option_as_json() -> None:
    """`--seeds A..B` with the checking options: one summary with the new figures
    and every run's report."""
    result = runner.invoke(
        app,
        [
            "dst", "--nodes", "12", "--seconds", "6", "--seeds", "2..4", "--json",
            "--check-fold", "--require-finality", "--holdback-max-s", "5",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [r["seed"] for r in summary["runs"]] == [2, 3, 4]
    assert summary["runs_total"] == summary["ok"] == 3
    for key in ("fold_checks", "fold_differences", "final_outcomes_changed", "held_back"):
        assert key in summary
    assert summary["fold_checks"] > 0
    assert all(r["check_fold"] and r["require_finality"] for r in summary["runs"])
    assert all(r["holdback_max_ms"] == 5_000 and r["asks_retired"] == 0 for r in summary["runs"])


def test_a_failing_run_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    planted = replace(SCENARIOS["calm"], name="planted", planted_bug="no-tiebreak", asks_per_s=1.0)
    monkeypatch.setitem(SCENARIOS, "planted", planted)
    result = runner.invoke(
        app, ["dst", "--nodes", "30", "--seconds", "20", "--scenario", "planted"]
    )
    assert result.exit_code == 1
    assert "replay: p2p-market dst --nodes 30 --seconds 20 --seed 1 --scenario planted" in (
        result.stdout
    )


def test_the_installed_script_runs_it() -> None:
    script = Path(sys.executable).parent / "p2p-market"
    done = subprocess.run(
        [str(script), "dst", "--nodes", "8", "--seconds", "4", "--seed", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "dst calm seed=2 nodes=8 seconds=4: ok" in done.stdout
