"""`p2p-market fuzz` on the command line: figures as JSON, exit 1 on a crash with
the input saved, one-line errors with exit 2 for bad arguments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from p2p_market.cli.app import app
from p2p_market.fuzz.replay import target_of
from tests.fuzz.test_crashes import CRASHES, OPEN

runner = CliRunner()


def invoke(*args: str) -> Result:
    return runner.invoke(app, ["fuzz", *args])


def one_line_error(result: Result) -> str:
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ")
    return line


def test_a_run_prints_its_figures_as_json(tmp_path: Path) -> None:
    result = invoke("frame", "peers", "--runs", "300", "--seed", "5", "--json",
                    "--crashes", str(tmp_path))  # fmt: skip
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert [t["target"] for t in figures["targets"]] == ["frame", "peers"]
    assert figures["total_inputs"] == 600
    assert figures["ok"] and figures["crashes"] == 0
    assert all(t["cov"] > 0 for t in figures["targets"])


def test_a_saved_crash_fails_the_run_and_is_named(tmp_path: Path) -> None:
    """An open bug's saved input (tests/fuzz/test_crashes.py OPEN), given with
    --corpus: the run stops at it, exits 1, names the exception and saves the input.
    (The runner's own test, with a target broken on purpose, is test_runner.py.)"""
    if not OPEN:
        pytest.skip("no open bug: tests/fuzz/test_runner.py covers crashes")
    name, (raises, _) = next(iter(OPEN.items()))
    result = invoke(target_of(Path(name)), "--runs", "1000", "--corpus", str(CRASHES),
                    "--crashes", str(tmp_path))  # fmt: skip
    assert result.exit_code == 1, result.output
    assert f"{raises.__name__}: " in " ".join(result.stdout.split())
    assert name in [p.name for p in tmp_path.iterdir()]


def test_an_unknown_target_is_a_one_line_error() -> None:
    line = one_line_error(invoke("nothing", "--runs", "10"))
    assert "unknown fuzz target 'nothing'" in line


def test_runs_must_be_positive() -> None:
    assert "--runs" in one_line_error(invoke("frame", "--runs", "0"))


def test_a_corpus_that_is_not_a_directory_is_a_one_line_error(tmp_path: Path) -> None:
    line = one_line_error(invoke("frame", "--runs", "10", "--corpus", str(tmp_path / "none")))
    assert "--corpus" in line
