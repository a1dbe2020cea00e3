"""What every `p2p-market` command shares: one-line failures, running a node, the
market and address arguments, names for keys, and the control-API client."""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich import box
from rich.table import Table
from typer.core import TyperGroup

from p2p_market.core.crypto import devnet_key
from p2p_market.markets.descriptor import MarketSpecError, resolve_market
from p2p_market.markets.devnet import DEVNET_NAMES

if TYPE_CHECKING:
    from p2p_market.core.messages import Market
    from p2p_market.node.api_client import ApiClient

T = TypeVar("T")

LOG_LEVELS = ("debug", "info", "warning", "error")


def fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr, `error: ...`, and exit status `code` (2: bad input)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def run_node_bench(label: str, bench: Callable[..., Awaitable[Any]], settings: Any) -> Any:
    """Run a benchmark of node processes under trio, its progress on stderr as
    `bench LABEL: ...`. BenchFailed (the network could not be run) is one line and
    exit 1; Ctrl-C is `error: interrupted` and 130, once the bench has stopped its
    nodes on the way out."""
    import trio

    from p2p_market.bench.net import BenchFailed

    def progress(line: str) -> None:
        typer.echo(f"bench {label}: {line}", err=True)

    try:
        return trio.run(bench, settings, progress)
    except BenchFailed as exc:
        fail(str(exc), 1)
    except KeyboardInterrupt:
        fail("interrupted", 130)


class OneLineErrors(TyperGroup):
    """The top-level command group: a usage error (a missing or unknown option, a
    value of the wrong type) is one line `error: ...` and exit status 2 too, instead
    of click's usage banner and error box."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        run = functools.partial(
            super().main,
            args,
            prog_name,
            complete_var,
            standalone_mode=False,
            windows_expand_args=windows_expand_args,
            **extra,
        )
        if not standalone_mode:
            return run()
        from typer._click.exceptions import NoArgsIsHelpError, UsageError

        try:
            code = run()
        except NoArgsIsHelpError as exc:  # the help is printed already
            sys.exit(exc.exit_code)
        except UsageError as exc:
            message = " ".join(exc.format_message().split())
            where = exc.ctx.command_path if exc.ctx is not None else "p2p-market"
            typer.echo(f"error: {message} (see {where} --help)", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def styled_table(title: str | None = None, *, collapse_padding: bool = False) -> Table:
    """The one table style of every command's output: a header rule, no frame."""
    return Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=collapse_padding,
    )


def check_log_level(level: str) -> str:
    if level.lower() not in LOG_LEVELS:
        fail(f"unknown log level {level!r}: use debug, info, warning or error")
    return level


