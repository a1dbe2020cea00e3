"""`p2p-market asks`: the asks a running node holds (GET /v1/asks); with --mine only
those its own key signed, i.e. what its requester placed (`request --api`, the
SDK, POST /v1/asks), with state, winners and prices: how a requester finds an ask
again, to fetch its proof later (`proof fetch`, cli/proof.py).

A public read: no token needed. Exit status: 0 listed; 1 no node there (or no
usable answer); 2 bad input.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.console import Console

from p2p_market.cli.common import (
    ApiTokenOpt,
    api_client,
    api_errors,
    devnet_names,
    fail,
    market_arg,
    short,
    styled_table,
)
from p2p_market.cli.control import ApiOpt
from p2p_market.core.envelope import market_id
from p2p_market.markets.descriptor import is_market_id
from p2p_market.node.api_asks import STATES


def asks(
    api: ApiOpt,
    mine: Annotated[
        bool,
        typer.Option("--mine", help="Only the asks the node's own key placed (its requester's)."),
    ] = False,
    market: Annotated[
        str | None,
        typer.Option(
            "--market", help="devnet, a descriptor file or a market id (default: all of them)."
        ),
    ] = None,
    state: Annotated[
        str | None,
        typer.Option("--state", help=f"Only asks in this state: {', '.join(STATES)}."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help='The node\'s answer as it is: {"asks": [...]}.')
    ] = False,
    api_token_file: ApiTokenOpt = None,
) -> None:
    """The asks a running node holds, oldest first: state, winners, prices, paid."""
    if state is not None and state not in STATES:
        fail(f"--state must be one of {', '.join(STATES)}, not {state!r}")
    wanted = None
    if market is not None:
        wanted = market.lower() if is_market_id(market) else market_id(market_arg(market)).hex()
    client = api_client(api, api_token_file)
    with api_errors():
        found = client.asks(mine=mine, market=wanted, state=state)
        names = {m["id"]: str(m.get("name", "?")) for m in client.markets()}
    if as_json:
        typer.echo(json.dumps({"asks": found}))
        return
    console = Console(highlight=False)
    if not found:
        console.print("no asks" + (" placed by this node" if mine else ""), markup=False)
        return
    console.print(_table(found, names, mine))


def _table(found: list[dict[str, Any]], markets: dict[str, str], mine: bool) -> Any:
    keys = devnet_names()
    table = styled_table("asks placed by this node" if mine else "asks")
    for col in ("ask", "market", "state", "placed", "cap", "winners", "paid"):
        table.add_column(col, justify="right" if col in ("cap", "paid") else "left")
    if not mine:
        table.add_column("requester")
    for a in found:
        winners = ", ".join(
            f"{short(w, keys)} {price} {slot}"
            for w, price, slot in zip(a["winners"], a["prices"], a["slot_states"], strict=True)
        )
        row = [
            a["id"][:16] + "…",
            markets.get(a["market"], a["market"][:8] + "…"),
            str(a["state"]).upper(),
            _since(int(a["timestamp"])),
            str(a["max_price"]),
            winners or "-",
            str(a["paid"]),
        ]
        if not mine:
            row.append(short(a["requester"], keys))
        table.add_row(*row)
    return table


def _since(ms: int) -> str:
    delta = max(0.0, time.time() - ms / 1000)
    return f"{delta:.0f} s ago" if delta < 120 else f"{delta / 60:.0f} min ago"


def register(app: typer.Typer) -> None:
    app.command("asks")(asks)
