"""`p2p-market fuzz`: run the coverage-guided fuzz targets (p2p_market/fuzz/).

    p2p-market fuzz --runs 100000
    p2p-market fuzz frame envelope --runs 1000000 --seed 7 --json

Each target runs in a process of its own for `--runs` inputs. Exit status 0 when
no input broke a parser's contract; 1 when one did (the input is saved under
`--crashes` as `<target>-<sha1>.bin`, where tests/fuzz/ replays it on every test
run once it is in tests/fuzz/crashes/); 2 for bad arguments, as one line."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from p2p_market.cli.common import fail, styled_table
from p2p_market.fuzz.registry import TARGETS
from p2p_market.fuzz.runner import TargetRun, run_target


def _chosen(names: list[str] | None) -> list[str]:
    """The targets to run: names from the registry, or `MODULE:ATTRIBUTE` for a
    target defined elsewhere (importable from the working directory)."""
    if not names:
        return list(TARGETS)
    unknown = [n for n in names if n not in TARGETS and ":" not in n]
    if unknown:
        fail(f"unknown fuzz target {unknown[0]!r} (one of {', '.join(TARGETS)})")
    return list(dict.fromkeys(names))


def _print_table(results: list[TargetRun], seconds: float) -> None:
    from rich.console import Console

    table = styled_table(f"Fuzzing: {sum(r.inputs for r in results):,} inputs in {seconds:.1f} s")
    for column in ("target", "inputs", "cov", "ft", "corpus", "seconds", "inputs/s", "crashes"):
        table.add_column(column, justify="left" if column == "target" else "right")
    for r in results:
        table.add_row(
            r.target, f"{r.inputs:,}", str(r.cov), str(r.ft), str(r.corpus),
            f"{r.seconds:.1f}", f"{r.per_second:,.0f}", str(len(r.crashes)),
        )  # fmt: skip
    console = Console(highlight=False)
    console.print(table)
    for r in results:
        for crash in r.crashes:
            console.print(f"{crash.kind} in {r.target}: {crash.error}; input saved: {crash.path}")
        if r.failure:
            console.print(f"{r.target} failed: {r.failure}")


def fuzz(
    targets: Annotated[
        list[str] | None,
        typer.Argument(
            help=f"Targets to run (default: all): {', '.join(TARGETS)}; or MODULE:ATTRIBUTE.",
            show_default=False,
        ),
    ] = None,
    runs: Annotated[int, typer.Option("--runs", min=1, help="Inputs per target.")] = 10_000,
    seed: Annotated[int, typer.Option("--seed", min=0, help="libFuzzer's random seed.")] = 1,
    crashes: Annotated[
        Path,
        typer.Option("--crashes", help="Where an input that breaks a contract is saved."),
    ] = Path("tests/fuzz/crashes"),
    corpus: Annotated[
        list[Path] | None,
        typer.Option(
            "--corpus",
            help="Also start from the target's saved inputs (TARGET-*.bin) in this"
            " directory, e.g. tests/fuzz/crashes; may be repeated.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Coverage-guided fuzzing (atheris) of the envelope, frame, sync, direct and
    peer-exchange parsers and the config and key-file loaders, for a fixed number of
    inputs each; fails if any input makes a parser raise other than its own named
    rejection, and saves that input."""
    chosen = _chosen(targets)
    try:
        import atheris  # noqa: F401
    except ImportError:
        fail("fuzzing needs atheris: pip install -e '.[dev]'")
    if crashes.exists() and not crashes.is_dir():
        fail(f"--crashes {crashes} is not a directory")
    for directory in corpus or []:
        if not directory.is_dir():
            fail(f"--corpus {directory} is not a directory")
    import time

    started = time.monotonic()
    results = []
    for name in chosen:
        results.append(
            run_target(name, runs, seed=seed, crashes_dir=crashes, start_from=corpus or [])
        )
        if not as_json:
            typer.echo(f"{name}: {results[-1].inputs:,} inputs", err=True)
    seconds = time.monotonic() - started
    if as_json:
        figures = {
            "targets": [asdict(r) | {"ok": r.ok} for r in results],
            "total_inputs": sum(r.inputs for r in results),
            "seconds": round(seconds, 3),
            "crashes": sum(len(r.crashes) for r in results),
            "ok": all(r.ok for r in results),
        }
        typer.echo(json.dumps(figures))
    else:
        _print_table(results, seconds)
    if not all(r.ok for r in results):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("fuzz")(fuzz)
