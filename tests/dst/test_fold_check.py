"""`p2p-market dst --check-fold`: every node's kept settlement fold against the fold
from scratch (core/reference.py), at checkpoints and at the end of a run."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from typing import Any

import pytest

from p2p_market.cli.dst import dst_command, replay_command
from p2p_market.dst import SCENARIOS, simulate
from p2p_market.dst.checks import FoldChecks
from p2p_market.dst.run import WALL_FIELDS, Options, build

SMALL = replace(SCENARIOS["mixed-faults"], nodes=20, seconds=12)
FOLD_FIELDS = ("check_fold", "fold_checks", "fold_differences", "fold_examples")


def without_fold_fields(report: Any) -> dict[str, Any]:
    d = asdict(report)
    for name in (*WALL_FIELDS, *FOLD_FIELDS, "events"):
        del d[name]
    return d


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_small_runs_check_every_node_at_every_checkpoint(seed: int) -> None:
    """(Seed 2 found a difference before the fold's frontier was fixed: the first
    case of tests/core/test_fold_findings.py.)"""
    options = Options(check_fold=True, fold_checkpoints=3)
    r = simulate(SMALL, seed, options)
    assert r.ok, (r.failures, r.fold_examples)
    assert r.check_fold and r.fold_differences == 0 and r.fold_examples == []
    # every node that is up, at 3 checkpoints and at the end (crashed nodes skip one)
    assert 3 * SMALL.nodes < r.fold_checks <= 4 * SMALL.nodes
    assert r.fold_check_seconds > 0


def test_checking_the_fold_does_not_change_the_run() -> None:
    """Reading the folds only adds the checkpoint events: the run is the same."""
    plain = simulate(SMALL, 3)
    checked = simulate(SMALL, 3, Options(check_fold=True, fold_checkpoints=4))
    assert without_fold_fields(plain) == without_fold_fields(checked)
    assert checked.events == plain.events + 4
    assert not plain.check_fold and plain.fold_checks == 0


def test_a_kept_fold_that_differs_is_reported_with_its_node() -> None:
    """The check can fail: a node's kept fold, tampered with after a run (a settled
    window's winners dropped), is found and named."""
    world = build(replace(SCENARIOS["calm"], nodes=10, seconds=20), 1)
    world.loop.run_until(world.start_ms + 10_000)  # asks in flight, not yet archived
    node = next(
        n for n in world.nodes if any(a.winners for a in n.state.settlement().attempts.values())
    )
    for attempt in node.state.settlement().attempts.values():
        attempt.winners = ()
    folds = FoldChecks()
    folds.check(world, "after tampering")
    assert folds.checks == len(world.nodes)
    assert folds.differing == 1
    assert folds.examples[0].startswith(f"node {node.idx} ({node.role}) after tampering: ")
    assert "attempts " in folds.examples[0] and "reference" in folds.examples[0]


def test_the_command_takes_check_fold(capsys: pytest.CaptureFixture[str]) -> None:
    options = Options(check_fold=True)
    assert dst_command(12, 6, 2, None, "calm", True, options) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["check_fold"] is True and report["fold_checks"] >= 12 * 5
    assert report["fold_differences"] == 0
    assert dst_command(12, 6, 0, "1..2", "calm", True, options) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["fold_checks"] == sum(r["fold_checks"] for r in summary["runs"]) > 0
    assert summary["fold_differences"] == 0 and summary["fold_differing_seeds"] == []


def test_the_replay_command_keeps_check_fold() -> None:
    r = simulate(replace(SCENARIOS["calm"], nodes=8, seconds=4), 2, Options(check_fold=True))
    assert replay_command(r).endswith("--seed 2 --scenario calm --check-fold")