def run_node(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """`trio.run(fn, *args)`, reporting what stops a node as one line: a StorageError
    (its data dir or log cannot be used: read-only, corrupt, disk full) with exit
    status 1, the node could not run; an OSError from starting it (a port in use, an
    address that cannot be bound: the arguments or config name them) or an unusable
    API token file with 2."""
    import trio

    from p2p_market.node.api_token import TokenError
    from p2p_market.node.storage import StorageError

    try:
        return trio.run(fn, *args)
    except (OSError, StorageError, TokenError, BaseExceptionGroup) as exc:  # nurseries group
        storage = first_of(exc, StorageError)
        if storage is not None:
            fail(str(storage), 1)
        token = first_of(exc, TokenError)
        if token is not None:
            fail(str(token))
        started = first_of(exc, OSError)
        if started is None:
            raise
        fail(f"cannot start the node: {started}")


E = TypeVar("E", bound=BaseException)


def first_of(exc: BaseException, kind: type[E]) -> E | None:
    """The first `kind` in `exc`, looking into exception groups (depth first)."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = first_of(inner, kind)
            if found is not None:
                return found
    return None


DEFAULT_LISTEN = "/ip4/127.0.0.1/tcp/4701"
"""The listen address of a node started from the command line (node/config.py
DEFAULT_PORT: a fixed port, so its address survives a restart)."""


def market_arg(spec: str) -> Market:
    try:
        return resolve_market(spec)
    except MarketSpecError as exc:
        fail(str(exc))


def devnet_names() -> dict[bytes, str]:
    return {devnet_key(n).public_key: n for n in DEVNET_NAMES}


def who(public_key: str | bytes, names: dict[bytes, str] | None = None) -> str:
    """A prover or requester for people: `prover-1 (3b6a27bc…)` for devnet keys."""
    raw = bytes.fromhex(public_key) if isinstance(public_key, str) else public_key
    name = (names if names is not None else devnet_names()).get(raw)
    short = raw.hex()[:12] + "…"
    return f"{name} ({short})" if name else short


def short(public_key: str, names: dict[bytes, str]) -> str:
    """A devnet name, or the first hex digits: for crowded tables."""
    return names.get(bytes.fromhex(public_key)) or public_key[:8] + "…"


def check_addrs(values: list[str], flag: str, *, peer: bool) -> tuple[str, ...]:
    from p2p_market.sdk import check_bootstrap

    if peer:
        try:
            return check_bootstrap(values)
        except ValueError as exc:
            fail(f"{flag}: {exc}")
    import multiaddr

    for value in values:
        try:
            multiaddr.Multiaddr(value)
        except Exception as exc:  # the library raises several unrelated types
            fail(f"{flag}: not a multiaddr: {value!r} ({exc})")
    return tuple(values)


AnnounceOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--announce",
        help="An address to tell peers instead of the listen addresses (a public or NAT"
        " address, /dns4/NAME/tcp/PORT); repeatable. Default: the listen addresses, a"
        " wildcard (0.0.0.0) as this machine's interface addresses.",
        show_default=False,
    ),
]


def check_announce(values: list[str] | None) -> tuple[str, ...]:
    """--announce values: multiaddrs of /ip4, /ip6, /dns4, /dns6 or /dns with /tcp,
    without /p2p/ (the node adds its own)."""
    addrs = check_addrs(values or [], "--announce", peer=False)
    for addr in addrs:
        parts = addr.split("/")
        if len(parts) < 5 or parts[1] not in ("ip4", "ip6", "dns4", "dns6", "dns"):
            fail(f"--announce: {addr!r} is not /ip4, /ip6 or /dns4 NAME with /tcp/PORT")
        if parts[3] != "tcp" or "/p2p/" in addr:
            fail(f"--announce: {addr!r} must be HOST/tcp/PORT, without /p2p/")
    return addrs


ApiTokenOpt = Annotated[
    Path | None,
    typer.Option(
        "--api-token-file",
        help="The node's API token file (its ready line names it: api_token_file),"
        " needed for what changes the node's state; default: the token in the"
        " environment variable P2P_MARKET_API_TOKEN.",
        show_default=False,
    ),
]


def api_client(url: str, token_file: Path | None = None, *, acting: str | None = None) -> ApiClient:
    """A client of the node at `url`, with the API token from `token_file`, else from
    P2P_MARKET_API_TOKEN. `acting` names a command that changes the node's state:
    without a token it stops here, in one line, before asking the node anything."""
    from p2p_market.node.api_client import ApiClient, ApiError
    from p2p_market.node.api_token import TOKEN_ENV, TokenError, read_token, token_from_env

    try:
        token = read_token(token_file) if token_file is not None else token_from_env()
        client = ApiClient(url, token=token)
    except (ApiError, TokenError) as exc:
        fail(exc.message if isinstance(exc, ApiError) else str(exc))
    if acting is not None and token is None:
        fail(
            f"{acting} needs the node's API token: --api-token-file PATH (the node's ready"
            f" line names it) or {TOKEN_ENV}"
        )
    return client


@contextlib.contextmanager
def api_errors() -> Any:
    """An ApiError as one line: exit 2 when the request was bad (a malformed API
    address, a 4xx answer), 1 when it could not be carried out: no node answers at
    the address (it names it), or the node failed (5xx, an answer that makes no
    sense)."""
    from p2p_market.node.api_client import ApiAddressError, ApiError

    try:
        yield
    except ApiError as exc:
        bad_input = isinstance(exc, ApiAddressError) or 400 <= exc.status < 500
        fail(str(exc), 2 if bad_input else 1)
