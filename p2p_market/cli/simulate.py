"""The `p2p-market simulate` command (registered by p2p_market/cli/app.py).

Exit status: 0 the run ended and every check passed; 1 a check failed, the network
did not form, or the run was interrupted (the report is written all the same when
there is something to report); 2 a bad scenario file or argument (one line
`error: ...`, nothing started).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from p2p_market.cli.common import fail

DEFAULT_SCENARIO = Path("simulations/local.toml")


def simulate(
    scenario: Annotated[
        Path,
        typer.Argument(help="Scenario file (TOML), e.g. simulations/churn.toml."),
    ] = DEFAULT_SCENARIO,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Folder for the report folders (default: the scenario's)."),
    ] = None,
    duration: Annotated[
        float | None,
        typer.Option("--duration", help="Seconds of workload (overrides run.duration_s)."),
    ] = None,
    settle: Annotated[
        float | None,
        typer.Option("--settle", help="Most seconds to wait for asks to end (run.settle_s)."),
    ] = None,
    netns: Annotated[
        bool,
        typer.Option(
            "--netns",
            help="Every node in its own network namespace, through a userspace switch"
            " (root; docs/wan.md). Implied by a [network] section or --rtt-ms/--loss.",
        ),
    ] = False,
    rtt_ms: Annotated[
        float | None,
        typer.Option("--rtt-ms", help="Round trip between nodes, ms (network.rtt_ms)."),
    ] = None,
    jitter_ms: Annotated[
        float | None,
        typer.Option("--jitter-ms", help="± per frame, ms (network.jitter_ms)."),
    ] = None,
    loss: Annotated[
        float | None,
        typer.Option("--loss", help="Frames lost per direction, a fraction (network.loss)."),
    ] = None,
) -> None:
    """Start the scenario's nodes as real processes on 127.0.0.1 (with --netns or a
    \\[network] section: each in its own network namespace, through a userspace switch
    with delay, jitter and loss), run its workload and faults, check that every node
    agrees, and write a report folder (summary.json, PNG plots, index.html)."""
    import dataclasses

    from p2p_market.localnet.scenario import ScenarioError
    from p2p_market.localnet.scenario_file import load_scenario

    try:
        sc = load_scenario(scenario)
    except ScenarioError as exc:
        fail(str(exc))
    if duration is not None:
        if not 1 <= duration <= 3600:
            fail("--duration must be between 1 and 3600 seconds")
        if any(f.at_s > duration for f in sc.faults):
            fail("--duration is shorter than a fault's at_s in the scenario")
        sc = dataclasses.replace(sc, duration_s=duration)
    if settle is not None:
        if not 0 <= settle <= 3600:
            fail("--settle must be between 0 and 3600 seconds")
        sc = dataclasses.replace(sc, settle_s=settle)
    sc = _with_network(sc, netns, rtt_ms, jitter_ms, loss)

    from rich.console import Console

    from p2p_market.localnet.report import write_report
    from p2p_market.localnet.run import run_dir_for
    from p2p_market.localnet.run import simulate as run_simulation

    try:
        run_dir = run_dir_for(sc, out)
    except OSError as exc:
        fail(f"cannot create the report folder: {exc.strerror or exc}")
    console = Console(highlight=False, soft_wrap=True)
    console.print(
        f"simulate {sc.name}: {len(sc.nodes)} nodes, {sc.duration_s:g} s workload;"
        f" report in {run_dir}",
        markup=False,
    )
    from p2p_market.localnet.wan.netns import NetnsError

    try:
        data = run_simulation(sc, run_dir, console)
    except NetnsError as exc:
        fail(str(exc))
    summary = write_report(data)
    print_summary(console, summary, run_dir)
    if not summary["checks"]["ok"]:
        raise typer.Exit(1)


def _with_network(
    sc: Any, netns: bool, rtt_ms: float | None, jitter_ms: float | None, loss: float | None
) -> Any:
    """The scenario with its [network] section overridden by the options; checks
    that this machine can make namespaces (exit 2, one line, if it cannot)."""
    import dataclasses

    from p2p_market.localnet.scenario import Network, ScenarioError
    from p2p_market.localnet.scenario_file import check_faults, network_section
    from p2p_market.localnet.wan.netns import NetnsError, preflight

    given = {"rtt_ms": rtt_ms, "jitter_ms": jitter_ms, "loss": loss}
    if not netns and sc.network is None and all(v is None for v in given.values()):
        return sc
    base = dataclasses.asdict(sc.network or Network())
    try:
        network = network_section({**base, **{k: v for k, v in given.items() if v is not None}})
    except ScenarioError as exc:
        fail(str(exc).replace("network.", "--").replace("_", "-"))
    sc = dataclasses.replace(sc, network=network)
    try:
        check_faults(sc)
        preflight()
    except (ScenarioError, NetnsError) as exc:
        fail(str(exc))
    return sc


def print_summary(console: object, summary: dict[str, object], run_dir: Path) -> None:
    from rich.console import Console

    from p2p_market.localnet.report import times_text

    assert isinstance(console, Console)
    a = summary["asks"]
    lat = summary["latency_s"]
    g = summary["gossip"]
    checks = summary["checks"]
    assert isinstance(a, dict) and isinstance(lat, dict) and isinstance(g, dict)
    assert isinstance(checks, dict)
    p = console.print
    p(
        f"asks: {a['placed']} placed, {a['assigned']} ever assigned, {a['proven']} proven,"
        f" {a['expired']} expired, {a['open_at_end']} still open;"
        f" {a['timed_out']} slots timed out, {a['invalid_proofs']} invalid proofs,"
        f" {a['reassigned']} reassigned",
        markup=False,
    )
    p(
        f"latency (s): assigned p50 {lat['assignment']['p50']} p99 {lat['assignment']['p99']};"
        f" proven p50 {lat['completion']['p50']} p99 {lat['completion']['p99']}",
        markup=False,
    )
    p(
        f"gossip: {g['frames_per_s_mean']} frames/s mean, {g['frames_per_s_peak_10s']} peak"
        f" (capacity ~{g['capacity_frames_per_s']}); envelopes per completed ask:"
        f" {summary['envelopes_per_completed_ask']}; transport-bound:"
        f" {'yes' if summary['transport_bound'] else 'no'}; provers' slots all held:"
        f" {summary['slot_waits']} attempts{' (slots-bound)' if summary['slots_bound'] else ''}",
        markup=False,
    )
    provers = summary.get("provers")
    assert isinstance(provers, list)
    for pr in provers:
        p(
            f"{pr['name']}: {pr['accepted']} accepted of {pr['slots_won']} won, earned"
            f" {pr['earned']}; {pr['proofs']} proofs, prove ms p50 / p99"
            f" {times_text(pr['prove_ms'])}; verify ms p50 / p99"
            f" {times_text(pr['verify_ms'])} ({pr['verify_ms']['n']} verified)",
            markup=False,
        )
    if summary.get("error"):
        p(f"[bold red]error:[/] {summary['error']}")
    net = summary.get("network")
    if isinstance(net, dict):
        sw = net.get("switch") or {}
        p(
            f"network: {net['rtt_ms']:g} ms RTT, ±{net['jitter_ms']:g} ms jitter,"
            f" {net['loss'] * 100:g} % loss; switch: {sw.get('frames_in')} frames in,"
            f" {sw.get('dropped_loss')} lost, {sw.get('dropped_cut')} cut;"
            f" agreed {checks.get('agreed_after_heal_s')} s after the last heal",
            markup=False,
        )
    catch_up = checks.get("catch_up")
    if isinstance(catch_up, dict):
        after = catch_up.get("after_heal_s")
        p(
            f"catch-up: every node held the history of the {catch_up.get('asks')} asks"
            f" that ended before the heal {after} s after it"
            if after is not None
            else f"catch-up: NOT by the checks; lacking asks {catch_up.get('lacking')}",
            markup=False,
        )
    if checks["ok"]:
        p(
            f"[green]checks passed[/]: {checks.get('honest_nodes')} honest nodes agree"
            f" ({checks.get('agreed_after_s')} s after the market settled,"
            f" {checks.get('agree_attempts')} comparison(s))"
        )
    else:
        failures = checks.get("failures") or []
        assert isinstance(failures, list)
        p(f"[bold red]CHECKS FAILED[/]: {'; '.join(str(f) for f in failures)}")
        for example in checks.get("examples") or []:
            p(f"  {example}", markup=False)
    p(f"report: {run_dir / 'index.html'}", markup=False)


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate)
