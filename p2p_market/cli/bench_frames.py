"""`p2p-market bench frames`: what one gossip frame costs each node under transport
variants, in one run (p2p_market/bench/frames.py), as a table or JSON.

Bad arguments, an unknown variant, `--profile` without py-spy: one line, exit 2. A
variant whose network cannot be run: its row says why, the others are measured, and
the command exits 1 after printing them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from p2p_market.cli.common import fail, run_node_bench, styled_table


def bench_frames(
    variants: Annotated[
        str,
        typer.Option(
            "--variants",
            help="Comma-separated, the first is the baseline (docs/transport.md lists them).",
        ),
    ] = "before,after",
    nodes: Annotated[int, typer.Option("--nodes", help="Node processes (2-32).")] = 10,
    publishers: Annotated[int, typer.Option("--publishers", help="Nodes that publish.")] = 3,
    rate: Annotated[float, typer.Option("--rate", help="Frames a second in all.")] = 8.0,
    seconds: Annotated[float, typer.Option("--seconds", help="Seconds measured.")] = 15.0,
    profile: Annotated[
        Path | None,
        typer.Option("--profile", help="Profile one receiving node with py-spy; files here."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One line of JSON.")] = False,
) -> None:
    """CPU per gossip frame per node under each transport variant (mesh degree,
    muxer, py-libp2p patches), one after the other in one run; ratios against the
    first."""
    # here, not at the top: the benchmark pulls in localnet and py-libp2p, which
    # every other command's start-up would pay for
    from p2p_market.bench.frames import FrameSettings, frames_bench

    names = tuple(v.strip() for v in variants.split(",") if v.strip())
    settings = FrameSettings(
        nodes=nodes,
        publishers=publishers,
        rate=rate,
        seconds=seconds,
        variants=names,
        profile_dir=profile,
    )
    try:
        settings.check()
    except ValueError as exc:
        fail(str(exc))
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)

    result = run_node_bench("frames", frames_bench, settings)
    if as_json:
        typer.echo(json.dumps(result))
    else:
        _table(result)
    failed = [row for row in result["variants"] if "error" in row]
    for row in failed:
        typer.echo(f"error: variant {row['variant']}: {row['error']}", err=True)
    if failed:
        raise typer.Exit(1)


def _table(result: dict[str, Any]) -> None:
    columns = (
        "cpu_ms_per_frame_per_node", "ratio_cpu_per_frame_per_node",
        "cpu_ms_per_frame_per_node_above_idle", "ratio_cpu_per_frame_per_node_above_idle",
        "idle_cpu_ms_per_s_per_node", "delivered", "p50_ms", "p99_ms",
    )  # fmt: skip
    table = styled_table(f"CPU per frame per node ({result['nodes']} nodes, {result['rate']}/s)")
    table.add_column("variant")
    for column in columns:
        table.add_column(column.replace("_", " "), justify="right")
    for row in result["variants"]:
        cells = [str(row.get(c)) for c in columns] if "error" not in row else ["failed"]
        table.add_row(row["variant"], *cells)
    console = Console(highlight=False)
    console.print(table)
    for row in result["variants"]:
        profile = row.get("profile")
        if profile:
            console.print(
                f"\n{row['variant']}: {profile['samples']} samples, own time", markup=False
            )
            console.print("\n".join(profile["own"][:10]), markup=False)


def register(bench_app: typer.Typer) -> None:
    bench_app.command("frames")(bench_frames)
