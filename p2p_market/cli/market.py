"""`p2p-market market create | list`: write and list market descriptors."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from p2p_market.cli.common import (
    fail,
    styled_table,
)
from p2p_market.core.envelope import market_id
from p2p_market.core.messages import Market, MessageError
from p2p_market.markets.descriptor import (
    MARKETS_DIR,
    MarketSpecError,
    known_markets,
    write_descriptor,
)

market_app = typer.Typer(
    help="Create and list market descriptors.\n\n"
    "A market is announced by handing out its descriptor file: every node that "
    "configures the same file (--market FILE, or \\[\\[markets]] descriptor = FILE in a "
    "node config) follows the same market, whose id is the hash of the descriptor.",
    no_args_is_help=True,
)


@market_app.command("create")
def market_create(
    proof_system: Annotated[
        str,
        typer.Option(
            "--proof-system",
            help="pow (the built-in DEMO proof of work), external, groth16 or plonk.",
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="pow, external: the descriptor file to write (required). groth16, plonk:"
            " the directory for the descriptor (NAME.toml) and its artifacts/ (default"
            " markets/, where nodes look them up).",
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="The market's name (1..64 characters); groth16, plonk: default"
            " CIRCUIT-SYSTEM, with -devnet-INSECURE for a local setup.",
        ),
    ] = None,
    circuit: Annotated[
        Path | None,
        typer.Option("--circuit", help="groth16, plonk: the circom circuit (main component)."),
    ] = None,
    ptau: Annotated[
        Path | None,
        typer.Option(
            "--ptau",
            help="groth16, plonk: a powers-of-tau file from a ceremony (default: generate a"
            " small one locally: INSECURE, devnet only).",
        ),
    ] = None,
    zkey: Annotated[
        Path | None,
        typer.Option(
            "--zkey",
            help="groth16: the final zkey of a phase-2 ceremony for this circuit (needs the"
            " --ptau it started from; checked with snarkjs zkey verify).",
        ),
    ] = None,
    difficulty: Annotated[
        int | None,
        typer.Option("--difficulty", help="pow: leading zero bits (default 16; 0 for external)."),
    ] = None,
    verifier: Annotated[
        str | None,
        typer.Option(
            "--verifier",
            help="external: the verify command template, e.g. 'zkvm verify {inputs} {proof}'.",
        ),
    ] = None,
    commit_window_ms: Annotated[
        int, typer.Option("--commit-window-ms", help="How long provers may commit to an ask.")
    ] = 3_000,
    stage_ms: Annotated[
        int, typer.Option("--stage-ms", help="Delay per rank for fallback provers.")
    ] = 500,
    skew_ms: Annotated[int, typer.Option("--skew-ms", help="Clock-skew tolerance.")] = 2_000,
    max_lifetime_ms: Annotated[
        int, typer.Option("--max-lifetime-ms", help="Longest an ask may live.")
    ] = 24 * 3600 * 1000,
    nonce: Annotated[int, typer.Option("--nonce", help="Tells apart otherwise equal markets.")] = 0,
) -> None:
    """Create a market: write its descriptor file and print its id.

    To announce the market, hand out the file: provers and requesters pass it as
    --market FILE (or copy it into their markets/ directory and use the id).

    groth16, plonk: compiles --circuit, runs the setup and pins the artifacts (the
    circuit's wasm, the proving key, the verification key) by SHA-256 in the
    market's verifier field; hand out the artifacts/ directory with the descriptor."""
    if proof_system not in ("pow", "external", "groth16", "plonk"):
        fail(f"unknown proof system {proof_system!r}: use pow, external, groth16 or plonk")
    if proof_system in ("groth16", "plonk"):
        _create_circuit_market(
            proof_system,
            name=name,
            circuit=circuit,
            ptau=ptau,
            zkey=zkey,
            out=MARKETS_DIR if out is None else out,
            commit_window_ms=commit_window_ms,
            stage_ms=stage_ms,
            skew_ms=skew_ms,
            max_lifetime_ms=max_lifetime_ms,
            nonce=nonce,
        )
        return
    if name is None:
        fail("--name is required")
    if out is None:
        fail("--out is required: the descriptor file to write")
    if circuit is not None or ptau is not None or zkey is not None:
        fail("--circuit, --ptau and --zkey are for groth16 and plonk markets")
    if proof_system == "pow":
        verifier = "sha256-leading-zero-bits" if verifier is None else verifier
        difficulty = 16 if difficulty is None else difficulty
    else:
        if not verifier:
            fail("an external market needs --verifier: the command that checks a proof")
        from p2p_market.proving.external import parse_template

        try:
            parse_template(verifier, "verify")
        except ValueError as exc:
            fail(str(exc))
        difficulty = 0 if difficulty is None else difficulty
    try:
        market = Market(
            name=name,
            proof_system=proof_system,
            verifier=verifier,
            difficulty=difficulty,
            commit_window_ms=commit_window_ms,
            stage_ms=stage_ms,
            skew_ms=skew_ms,
            max_lifetime_ms=max_lifetime_ms,
            created_at=time.time_ns() // 1_000_000,
            nonce=nonce,
        )
    except MessageError as exc:
        fail(f"bad market: {exc}")
    try:
        write_descriptor(out, market)
    except MarketSpecError as exc:
        fail(str(exc))
    typer.echo(f"market id:  {market_id(market).hex()}")
    typer.echo(f"descriptor: {out}")
    typer.echo(f"announce it by handing out {out}; nodes use --market {out}")


def _create_circuit_market(
    system: str,
    *,
    name: str | None,
    circuit: Path | None,
    ptau: Path | None,
    zkey: Path | None,
    out: Path,
    commit_window_ms: int,
    stage_ms: int,
    skew_ms: int,
    max_lifetime_ms: int,
    nonce: int,
) -> None:
    from p2p_market.proving.backend import ProvingError
    from p2p_market.proving.snark_setup import setup_circuit

    if circuit is None:
        fail(f"a {system} market needs --circuit: the circom circuit it proves")
    if not circuit.is_file():
        fail(f"circuit not found: {circuit}")
    from p2p_market.proving.snark import node_binary, node_modules

    try:  # before any output: the tools are there, or one line says which is not
        node_binary()
        node_modules()
    except ProvingError as exc:
        fail(str(exc))
    if ptau is not None and not ptau.is_file():
        fail(f"powers-of-tau file not found: {ptau}")
    if zkey is not None:
        if system != "groth16":
            fail("--zkey is for groth16 (a plonk setup needs only the --ptau)")
        if ptau is None:
            fail("--zkey needs the --ptau its ceremony started from (to verify the zkey)")
        if not zkey.is_file():
            fail(f"zkey file not found: {zkey}")
    if out.exists() and not out.is_dir():
        fail(f"--out {out}: a {system} market is written to a directory")
    artifacts = out / "artifacts"
    typer.echo(f"compiling {circuit} and running the {system} setup ...")
    try:
        made = setup_circuit(system, circuit, artifacts, ptau=ptau, zkey_in=zkey)
    except ProvingError as exc:
        fail(str(exc))
    if name is None:
        suffix = "-devnet-INSECURE" if made.insecure else ""
        name = f"{circuit.stem[: 64 - len(system) - len(suffix) - 1]}-{system}{suffix}"
    try:
        market = Market(
            name=name,
            proof_system=system,
            verifier=made.ref.verifier(),
            difficulty=0,
            commit_window_ms=commit_window_ms,
            stage_ms=stage_ms,
            skew_ms=skew_ms,
            max_lifetime_ms=max_lifetime_ms,
            created_at=time.time_ns() // 1_000_000,
            nonce=nonce,
        )
    except MessageError as exc:
        fail(f"bad market: {exc}")
    path = out / f"{name}.toml"
    try:
        write_descriptor(path, market)
    except MarketSpecError as exc:
        fail(str(exc))
    times = ", ".join(f"{k} {v:.1f}s" for k, v in made.timings.items())
    typer.echo(f"constraints: {made.constraints}; {times}")
    if made.power is not None:
        typer.echo(
            f"WARNING: INSECURE devnet setup: the powers of tau (2^{made.power}) were made"
            " here by one contribution; whoever ran this can forge proofs. Use --ptau"
            " with a ceremony's file for a real market."
        )
    elif made.insecure:
        typer.echo(
            "WARNING: INSECURE: groth16's phase 2 was one local contribution; whoever ran"
            " this can forge proofs. A real groth16 market needs a phase-2 ceremony."
        )
    for kind, p in made.paths.items():
        typer.echo(f"{kind + ':':10s}  {p}")
    typer.echo(f"market id:  {market_id(market).hex()}")
    typer.echo(f"descriptor: {path}")
    typer.echo(
        f"announce it: a node that follows it (--market {path}, the artifacts in"
        " markets/artifacts or $P2P_MARKET_ARTIFACTS) serves both to its peers, who need"
        f" only the id (--market {market_id(market).hex()} --bootstrap <that node>);"
        f" or hand out {path} and {artifacts}/"
    )


@market_app.command("list")
def market_list(
    directory: Annotated[
        Path, typer.Option("--dir", help="Directory of descriptor files (*.toml).")
    ] = MARKETS_DIR,
    network: Annotated[
        bool,
        typer.Option(
            "--network",
            help="List the markets a running node's peers announce instead (needs --api).",
        ),
    ] = False,
    api: Annotated[
        str | None,
        typer.Option(
            "--api",
            help="With --network: the node's control API, http://127.0.0.1:PORT.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """List devnet and the descriptor files in DIR, with their ids; with --network,
    the markets a running node's peers announce (and those it follows)."""
    if network:
        _list_network(api)
        return
    if api is not None:
        fail("--api goes with --network")
    table = styled_table()
    for col in ("name", "id", "system", "difficulty", "window / stage / skew", "source"):
        table.add_column(col)
    problems = []
    for known in known_markets([directory]):
        m = known.market
        if m is None:
            problems.append(known.error)
            continue
        table.add_row(
            m.name,
            market_id(m).hex(),
            m.proof_system,
            str(m.difficulty),
            f"{m.commit_window_ms} / {m.stage_ms} / {m.skew_ms} ms",
            known.source,
        )
    Console(highlight=False, width=200).print(table)
    for problem in problems:
        typer.echo(f"warning: skipped {problem}", err=True)


def _list_network(api: str | None) -> None:
    """The node's GET /v1/markets/known, as a table."""
    from p2p_market.cli.common import api_client, api_errors, who

    if api is None:
        fail("--network needs --api http://127.0.0.1:PORT: a running node's control API")
    client = api_client(api)
    with api_errors():
        listing = client.known_markets()
    table = styled_table()
    for col in ("name", "id", "system", "announced by", "peers", "followed"):
        table.add_column(col)
    for entry in listing:
        announcers = [str(a) for a in entry.get("announcers", [])]
        shown = ", ".join(who(a) for a in announcers[:3])
        if len(announcers) > 3:
            shown += f" and {len(announcers) - 3} more"
        table.add_row(
            str(entry.get("name")),
            str(entry.get("id")),
            str(entry.get("proof_system")),
            shown,
            str(entry.get("peers")),
            "yes" if entry.get("followed") else "",
        )
    Console(highlight=False, width=220).print(table)
    if not listing:
        typer.echo("no market announced yet (announcements come at start and every few minutes)")


def register(app: typer.Typer) -> None:
    app.add_typer(market_app, name="market")
