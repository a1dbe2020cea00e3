"""The `p2p-market` command.

Expected failures (bad arguments, unreadable files, wrong passphrase) print one
line on stderr, `error: ...`, and exit with status 2; a node that cannot run (its
data dir or log cannot be used) with status 1 (cli/common.py `run_node`); never a
traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from p2p_market.cli import asks, control, market, proof, prover, request, templates
from p2p_market.cli.bench_frames import register as register_bench_frames
from p2p_market.cli.bench_proofs import register as register_bench_proofs
from p2p_market.cli.common import (
    AnnounceOpt,
    OneLineErrors,
    check_announce,
    fail,
    run_node,
    run_node_bench,
    styled_table,
)
from p2p_market.cli.config_cmd import register as register_config
from p2p_market.cli.dst import register as register_dst
from p2p_market.cli.fuzz import register as register_fuzz
from p2p_market.cli.simulate import register as register_simulate
from p2p_market.core.crypto import DEVNET_SEED_PREFIX, devnet_key
from p2p_market.dst.demo import DemoResult, run_demo
from p2p_market.markets.devnet import DEVNET_NAMES as DEVNET_NAMES  # re-exported
from p2p_market.node.keyfile import (
    KeyFileError,
    new_key,
    public_id,
    read_key,
    read_passphrase,
    write_key,
)

app = typer.Typer(
    name="p2p-market",
    cls=OneLineErrors,
    help="A peer-to-peer, leaderless market for zero-knowledge proofs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
keys_app = typer.Typer(help="Create and inspect Ed25519 key files.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks.", no_args_is_help=True)
node_app = typer.Typer(help="Run a market node.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(bench_app, name="bench")
app.add_typer(node_app, name="node")


def _key_path(directory: Path, name: str) -> Path:
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        fail(f"invalid key name {name!r}: a plain file name without slashes is expected")
    return directory / f"{name}.pem"


def _passphrase(path: Path | None) -> bytes | None:
    return None if path is None else read_passphrase(path)


NameOpt = Annotated[str, typer.Option("--name", help="Key name: the file is DIR/NAME.pem.")]
DirOpt = Annotated[Path, typer.Option("--dir", help="Directory of key files.")]
PassOpt = Annotated[
    Path | None,
    typer.Option(
        "--passphrase-file",
        help="File holding the passphrase (its final line break is dropped). "
        "Without it the key file is not encrypted.",
    ),
]


@keys_app.command("new")
def keys_new(
    name: NameOpt = "node",
    passphrase_file: PassOpt = None,
    directory: DirOpt = Path("keys"),
) -> None:
    """Create a new key file DIR/NAME.pem and print its public id."""
    path = _key_path(directory, name)
    try:
        passphrase = _passphrase(passphrase_file)
        key = new_key()
        write_key(path, key, passphrase)
    except (KeyFileError, OSError) as exc:
        fail(str(exc))
    typer.echo(f"public id: {public_id(key)}")
    typer.echo(f"key file:  {path} ({'encrypted' if passphrase else 'NOT encrypted'})")


@keys_app.command("show")
def keys_show(
    name: NameOpt = "node",
    passphrase_file: PassOpt = None,
    directory: DirOpt = Path("keys"),
    file: Annotated[
        Path | None, typer.Option("--file", help="Key file path (instead of --dir/--name).")
    ] = None,
    port: Annotated[
        int, typer.Option("--port", help="The node's listen port, for the addresses shown.")
    ] = 4701,
    hex_only: Annotated[
        bool, typer.Option("--hex", help="Print the public id (hex) alone, for scripts.")
    ] = False,
) -> None:
    """Print a key file's public id (hex of the public key), its libp2p peer id, and
    the full multiaddrs (with /p2p/) to hand out as --bootstrap for a node with this
    key listening on --port on this machine (one per interface address)."""
    path = file if file is not None else _key_path(directory, name)
    if not 0 < port <= 65535:
        fail(f"--port must be between 1 and 65535, not {port}")
    try:
        key = read_key(path, _passphrase(passphrase_file))
    except (KeyFileError, OSError) as exc:
        fail(str(exc))
    typer.echo(public_id(key))
    if hex_only:
        return
    from p2p_market.net.addrs import interface_ips
    from p2p_market.net.host import peer_id_of

    peer = peer_id_of(key.public_key).to_base58()
    typer.echo(f"peer id:   {peer}")
    ips = [ip for v in (4, 6) for ip in interface_ips(v)]
    remote = [ip for ip in ips if not ip.is_loopback] or ips
    for ip in remote:
        proto = "ip4" if ip.version == 4 else "ip6"
        typer.echo(f"bootstrap: /{proto}/{ip}/tcp/{port}/p2p/{peer}")


DEVNET_README = """\
# Devnet keys: PUBLIC and INSECURE

