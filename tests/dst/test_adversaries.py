"""The withholder (commits held back and released late) and the no-effect actor
(valid messages that change nothing), and the finality figures they feed."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from p2p_market.cli.dst import dst_command, replay_command
from p2p_market.core import effects as fx
from p2p_market.core.lifecycle import AskState
from p2p_market.dst import SCENARIOS, finality, simulate
from p2p_market.dst.checks import honest_nodes
from p2p_market.dst.finality import FinalityWatch
from p2p_market.dst.run import Options, build, gc_paused

ADVERSARIES = replace(
    SCENARIOS["calm"],
    name="adversaries",
    nodes=20,
    seconds=30,
    withholder=1,
    no_effect=1,
    byzantine_offer=(10, 2_000),
    max_reorgs=None,
)
"""Calm but for one withholder (cheap and fast, so its late commits win) and one
no-effect actor: about 1.5 s per run."""


def test_withheld_commits_come_out_and_no_final_outcome_changes() -> None:
    """Before awards (protocols/market-v1.md §12) this scenario changed final
    outcomes on every seed tried (seed 1: several asks); the withholder's commits
    are cheap and fast, so they win whatever the requester has not awarded."""
    for seed in (1, 2, 3):
        r = simulate(ADVERSARIES, seed, Options(require_finality=True))
        assert r.ok, (r.failures, r.examples)
        assert r.held_back > 0 and r.held_back_released == r.held_back
        assert r.final_outcomes > 0
        assert (r.final_outcomes_changed, r.final_asks_changed) == (0, 0)
        assert replay_command(r).endswith("--scenario adversaries")


def test_without_withholders_nothing_is_held_or_recorded() -> None:
    r = simulate(replace(ADVERSARIES, withholder=0), 1, Options(require_finality=False))
    assert r.ok, r.failures
    assert (r.held_back, r.final_outcomes, r.final_outcomes_changed) == (0, 0, 0)
    assert replay_command(r).endswith("--scenario adversaries --no-require-finality")


def test_holds_stay_within_their_bounds() -> None:
    """Each withheld commit comes out after a delay between the scenario's bounds (at
    the end of the active phase at the latest)."""
    r = simulate(replace(ADVERSARIES, holdback_max_ms=3_000), 2)
    assert r.held_back > 1 and r.released_at_active_end == 0
    assert r.held_for_p50_ms is not None and r.held_for_max_ms is not None
    assert 2_000 <= r.held_for_p50_ms <= r.held_for_max_ms <= 3_000
    long = simulate(replace(ADVERSARIES, holdback_min_ms=60_000, holdback_max_ms=3_600_000), 2)
    assert long.held_back > 0 and long.released_at_active_end == long.held_back
    assert long.held_for_max_ms is not None and long.held_for_max_ms < ADVERSARIES.seconds * 1_000


def test_no_effect_messages_change_nothing() -> None:
    """Every message the no-effect actor signed is stored by the honest nodes with a
    note saying why it had no effect, and it never wins a slot."""
    world = build(ADVERSARIES, 3)
    with gc_paused():
        world.loop.run_until(world.start_ms + 25_000)
    actor = next(n for n in world.nodes if n.behaviour == "no-effect")
    assert world.stats.no_effect_sent > 10
    seen = 0
    for node in honest_nodes(world):
        s = node.state.settlement()
        for ask_id in s.runs:
            for mid, env in node.state.events[ask_id].items():
                if env.signer == actor.pk:
                    seen += 1
                    assert s.notes.get(mid), (type(env.message).__name__, ask_id.hex()[:8])
        for run in s.runs.values():
            assert actor.pk not in run.slots
    assert seen > 0
    r = simulate(ADVERSARIES, 3)
    assert r.ok and r.no_effect_sent > 0 and r.no_effect_won == 0


def test_the_finality_watch_records_and_counts_by_its_definition(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Final = PROVEN by awarded slots, or winners announced more than
    commit_window + 2·skew ago of an attempt the requester awarded. Driven with
    effects on one node of a built (not run) world, whose fold holds none of these
    synthetic asks: first nothing is final (nothing awarded); then, with the fold's
    answers fixed to "awarded" for this node, the watch's bookkeeping is checked
    (the awarded path end to end is the simulation test above)."""
    world = build(ADVERSARIES, 1)
    watch = FinalityWatch(world, honest_nodes(world))
    node = honest_nodes(world)[0]
    loop, lag = world.loop, watch.lag
    ask, other, rnd = b"a" * 32, b"b" * 32, b"r" * 32
    p, q = b"p" * 32, b"q" * 32
    watch.saw(node, fx.AttemptSettled(ask=ask, round=rnd, attempt=0, winners=(p,)))
    watch.saw(node, fx.AskStateChanged(ask=other, before=AskState.ASSIGNED, after=AskState.PROVEN))
    loop.now += lag + 1
    watch.released(ask)
    assert watch.recorded == {}  # never awarded: tentative, whatever was announced
    monkeypatch.setattr(finality, "_awarded", lambda node, key: (p,))
    monkeypatch.setattr(finality, "_proven_by_awards", lambda node, ask_id: True)
    watch = FinalityWatch(world, honest_nodes(world))
    loop.now = world.start_ms
    watch.saw(node, fx.AttemptSettled(ask=ask, round=rnd, attempt=0, winners=(p,)))
    watch.saw(node, fx.AskStateChanged(ask=other, before=AskState.ASSIGNED, after=AskState.PROVEN))
    loop.now += lag  # not more than the lag yet: only the PROVEN ask is final
    watch.released(ask)
    assert set(watch.recorded) == {(node.idx, other)}
    loop.now += 1
    watch.released(ask)
    assert set(watch.recorded) == {(node.idx, other), (node.idx, ask)}
    assert watch.changed == set()
    watch.saw(node, fx.AttemptSettled(ask=ask, round=rnd, attempt=0, winners=(p,)))  # replay
    assert watch.changed == set()
    watch.saw(node, fx.Reorg(ask=ask, round=rnd, attempt=0, before=(p,), after=(q,)))
    watch.saw(node, fx.AskStateChanged(ask=other, before=None, after=AskState.ASSIGNED))
    assert watch.changed == {(node.idx, ask), (node.idx, other)}
    assert watch.asks_changed == 2


