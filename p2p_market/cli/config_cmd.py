"""`p2p-market config reference`: the key tables of docs/config.md written from the
config schema (node/config_schema.py), so the reference says what the parsers check."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from p2p_market.cli.common import fail

config_app = typer.Typer(help="The node config file.", no_args_is_help=True)

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"


@config_app.command("reference")
def reference(
    doc: Annotated[
        Path,
        typer.Option("--doc", help="The reference to write its generated tables into."),
    ] = DOC,
    check: Annotated[
        bool,
        typer.Option("--check", help="Write nothing; exit 1 if the file is not up to date."),
    ] = False,
) -> None:
    """Write the key tables of docs/config.md (between its `generated` markers) from
    the schema: types, bounds, defaults, descriptions. The prose around them stays."""
    from p2p_market.node.config_schema import render_reference

    try:
        text = doc.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read {doc}: {exc.strerror}")
    except UnicodeDecodeError:
        fail(f"{doc}: not UTF-8 text")
    try:
        written = render_reference(text)
    except ValueError as exc:
        fail(str(exc))
    if written == text:
        typer.echo(f"{doc} is up to date")
        return
    if check:
        fail(f"{doc} differs from the schema: run p2p-market config reference", 1)
    try:
        doc.write_text(written, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {doc}: {exc.strerror}", 1)
    typer.echo(f"{doc}: tables written from the schema")


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
