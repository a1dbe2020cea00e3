"""`p2p-market dst`: run the deterministic simulator from the command line.

    p2p-market dst --scenario mixed-faults --seed 7
    p2p-market dst --scenario mixed-faults --seeds 1..200 --json

`dst_command` prints the figures and returns the exit code: 0 when every run is
ok, 1 when any failed, 2 for bad arguments (one line `error: ...` on stderr).
Every failing seed comes with the exact command that replays it (same seed, same
report, on any machine). `register(app)` adds the command to the `p2p-market` CLI;
`python -m p2p_market.cli dst ...` runs it without the installed entry point.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, replace
from typing import Annotated

import typer

from p2p_market.dst.run import DEFAULT, Options, Report, simulate
from p2p_market.dst.scenarios import SCENARIOS, Scenario


def parse_seeds(text: str) -> list[int]:
    """'A..B' (inclusive) or a single 'A'."""
    a, sep, b = text.partition("..")
    try:
        lo, hi = int(a), int(b) if sep else int(a)
    except ValueError:
        raise ValueError(f"--seeds must look like A..B, not {text!r}") from None
    if lo < 0 or hi < lo:
        raise ValueError(f"--seeds {text!r}: need 0 <= A <= B")
    return list(range(lo, hi + 1))


def replay_command(report: Report) -> str:
    """The command that replays this run exactly, with the options it was checked by."""
    flags = " --check-fold" if report.check_fold else ""
    flags += "" if report.require_finality else " --no-require-finality"
    if report.holdback_max_ms is not None:
        flags += f" --holdback-max-s {report.holdback_max_ms / 1_000:g}"
    return (
        f"p2p-market dst --nodes {report.nodes} --seconds {report.seconds}"
        f" --seed {report.seed} --scenario {report.scenario}{flags}"
    )


def describe(r: Report) -> str:
    def ms(v: int | None) -> str:
        return "-" if v is None else str(v)

    lines = [
        f"dst {r.scenario} seed={r.seed} nodes={r.nodes} seconds={r.seconds}"
        + (f" planted_bug={r.planted_bug}" if r.planted_bug else "")
        + f": {'ok' if r.ok else 'FAILED'}",
        f"  asks {r.asks}: expected {r.expected}, proven {r.proven}, "
        f"unproven expected {r.expected_unproven}, false timeouts {r.false_timeouts}, "
        f"cancelled {r.cancelled}, expired {r.expired}",
        f"  timed out {r.timed_out}, invalid proofs {r.invalid_proofs}, reassigned {r.reassigned}",
        f"  reorgs {r.reorgs} (+{r.replay_reorgs} in restart replays), divergent asks "
        f"{r.divergent_asks} of {r.asks_compared}, invariant violations {r.invariant_violations}",
        f"  equivocations seen {r.equivocations_seen}, garbage sent {r.garbage_sent} / "
        f"accepted {r.garbage_accepted} / forwarded {r.garbage_forwarded}",
        f"  assignment p50/p99 {ms(r.assign_p50_ms)}/{ms(r.assign_p99_ms)} ms, "
        f"completion p50/p99 {ms(r.complete_p50_ms)}/{ms(r.complete_p99_ms)} ms",
        f"  {r.sim_seconds:g} simulated s in {r.wall_seconds:.2f} wall s "
        f"({r.sim_per_wall:g} sim s per wall s)",
    ]
    if r.held_back or r.no_effect_sent:
        lines.append(
            f"  withheld commits {r.held_back} (released {r.held_back_released}, "
            f"{r.released_at_active_end} at the end of the active phase, held p50/max "
            f"{ms(r.held_for_p50_ms)}/{ms(r.held_for_max_ms)} ms); final outcomes "
            f"{r.final_outcomes}, changed {r.final_outcomes_changed} "
            f"({r.final_asks_changed} asks); no-effect messages {r.no_effect_sent}"
        )
    if r.check_fold:
        lines.append(
            f"  fold checks {r.fold_checks}: {r.fold_differences} differ from the fold from"
            f" scratch ({r.fold_check_seconds:.2f} wall s)"
        )
    lines += [f"  failure: {f}" for f in r.failures]
    lines += [f"    {e}" for e in r.examples[:8]] if not r.ok else []
    lines += [f"    fold: {e}" for e in r.fold_examples[:8]]
    return "\n".join(lines)


def dst_command(
    nodes: int | None,
    seconds: int | None,
    seed: int,
    seeds: str | None,
    scenario: str,
    as_json: bool,
    options: Options = DEFAULT,
    holdback_max_s: float | None = None,
) -> int:
    preset = SCENARIOS.get(scenario)
    for name, value in (
        ("--nodes", nodes),
        ("--seconds", seconds),
        ("--holdback-max-s", holdback_max_s),
    ):
        if value is not None and value <= 0:
            print(f"error: {name} must be at least 1, not {value}", file=sys.stderr)
            return 2
    if preset is None:
        print(
            f"error: unknown scenario {scenario!r} (one of {', '.join(SCENARIOS)})", file=sys.stderr
        )
        return 2
    try:
        sc: Scenario = replace(
            preset,
            nodes=preset.nodes if nodes is None else nodes,
            seconds=preset.seconds if seconds is None else seconds,
            holdback_max_ms=(
                preset.holdback_max_ms
                if holdback_max_s is None
                else max(preset.holdback_min_ms, round(holdback_max_s * 1_000))
            ),
        )
        todo = [seed] if seeds is None else parse_seeds(seeds)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    reports: list[Report] = []
    for s in todo:
        r = simulate(sc, s, options)
        reports.append(r)
        if not as_json:
            print(describe(r) if seeds is None else _one_line(r), flush=True)
    failed = [r for r in reports if not r.ok]

    if as_json:
        if seeds is None:
            print(json.dumps(asdict(reports[0])))
        else:
            print(json.dumps(_summary(sc, reports) | {"runs": [asdict(r) for r in reports]}))
    elif seeds is not None:
        total = _summary(sc, reports)
        print(
            f"{total['ok']} of {total['runs_total']} seeds ok; {total['asks']} asks, "
            f"{total['proven']} proven, {total['reorgs']} reorgs, "
            f"{total['divergent_asks']} divergent; {total['sim_seconds']:g} simulated s "
            f"in {total['wall_seconds']:.1f} wall s"
            + (
                f"; final outcomes changed {total['final_outcomes_changed']} of"
                f" {total['final_outcomes']} ({total['final_asks_changed']} asks)"
                if any(r.held_back for r in reports)
                else ""
            )
            + (
                f"; fold checks {total['fold_checks']}, {total['fold_differences']} differ"
                f" (seeds {total['fold_differing_seeds']})"
                if _checked_folds(reports)
                else ""
            )
        )
    for r in failed:
        print(f"replay: {replay_command(r)}", file=sys.stderr if as_json else sys.stdout)
    return 1 if failed else 0


def _checked_folds(reports: list[Report]) -> bool:
    return any(r.check_fold for r in reports)


def _one_line(r: Report) -> str:
    tail = "ok" if r.ok else "FAILED: " + "; ".join(r.failures)
    return (
        f"seed {r.seed}: {r.asks} asks, {r.proven} proven, {r.reorgs} reorgs, "
        f"{r.divergent_asks} divergent, {r.wall_seconds:.2f} s: {tail}"
    )


def _summary(sc: Scenario, reports: list[Report]) -> dict[str, object]:
    return {
        "scenario": sc.name,
        "nodes": sc.nodes,
        "seconds": sc.seconds,
        "runs_total": len(reports),
        "ok": sum(r.ok for r in reports),
        "failed_seeds": [r.seed for r in reports if not r.ok],
        "replay": [replay_command(r) for r in reports if not r.ok],
        "asks": sum(r.asks for r in reports),
        "proven": sum(r.proven for r in reports),
        "reorgs": sum(r.reorgs for r in reports),
        "divergent_asks": sum(r.divergent_asks for r in reports),
        "held_back": sum(r.held_back for r in reports),
        "final_outcomes": sum(r.final_outcomes for r in reports),
        "final_outcomes_changed": sum(r.final_outcomes_changed for r in reports),
        "final_asks_changed": sum(r.final_asks_changed for r in reports),
        "finality_changed_seeds": [r.seed for r in reports if r.final_outcomes_changed],
        "no_effect_sent": sum(r.no_effect_sent for r in reports),
        "fold_checks": sum(r.fold_checks for r in reports),
        "fold_differences": sum(r.fold_differences for r in reports),
        "fold_differing_seeds": [r.seed for r in reports if r.fold_differences],
        "sim_seconds": sum(r.sim_seconds for r in reports),
        "wall_seconds": round(sum(r.wall_seconds for r in reports), 3),
    }


def dst(
    nodes: Annotated[
        int | None, typer.Option("--nodes", help="Nodes (default: the scenario's).")
    ] = None,
    seconds: Annotated[
        int | None,
        typer.Option(
            "--seconds", help="Virtual seconds of asks and faults (default: the scenario's)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="The seed that fixes the whole run.")] = 1,
    seeds: Annotated[
        str | None, typer.Option("--seeds", help="Run seeds A..B (inclusive) instead of --seed.")
    ] = None,
    scenario: Annotated[
        str, typer.Option("--scenario", help=f"One of: {', '.join(SCENARIOS)}.")
    ] = "calm",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report(s) as JSON.")] = False,
    check_fold: Annotated[
        bool,
        typer.Option(
            "--check-fold",
            help="Compare every node's kept settlement fold with the fold from scratch at"
            " checkpoints and at the end; fail on any difference.",
        ),
    ] = False,
    require_finality: Annotated[
        bool,
        typer.Option(
            "--require-finality/--no-require-finality",
            help="Fail if an outcome final on a node when a withheld commit came out"
            " later changed (protocols/market-v1.md §12; counted either way).",
        ),
    ] = True,
    holdback_max_s: Annotated[
        float | None,
        typer.Option(
            "--holdback-max-s",
            help="Longest delay before a withholder releases a commit, in seconds"
            " (default: the active phase).",
        ),
    ] = None,
) -> None:
    """Deterministic simulation: many core nodes in one process, a simulated gossip
    network, virtual time and seeded faults; checks that every honest node agrees."""
    options = Options(check_fold=check_fold, require_finality=require_finality)
    code = dst_command(nodes, seconds, seed, seeds, scenario, as_json, options, holdback_max_s)
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("dst")(dst)
