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


def test_a_crash_fails_the_run_and_its_input_is_saved(tmp_path: Path) -> None:
    """A target whose contract the fuzzer breaks at once (tests/fuzz/strict.py)."""
    result = invoke("tests.fuzz.strict:STRICT", "--runs", "100000", "--crashes", str(tmp_path))
    assert result.exit_code == 1, result.output
    out = " ".join(result.stdout.split())
    assert "crash in tests.fuzz.strict:STRICT: FrameError: " in out
    [saved] = tmp_path.iterdir()
    assert saved.name.startswith("STRICT-")
    assert saved.name in out.replace(" ", "")  # rich may wrap the path


def test_open_bugs_do_not_stop_the_fuzzer_but_still_fail_their_replay(tmp_path: Path) -> None:
    """Started from every saved input, each registered target runs its inputs
    through: the open bugs (tests/fuzz/test_crashes.py OPEN) are passed over by the
    fuzzer, while their replay, without atheris, still fails (strict xfail)."""
    names = sorted({target_of(Path(name)) for name in OPEN})
    if not names:
        pytest.skip("no open bug")
    result = invoke(*names, "--runs", "2000", "--corpus", str(CRASHES), "--crashes", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_target_is_a_one_line_error() -> None:
    line = one_line_error(invoke("nothing", "--runs", "10"))
    assert "unknown fuzz target 'nothing'" in line


def test_runs_must_be_positive() -> None:
    assert "--runs" in one_line_error(invoke("frame", "--runs", "0"))


def test_a_corpus_that_is_not_a_directory_is_a_one_line_error(tmp_path: Path) -> None:
    line = one_line_error(invoke("frame", "--runs", "10", "--corpus", str(tmp_path / "none")))
    assert "--corpus" in line
