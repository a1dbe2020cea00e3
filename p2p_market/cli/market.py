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
    name: Annotated[str, typer.Option("--name", help="The market's name (1..64 characters).")],
    proof_system: Annotated[
        str,
        typer.Option("--proof-system", help="pow (the built-in DEMO proof of work) or external."),
    ],
    out: Annotated[Path, typer.Option("--out", help="Where to write the descriptor (TOML).")],
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
    --market FILE (or copy it into their markets/ directory and use the id)."""
    if proof_system not in ("pow", "external"):
        fail(f"unknown proof system {proof_system!r}: use pow or external")
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


@market_app.command("list")
def market_list(
    directory: Annotated[
        Path, typer.Option("--dir", help="Directory of descriptor files (*.toml).")
    ] = MARKETS_DIR,
) -> None:
    """List devnet and the descriptor files in DIR, with their ids."""
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


def register(app: typer.Typer) -> None:
    app.add_typer(market_app, name="market")
