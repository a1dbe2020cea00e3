"""The prover operator's commands, asking a running prover node through its control
API (node/api.py /v1/prover/...): `prover bid show|update|pause|resume|withdraw`,
`prover jobs`, `prover earnings`.

What changes the bid needs the node's API token (`--api-token-file`, or
P2P_MARKET_API_TOKEN); the reads send it only if given. Exit status, as the other
control commands (control.py): 0 done; 1 the node cannot be reached or could not
do it (its bid refused); 2 bad input (an argument, or what the node calls bad).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from p2p_market.cli.common import api_client, api_errors, fail, styled_table
from p2p_market.cli.control import ApiOpt, JsonOpt

TokenOpt = Annotated[
    Path | None,
    typer.Option(
        "--api-token-file",
        "--token-file",
        help="The node's API token file (its ready line names it: api_token_file),"
        " needed to change the bid; default: the token in P2P_MARKET_API_TOKEN.",
        show_default=False,
    ),
]

bid_app = typer.Typer(
    help="Show or change the running prover's bid (its control API).", no_args_is_help=True
)


def _show_bid(bid: dict[str, Any]) -> None:
    console = Console(highlight=False)

    def line(label: str, text: str) -> None:
        console.print(f"{label:<11}{text}", markup=False)

    line("bid", f"{bid['state']} in market {str(bid['market'])[:16]}…")
    line("price", f"{bid['price']} per unit of work")
    line("proof time", f"{bid['proof_time']} ms")
    running = int(bid["running"])
    extra = f" (running {running} at once until earlier work is done)"
    line("capacity", f"{bid['capacity']}" + (extra if running != bid["capacity"] else ""))
    line("max size", str(bid["max_size"]))
    line("ttl", f"{bid['bid_ttl_ms']} ms, re-posted at half its life while active")
    line("current", bid["bid"] or "none in the book")


def _changed(bid: dict[str, Any], as_json: bool, done: str) -> None:
    """The answer to a change: the node's verdict on the bid it signed decides the
    exit status (1 if it refused it)."""
    submitted = bid.get("submitted")
    if as_json:
        typer.echo(json.dumps(bid))
    if submitted is not None and submitted.get("status") != "accept":
        why = f"{submitted.get('status')} {submitted.get('reason')}"
        detail = f": {submitted['detail']}" if submitted.get("detail") else ""
        fail(f"the node did not take the new bid ({why}){detail}", 1)
    if as_json:
        return
    typer.echo(done)
    if not bid.get("kept", True):
        typer.echo("warning: not written to the role store: lost at the next restart", err=True)
    _show_bid(bid)


@bid_app.command("show")
def bid_show(api: ApiOpt, as_json: JsonOpt = False, api_token_file: TokenOpt = None) -> None:
    """The prover's bid: the terms it signs and re-posts, and whether it is paused."""
    client = api_client(api, api_token_file)
    with api_errors():
        bid = client.prover_bid()
    if as_json:
        typer.echo(json.dumps(bid))
        return
    _show_bid(bid)


@bid_app.command("update")
def bid_update(
    api: ApiOpt,
    price: Annotated[
        int | None, typer.Option("--price", help="Price per proof (per unit of work).")
    ] = None,
    proof_time: Annotated[
        int | None, typer.Option("--proof-time", help="Milliseconds promised per proof.")
    ] = None,
    capacity: Annotated[
        int | None, typer.Option("--capacity", help="Proofs at once (the node runs that many).")
    ] = None,
    max_size: Annotated[
        int | None, typer.Option("--max-size", help="The largest ask size taken.")
    ] = None,
    ttl_ms: Annotated[
        int | None, typer.Option("--ttl-ms", help="The bid's life in ms (re-posted at half).")
    ] = None,
    as_json: JsonOpt = False,
    api_token_file: TokenOpt = None,
) -> None:
    """Change the bid's terms: posted at once, re-posted from then on, and kept for
    the node's next start (unless its config's terms change meanwhile)."""
    given = {
        "price": price,
        "proof_time": proof_time,
        "capacity": capacity,
        "max_size": max_size,
        "bid_ttl_ms": ttl_ms,
    }
    changes = {k: v for k, v in given.items() if v is not None}
    if not changes:
        fail("nothing to change: give --price, --proof-time, --capacity, --max-size or --ttl-ms")
    client = api_client(api, api_token_file, acting="prover bid update")
    with api_errors():
        bid = client.update_bid(changes)
    _changed(bid, as_json, "bid updated")


def _action(action: str, done: str, doc: str) -> None:
    def command(api: ApiOpt, as_json: JsonOpt = False, api_token_file: TokenOpt = None) -> None:
        client = api_client(api, api_token_file, acting=f"prover bid {action}")
        with api_errors():
            bid = client.bid_action(action)
        _changed(bid, as_json, done)

    command.__doc__ = doc
    bid_app.command(action)(command)


_action(
    "pause",
    "paused: no new commits, out of every node's matching",
    "Stop taking asks: no new commits, no re-posts, and a signed bid that takes no"
    " ask supersedes this one (protocol v1 has no bid withdrawal). Work already won"
    " goes on. `resume` undoes it.",
)
_action(
    "resume",
    "resumed: the bid is posted again",
    "Post the bid's terms again and take asks.",
)
_action(
    "withdraw",
    "withdrawn: no new commits, out of every node's matching",
    "Leave the market: as pause (the same signed bid), the state shown as withdrawn."
    " Work already won goes on. `resume` undoes it.",
)


def _ago(now_ms: int, at: int | None) -> str:
    if at is None:
        return "-"
    return f"{max(0, now_ms - at) / 1000:.1f} s ago"


def jobs(api: ApiOpt, as_json: JsonOpt = False, api_token_file: TokenOpt = None) -> None:
    """The prover's current and recent jobs (since the node started): ask, state,
    price, when proving started and how long it took."""
    import time

    client = api_client(api, api_token_file)
    with api_errors():
        listing = client.prover_jobs()
    if as_json:
        typer.echo(json.dumps(listing))
        return
    now = int(time.time() * 1000)
    table = styled_table(f"jobs ({listing['running']} running), the newest first")
    for col in ("ask", "state", "price", "committed", "started", "proving"):
        table.add_column(col)
    for job in listing["jobs"]:
        proving = "-" if job["prove_ms"] is None else f"{job['prove_ms']} ms"
        table.add_row(
            job["ask"][:16] + "…",
            job["state"],
            str(job["price"]),
            _ago(now, job["committed"]),
            _ago(now, job["started"]),
            proving,
        )
    Console(highlight=False).print(table if listing["jobs"] else "no jobs yet")


def earnings(api: ApiOpt, as_json: JsonOpt = False, api_token_file: TokenOpt = None) -> None:
    """What the prover's accepted proofs earned since the node started, per market."""
    client = api_client(api, api_token_file)
    with api_errors():
        earned = client.prover_earnings()
    if as_json:
        typer.echo(json.dumps(earned))
        return
    n = earned["paid_proofs"]
    typer.echo(f"earned {earned['earned']} from {n} paid proof{'s' if n != 1 else ''}")
    table = styled_table()
    for col in ("market", "earned", "paid proofs"):
        table.add_column(col)
    for row in earned["markets"]:
        table.add_row(row["market"][:16] + "…", str(row["earned"]), str(row["paid_proofs"]))
    Console(highlight=False).print(table)


def register(prover_app: typer.Typer) -> None:
    prover_app.add_typer(bid_app, name="bid")
    prover_app.command("jobs")(jobs)
    prover_app.command("earnings")(earnings)
