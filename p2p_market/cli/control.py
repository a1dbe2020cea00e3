"""The control-API commands: `cancel`, `status` and `book` ask a running node.

`cancel` changes the node's state, so it needs the node's API token
(`--api-token-file`, or P2P_MARKET_API_TOKEN); `status` and `book` read what is
public and send the token only if they are given one.

Exit status: 0 done; 1 the node refused, or cannot be reached; 2 bad input (an
argument, or a request the node calls bad).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from typing import Annotated, Any

import typer
from rich.console import Console, Group

from p2p_market.cli.common import (
    ApiTokenOpt,
    api_client,
    api_errors,
    devnet_names,
    fail,
    market_arg,
    short,
    styled_table,
    who,
)
from p2p_market.core.envelope import market_id
from p2p_market.markets.descriptor import is_market_id

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")

ApiOpt = Annotated[
    str,
    typer.Option(
        "--api",
        help="A running node's control API, http://127.0.0.1:PORT (the port is in its ready line).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="The node's JSON answer as it is.")]


def _ask_id(value: str) -> str:
    if _HEX64.fullmatch(value) is None:
        fail(f"an ask id is 64 hex characters, not {value!r}")
    return value.lower()


def cancel(
    ask_id: Annotated[str, typer.Argument(help="The ask's id (64 hex).", show_default=False)],
    api: ApiOpt,
    api_token_file: ApiTokenOpt = None,
) -> None:
    """Cancel an ask placed by that node's key, while nobody has won it (needs the
    node's API token)."""
    ask = _ask_id(ask_id)
    client = api_client(api, api_token_file, acting="cancel")
    with api_errors():
        result = client.cancel(ask)
    if result.status != "accept":
        detail = f": {result.detail}" if result.detail else ""
        fail(f"cancel refused ({result.status} {result.reason}){detail}", 1)
    typer.echo(f"cancelled ask {ask}")


def _ago(ms: int) -> str:
    delta = ms / 1000 - time.time()
    text = f"{abs(delta):.0f} s" if abs(delta) < 120 else f"{abs(delta) / 60:.0f} min"
    return f"in {text}" if delta >= 0 else f"{text} ago"


def status(
    ask_id: Annotated[str, typer.Argument(help="The ask's id (64 hex).", show_default=False)],
    api: ApiOpt,
    as_json: JsonOpt = False,
    api_token_file: ApiTokenOpt = None,
) -> None:
    """An ask as that node sees it: state, winners, prices, slot states."""
    client = api_client(api, api_token_file)
    ask = _ask_id(ask_id)
    with api_errors():
        view = client.ask(ask)
    if as_json:
        typer.echo(json.dumps(view))
        return
    names = devnet_names()
    console = Console(highlight=False)
    console.print(f"ask        {view['id']}", markup=False)
    console.print(f"market     {view['market']}", markup=False)
    console.print(f"state      [bold]{str(view['state']).upper()}[/]")
    console.print(f"requester  {who(view['requester'], names)}", markup=False)
    console.print(
        f"terms      max price {view['max_price']}, max proof time {view['max_proof_time']} ms,"
        f" prefer {view['prefer']}, replicas {view['replicas']}"
        + (", confidential" if view.get("confidential") else ""),
        markup=False,
    )
    console.print(f"expires    {_ago(int(view['expires_at']))}", markup=False)
    if view["winners"]:
        table = styled_table("winners")
        for col in ("prover", "price", "slot"):
            table.add_column(col)
        for prover, price, slot in zip(
            view["winners"], view["prices"], view["slot_states"], strict=True
        ):
            table.add_row(who(prover, names), str(price), slot)
        console.print(table)
    else:
        console.print("winners    none yet")
    console.print(f"paid       {view['paid']}", markup=False)


_STATE_ORDER = ("open", "assigned", "proven", "invalid_inputs", "expired", "cancelled")


def render_book(markets: list[dict[str, Any]], books: list[dict[str, Any]]) -> Group:
    names = devnet_names()
    parts: list[Any] = []
    for market, book_ in zip(markets, books, strict=True):
        title = f"{market.get('name', '?')} ({str(market['id'])[:16]}…)"
        asks = styled_table(f"asks in {title}, by state")
        for col in ("state", "ask", "requester", "cap", "max time", "prefer", "k"):
            asks.add_column(col)
        asks.add_column("winners")
        asks.add_column("paid", justify="right")
        order = {s: i for i, s in enumerate(_STATE_ORDER)}
        for a in sorted(book_["asks"], key=lambda a: (order.get(a["state"], 9), a["timestamp"])):
            asks.add_row(
                str(a["state"]).upper(),
                a["id"][:8] + "…",
                short(a["requester"], names),
                str(a["max_price"]),
                f"{a['max_proof_time']} ms",
                a["prefer"],
                str(a["replicas"]),
                ", ".join(
                    f"{short(w, names)} {s}"
                    for w, s in zip(a["winners"], a["slot_states"], strict=True)
                )
                or "-",
                str(a["paid"]),
            )
        bids = styled_table(f"bids in {title}, by price then time")
        for col in ("prover", "price", "proof time", "capacity", "expires"):
            bids.add_column(col)
        # the node's requester role's record of each prover (roles/reputation.py)
        rated = any("reputation" in b for b in book_["bids"])
        if rated:
            bids.add_column("our record")
        for b in sorted(book_["bids"], key=lambda b: (b["price"], b["proof_time"], b["prover"])):
            row = [
                short(b["prover"], names),
                str(b["price"]),
                f"{b['proof_time']} ms",
                str(b["capacity"]),
                _ago(int(b["expires_at"])),
            ]
            if rated:
                row.append(_record(b.get("reputation")))
            bids.add_row(*row)
        parts += [asks, "", bids, ""]
    return Group(*parts)


def _record(rep: dict[str, Any] | None) -> str:
    if not rep:
        return "-"
    text = f"{rep['accepted']} ok, {rep['timed_out']} timed out, {rep['invalid']} invalid"
    return text + (" [bold red]DENIED[/]" if rep.get("denied") else "")


def book(
    api: ApiOpt,
    market: Annotated[
        str | None,
        typer.Option(
            "--market", help="devnet, a descriptor file or a market id (default: all of them)."
        ),
    ] = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="Refresh every second until Ctrl-C.")
    ] = False,
    as_json: JsonOpt = False,
    api_token_file: ApiTokenOpt = None,
) -> None:
    """The order book as that node sees it: asks by state, bids by price and time."""
    client = api_client(api, api_token_file)
    wanted: str | None = None
    if market is not None:
        wanted = market.lower() if is_market_id(market) else market_id(market_arg(market)).hex()

    def fetch() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        with api_errors():
            followed = client.markets()
            chosen = [m for m in followed if wanted is None or m.get("id") == wanted]
            if wanted is not None and not chosen:
                fail(f"the node does not follow market {wanted[:16]}…")
            return chosen, [client.book(str(m["id"])) for m in chosen]

    if as_json:
        chosen, books = fetch()
        typer.echo(json.dumps({m["id"]: b for m, b in zip(chosen, books, strict=True)}))
        return
    console = Console(highlight=False)
    if not watch:
        console.print(render_book(*fetch()))
        return
    from rich.live import Live

    with (
        contextlib.suppress(KeyboardInterrupt),
        Live(render_book(*fetch()), console=console, refresh_per_second=4, screen=False) as live,
    ):
        while True:
            time.sleep(1.0)
            live.update(render_book(*fetch()))


def register(app: typer.Typer) -> None:
    app.command("cancel")(cancel)
    app.command("status")(status)
    app.command("book")(book)