def test_the_command_takes_the_adversaries_options(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(SCENARIOS, "adversaries", ADVERSARIES)
    assert dst_command(None, None, 1, None, "adversaries", True, holdback_max_s=4) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["holdback_max_ms"] == 4_000
    # both adversaries acted, and changed nothing final
    assert report["held_back"] == report["held_back_released"] > 0
    assert report["no_effect_sent"] > 0 and report["no_effect_won"] == 0
    assert report["final_outcomes"] > 0 and report["final_outcomes_changed"] == 0
    code = dst_command(None, None, 0, "1..2", "adversaries", True, Options(require_finality=True))
    summary = json.loads(capsys.readouterr().out)
    runs = summary["runs"]
    assert [r["seed"] for r in runs] == [1, 2] and all(r["require_finality"] for r in runs)
    # awards keep every final outcome (the test above): both seeds pass, exit 0
    assert code == 0 and summary["failed_seeds"] == []
    assert summary["final_outcomes"] == sum(r["final_outcomes"] for r in runs) > 0
    assert summary["final_outcomes_changed"] == 0 and summary["finality_changed_seeds"] == []
    assert dst_command(12, 6, 1, None, "calm", False, holdback_max_s=0) == 2


PHANTOMS = replace(
    SCENARIOS["calm"],
    name="phantoms",
    nodes=20,
    seconds=30,
    prover_share=0.6,
    phantom=6,
    byzantine_offer=(1, 1_000),
    max_reorgs=None,
)
"""Six provers that bid cheaper and faster than anyone and never commit: more than the
commit window has stages (1 000 / 200 = 5); six honest provers besides them."""


def test_phantom_bids_do_not_censor_the_market() -> None:
    """Before the staged fallback was bounded inside the window, every honest prover
    waited behind the six phantoms past the window and no ask was ever assigned."""
    for seed in (1, 2):
        world = build(PHANTOMS, seed)
        assert sum(n.behaviour == "phantom" for n in world.nodes) == 6
        r = simulate(PHANTOMS, seed)
        assert r.ok, (r.failures, r.examples)
        assert r.expected > 0 and r.expected_unproven == 0
