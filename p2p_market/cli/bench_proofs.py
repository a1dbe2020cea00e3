"""`p2p-market bench proofs`: the proof systems alone and through a real market
(p2p_market/bench/proofs.py), as a table or JSON.

Bad arguments and a machine without Node.js, snarkjs or npx: one line, exit 2.
A proof that is not had or does not verify during the bench: one line, exit 1.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console

from p2p_market.bench.proofs import (
    CIRCUITS,
    DEFAULT_BARE_SAMPLES,
    DEFAULT_CLI_SAMPLES,
    DEFAULT_SAMPLES,
    SYSTEMS,
    BenchSetupError,
    proofs_bench,
)
from p2p_market.cli.common import fail, styled_table


def bench_proofs(
    as_json: Annotated[bool, typer.Option("--json", help="One line of JSON.")] = False,
    samples: Annotated[
        int, typer.Option("--samples", help="Asks through the market per case (after one warm-up).")
    ] = DEFAULT_SAMPLES,
    bare_samples: Annotated[
        int, typer.Option("--bare-samples", help="Prove and verify calls through the worker.")
    ] = DEFAULT_BARE_SAMPLES,
    cli_samples: Annotated[
        int,
        typer.Option("--cli-samples", help="Runs of the plain snarkjs command line (0: none)."),
    ] = DEFAULT_CLI_SAMPLES,
    system: Annotated[
        list[str] | None,
        typer.Option("--system", help=f"{' or '.join(SYSTEMS)} (repeat for both; default both)."),
    ] = None,
    circuit: Annotated[
        list[str] | None,
        typer.Option("--circuit", help=f"{' or '.join(CIRCUITS)} (repeat; default both)."),
    ] = None,
) -> None:
    """Bare snarkjs prove and verify times against the same proofs bought through a
    market of two real nodes (ask placed -> verified proof), for each proof system and
    example circuit: the market's overhead, where it goes, and the target (overhead
    at p50 <= commit window + 500 ms)."""
    from p2p_market.bench.proof_bare import BareBenchError
    from p2p_market.bench.proof_market import MarketBenchError
    from p2p_market.sdk import RequestFailed

    try:
        result = proofs_bench(
            system or SYSTEMS,
            circuit or CIRCUITS,
            samples=samples,
            bare_samples=bare_samples,
            cli_samples=cli_samples,
        )
    except BenchSetupError as exc:
        fail(str(exc))
    except (BareBenchError, MarketBenchError, RequestFailed) as exc:
        fail(f"benchmark failed: {exc}", code=1)
    if as_json:
        typer.echo(json.dumps(result))
    else:
        print_table(result, Console(highlight=False))


def _p(stats: dict[str, Any] | None) -> str:
    return "-" if stats is None else f"{stats['p50']} / {stats['p99']}"


def print_table(result: dict[str, Any], console: Console) -> None:
    table = styled_table(
        f"Proofs alone and through the market (ms, p50 / p99; {result['samples']} asks per case)"
    )
    for column in ("system", "circuit"):
        table.add_column(column)
    for column in ("worker prove", "worker verify", "cli prove", "cli verify", "market"):
        table.add_column(column, justify="right")
    for column in ("overhead", "window", "overhead / window", "<= window+500"):
        table.add_column(column, justify="right")
    for r in result["rows"]:
        cli = r["cli"] or {}
        ratio = r["overhead_vs_commit_window"]
        table.add_row(
            r["system"],
            r["circuit"],
            _p(r["bare"]["prove_ms"]),
            _p(r["bare"]["verify_ms"]),
            _p(cli.get("prove_ms")),
            _p(cli.get("verify_ms")),
            _p(r["market_latency"]["total_ms"]),
            f"{r['market_overhead_ms']['p50']} / {r['market_overhead_ms']['p99']}",
            str(r["commit_window_ms"]),
            f"{ratio['p50']} / {ratio['p99']}",
            "yes" if r["overhead_within_target"] else "[bold red]no[/]",
        )
    console.print(table)
    split = styled_table("Where the overhead goes (ms, p50 of each part)")
    split.add_column("system")
    split.add_column("circuit")
    parts = list(result["rows"][0]["overhead_split_p50_ms"]) if result["rows"] else []
    for part in parts:
        split.add_column(part.replace("_", " "), justify="right")
    split.add_column("protocol wait", justify="right")
    split.add_column("beyond it", justify="right")
    for r in result["rows"]:
        split.add_row(
            r["system"],
            r["circuit"],
            *(str(r["overhead_split_p50_ms"][p]) for p in parts),
            str(r["protocol_wait_ms"]),
            str(r["overhead_beyond_protocol_wait_ms"]["p50"]),
        )
    console.print()
    console.print(split)
    console.print(result["note"], markup=False)


def register(bench_app: typer.Typer) -> None:
    bench_app.command("proofs")(bench_proofs)