**WARNING: these keys are NOT secret. Anyone can derive every one of them from its
name** (the seed is `SHA-256("{prefix}" + name)`, see
`p2p_market.core.crypto.devnet_key`). They exist so that simulations, tests and the
demo are reproducible byte for byte. **Never use them for anything of value, and never
run a node on a public network with them.**

The files are unencrypted PKCS#8 PEM (see `../README.md`). Regenerate them with:

    p2p-market keys devnet --dir keys/devnet

| name | public id |
|---|---|
{rows}
"""


@keys_app.command("devnet")
def keys_devnet(directory: DirOpt = Path("keys/devnet")) -> None:
    """(Re)write the deterministic, PUBLIC, INSECURE devnet key files."""
    rows = []
    try:
        for name in DEVNET_NAMES:
            key = devnet_key(name)
            write_key(directory / f"{name}.pem", key, None, overwrite=True)
            rows.append(f"| {name} | `{public_id(key)}` |")
        readme = DEVNET_README.format(prefix=DEVNET_SEED_PREFIX.decode(), rows="\n".join(rows))
        (directory / "README.md").write_text(readme)
    except (KeyFileError, OSError) as exc:
        fail(str(exc))
    typer.echo(f"wrote {len(DEVNET_NAMES)} devnet key files and README.md to {directory}")
    typer.echo("WARNING: devnet keys are public and insecure: simulations and tests only.")


@app.command("demo")
def demo() -> None:
    """Run a deterministic in-memory market of devnet actors; check every node agrees."""
    result = run_demo()
    print_demo(result, Console(highlight=False))
    if not result.ok:
        raise typer.Exit(1)


def print_demo(result: DemoResult, console: Console) -> None:
    bids = styled_table("Bids (devnet provers)", collapse_padding=True)
    bids.add_column("prover")
    bids.add_column("public id")
    for col in ("price", "proof_time", "capacity"):
        bids.add_column(col, justify="right")
    for b in result.bids:
        bids.add_row(
            b.prover, b.public_id[:16] + "…", str(b.price), f"{b.proof_time} ms", str(b.capacity)
        )
    console.print(bids)
    console.print()
    asks = styled_table("Asks (caps: max price / max proof time)", collapse_padding=True)
    asks.add_column("ask")
    asks.add_column("requester")
    asks.add_column("prefer")
    asks.add_column("caps", justify="right")
    asks.add_column("replicas", justify="right")
    asks.add_column("state")
    asks.add_column("winners")
    asks.add_column("paid", justify="right")
    for a in result.asks:
        asks.add_row(
            a.id[:8],
            a.requester,
            a.prefer,
            f"{a.max_price} / {a.max_proof_time / 1000:g} s",
            str(a.replicas),
            a.state.upper(),
            "\n".join(a.winners) or "-",
            str(a.paid),
        )
    console.print(asks)
    console.print()
    seconds = (result.finished_at - result.started_at) / 1000
    console.print(
        f"{result.envelopes} envelopes, each delivered to all {len(result.nodes)} nodes, "
        f"over {seconds:g} s of virtual time."
    )
    for line in result.refused:
        console.print(f"  refused by {line}")
    console.print("state_hash() per node:")
    for n in result.nodes:
        console.print(f"  {n.node:<10} {n.state_hash}")
        for problem in n.violations:
            console.print(f"  {'':<10} [red]invariant violated: {problem}[/]")
    verdict = "[green]all nodes agree[/]" if result.agree else "[bold red]nodes DISAGREE[/]"
    checks = "no violations" if result.invariants_hold else "[bold red]VIOLATIONS[/]"
    reorgs = sum(n.reorgs for n in result.nodes)
    console.print(f"{verdict}; check_invariants(): {checks}; reorgs: {reorgs}")


@bench_app.command("core")
def bench_core(
    as_json: Annotated[bool, typer.Option("--json", help="One line of JSON.")] = False,
    bids: Annotated[int, typer.Option("--bids", min=1, help="Bids in the book.")] = 10_000,
) -> None:
    """Measure the core: ingest and verify rates, matcher against the full scan."""
    try:
        from p2p_market.bench.core import core_bench
    except ImportError as exc:
        fail(f"benchmark unavailable: {exc}")
    try:
        result = core_bench(bids=bids)
    except ValueError as exc:
        fail(str(exc))
    except AssertionError as exc:  # bench.BenchError: the core mishandled its inputs
        typer.echo(f"error: benchmark check failed: {exc}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(result))
        return
    table = Table(title=f"Core benchmark ({bids} bids)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    notes = []
    for field, value in result.items():
        if isinstance(value, str) and len(value) > 40:
            notes.append(f"{field}: {value}")
        elif isinstance(value, float):
            table.add_row(field, f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3f}")
        else:
            table.add_row(field, str(value))
    console = Console(highlight=False)
    console.print(table)
    for note in notes:
        console.print(note)


@bench_app.command("wan-switch")
def bench_wan_switch() -> None:
    """Measure the simulation's userspace WAN switch against a kernel veth pair, in
    the same run: round trips, datagrams forwarded per second, TCP throughput (JSON).
    Needs root and network namespaces (exit 2 otherwise)."""
    from p2p_market.bench.wan_switch import wan_switch_bench
    from p2p_market.localnet.wan.netns import NetnsError

    try:
        result = wan_switch_bench()
    except NetnsError as exc:
        fail(str(exc))
    typer.echo(json.dumps(result))


@bench_app.command("liveness")
def bench_liveness(
    count: Annotated[
        int, typer.Option("--count", min=10, max=10_000, help="Envelopes measured per run.")
    ] = 150,
) -> None:
    """Gossip latency between three healthy nodes while a fourth is frozen (SIGSTOP),
    before and after liveness, beside a run with nobody frozen: one line of JSON."""
    import trio

    from p2p_market.bench.liveness import liveness_bench

    typer.echo(json.dumps(trio.run(liveness_bench, count)))


@bench_app.command("net")
def bench_net(
    nodes: Annotated[int, typer.Option("--nodes", help="Node processes (2-32).")] = 10,
    publishers: Annotated[int, typer.Option("--publishers", help="Nodes that publish.")] = 3,
    step_s: Annotated[float, typer.Option("--step-s", help="Seconds of each rate step.")] = 5.0,
    start_rate: Annotated[
        float, typer.Option("--start-rate", help="First rate tried (orders/s in all).")
    ] = 4.0,
    max_rate: Annotated[float, typer.Option("--max-rate", help="Highest rate tried.")] = 4096.0,
    bisect: Annotated[int, typer.Option("--bisect", help="Bisection steps after doubling.")] = 2,
    frames_per_second: Annotated[
        float,
        typer.Option("--frames-per-second", help="Each node's frame budget, batched run."),
    ] = 2.0,
    as_json: Annotated[bool, typer.Option("--json", help="One line of JSON.")] = False,
) -> None:
    """Orders a second that N real node processes carry to every node within 2 s,
    with batching and without it, in one run; latency at half the batched rate; CPU
    per frame per node; one row per rate step."""
    from p2p_market.bench.net import Settings, net_bench

    settings = Settings(
        nodes=nodes,
        publishers=publishers,
        step_s=step_s,
        start_rate=start_rate,
        max_rate=max_rate,
        bisect=bisect,
        frames_per_second=frames_per_second,
    )
    try:
        settings.check()
    except ValueError as exc:
        fail(str(exc))
    if bisect < 0 or bisect > 10:
        fail("--bisect must be between 0 and 10")

    result = run_node_bench("net", net_bench, settings)
    if as_json:
        typer.echo(json.dumps(result))
    else:
        _net_table(result)


@bench_app.command("market")
def bench_market(
    seconds: Annotated[float, typer.Option("--seconds", help="Workload of each step (s).")] = 20.0,
    start_rate: Annotated[
        float, typer.Option("--start-rate", help="First ask rate tried (asks/s in all).")
    ] = 0.5,
    max_rate: Annotated[float, typer.Option("--max-rate", help="Highest ask rate tried.")] = 32.0,
    bisect: Annotated[int, typer.Option("--bisect", help="Bisection steps after doubling.")] = 2,
    provers: Annotated[
        int, typer.Option("--provers", help="Prover nodes (with a relay and 2 requesters).")
    ] = 5,
    capacity: Annotated[int, typer.Option("--capacity", help="Each prover's slots.")] = 32,
    frames_per_second: Annotated[
        float, typer.Option("--frames-per-second", help="Every node's frame budget.")
    ] = 2.0,
    as_json: Annotated[bool, typer.Option("--json", help="One line of JSON.")] = False,
) -> None:
    """Asks a second the real market (relay, provers, requesters; minimal pow work)
    serves with assignment p99 <= 3 s and every check passing, at stepped ask rates,
    each step a whole simulate run: CPU per ask per node, envelopes per frame and
    what bound each step."""
    from p2p_market.bench.market import MarketSettings, market_bench

    settings = MarketSettings(
        seconds=seconds,
        start_rate=start_rate,
        max_rate=max_rate,
        bisect=bisect,
        provers=provers,
        capacity=capacity,
        frames_per_second=frames_per_second,
    )
    try:
        settings.check()
    except ValueError as exc:
        fail(str(exc))

    def progress(line: str) -> None:
        typer.echo(f"bench market: {line}", err=True)

    try:
        result = market_bench(settings, progress)
    except KeyboardInterrupt:
        typer.echo("error: interrupted", err=True)
        raise typer.Exit(130) from None
    if as_json:
        typer.echo(json.dumps(result))
        return
    table = Table(title=f"Market benchmark ({seconds:g} s a step)")
    columns = ("rate", "placed", "assigned", "assign_p50_ms", "assign_p99_ms", "checks_ok",
               "cpu_ms_per_ask_per_node", "envelopes_per_frame", "frames_per_s",
               "bound_by")  # fmt: skip
    for column in columns:
        table.add_column(column.replace("_", " "), justify="right")
    table.add_column("ok")
    for row in result["steps"]:
        table.add_row(*(str(row[c]) for c in columns), "yes" if row["passed"] else "no")
    console = Console(highlight=False)
    console.print(table)
    for key in ("max_asks_per_s", "cpu_ms_per_ask_per_node", "load_avg_before", "wall_s"):
        console.print(f"{key}: {result[key]}")


def _net_table(result: dict[str, Any]) -> None:
    columns = ("rate", "achieved_rate", "delivered", "p50_ms", "p99_ms", "frames_per_s")
    more = ("envelopes_per_frame", "cpu_ms_per_frame_per_node", "machine_busy_pct_while_sending",
            "bound_by")  # fmt: skip
    table = Table(title=f"Network benchmark ({result['nodes']} nodes)")
    table.add_column("batching")
    for column in (*columns, *more):
        table.add_column(column.replace("_", " "), justify="right")
    table.add_column("ok")
    for row in result["steps"]:
        mode = "on" if row["batching"] else "off"
        if row.get("latency_step"):
            mode += " (latency)"
        cells = [str(row[c]) for c in (*columns, *more)]
        table.add_row(mode, *cells, "yes" if row["passed"] else "no")
    console = Console(highlight=False)
    console.print(table)
    for key in (
        "batched_orders_per_s", "unbatched_orders_per_s", "batching_gain", "p50_ms", "p99_ms",
        "cpu_ms_per_frame_per_node", "cpu_ms_per_frame_per_node_above_idle",
        "idle_cpu_ms_per_s_per_node", "envelopes_per_frame", "load_avg_before", "seconds",
    ):  # fmt: skip
        console.print(f"{key}: {result[key]}")


@bench_app.command("attacks")
def bench_attacks(
    attack: Annotated[
        list[str] | None,
        typer.Option("--attack", help="One attack (repeat for more); default: all of them."),
    ] = None,
    seconds: Annotated[
        float, typer.Option("--seconds", min=8.0, max=600.0, help="Workload length of each run.")
    ] = 30.0,
    as_json: Annotated[bool, typer.Option("--json", help="JSON, not a table.")] = False,
) -> None:
    """Attack real node processes, one attack at a time, beside the same run without
    it: honest asks proven and their latency, the victim's CPU and memory, and what
    each attack itself measured (bans, refusals). Exit 1 if a row misses its target."""
    from p2p_market.bench.attackers import ATTACKS
    from p2p_market.bench.attacks import run_attacks, to_json

    names = attack or list(ATTACKS)
    unknown = [n for n in names if n not in ATTACKS]
    if unknown:
        fail(f"unknown attack {unknown[0]!r}: use one of {', '.join(ATTACKS)}")
    result = run_attacks(ATTACKS, names, seconds)
    if as_json:
        typer.echo(to_json(result))
    else:
        _attack_table(result)
    if not result["ok"]:
        raise typer.Exit(1)


def _attack_table(result: dict[str, Any]) -> None:
    table = Table(title=f"Attacks ({result['seconds']:g} s each, victim {result['victim']})")
    for column in ("attack", "proven quiet", "proven attacked", "p99 quiet", "p99 attacked"):
        table.add_column(column, justify="left" if column == "attack" else "right")
    table.add_column("victim CPU %", justify="right")
    table.add_column("ok")
    table.add_column("why")
    for row in result["rows"]:
        q, a = row["quiet"], row["attacked"]
        table.add_row(
            row["attack"],
            f"{q['proven']}/{q['placed']}",
            f"{a['proven']}/{a['placed']}",
            str(q["p99_ms"]),
            str(a["p99_ms"]),
            f"{q['victim_cpu']} -> {a['victim_cpu']}",
            "yes" if row["ok"] else "[bold red]NO[/]",
            row["why"],
        )
    Console(highlight=False).print(table)


@node_app.command("run")
def node_run(
    config: Annotated[Path, typer.Option("--config", help="Node configuration (TOML).")],
    log_level: Annotated[
        str, typer.Option("--log-level", help="debug, info, warning or error.")
    ] = "info",
    announce: AnnounceOpt = None,
) -> None:
    r"""Run a node until Ctrl-C or SIGTERM: gossip, sync, storage, control API, metrics,
    and the roles its config names (its \[prover] and \[requester] sections; every key
    is in docs/config.md)."""
    from p2p_market.node.config import ConfigError, load_config, with_announce

    if log_level.lower() not in ("debug", "info", "warning", "error"):
        fail(f"unknown log level {log_level!r}: use debug, info, warning or error")
    announced = check_announce(announce)
    try:
        cfg = with_announce(load_config(config), announced)
        passphrase = _passphrase(cfg.passphrase_file)
        key = read_key(cfg.key_file, passphrase)
    except (ConfigError, KeyFileError, OSError) as exc:
        fail(str(exc))
    from p2p_market.cli.joining import resolve_listed
    from p2p_market.cli.prover import join_if_needed
    from p2p_market.node.service import configure_logging
    from p2p_market.roles.wiring import plan_from_config, serve

    cfg = resolve_listed(cfg, config.parent)
    spec = cfg.roles.get("prover", {}).get("market")
    if isinstance(spec, str):
        cfg = join_if_needed(spec, cfg, config.parent)
    try:
        cfg, plan = plan_from_config(cfg, config.parent)
    except ConfigError as exc:
        fail(str(exc))
    configure_logging(log_level)
    run_node(serve, cfg, key, plan)


for commands in (templates, market, prover, request, control, asks, proof):
    commands.register(app)
register_bench_proofs(bench_app)
register_bench_frames(bench_app)
register_simulate(app)
register_dst(app)
register_fuzz(app)
register_config(app)


def main() -> None:
    app(prog_name="p2p-market")
