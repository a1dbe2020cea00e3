"""What every `p2p-market` command shares: one-line failures and running a node."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import typer

T = TypeVar("T")

LOG_LEVELS = ("debug", "info", "warning", "error")


def fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr, `error: ...`, and exit status `code` (2: bad input)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def check_log_level(level: str) -> str:
    if level.lower() not in LOG_LEVELS:
        fail(f"unknown log level {level!r}: use debug, info, warning or error")
    return level


def run_node(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """`trio.run(fn, *args)`, reporting an OSError from starting a node (a port in
    use, an address that cannot be bound) as one line and exit status 2."""
    import trio

    try:
        return trio.run(fn, *args)
    except (OSError, BaseExceptionGroup) as exc:  # e.g. the configured port is taken
        os_errors = exc.subgroup(OSError) if isinstance(exc, BaseExceptionGroup) else exc
        if os_errors is None:
            raise
        first: BaseException = os_errors
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        fail(f"cannot start the node: {first}")
