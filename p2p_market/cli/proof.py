"""`p2p-market proof fetch ASK_ID --api URL --out DIR`: a proof bought earlier, fetched
later by its ask id from the node whose requester role verified it.

The role keeps what it verified in its role store (node/role_store.py), sealed, for
as long as the core keeps the ask: so the proof is there after the node restarted,
without the terminal that placed the ask. The files written are those of `request
--proof-out` (proving/proof_files.py): groth16 and plonk as snarkjs reads them,
others as proof.bin; the first replica in DIR, further ones in DIR/2, DIR/3...
With --input (the ask's inputs) each proof is verified here once more, with the
market's own verifier, before anything is written.

Reading an ask's proofs needs the node's API token (`--api-token-file`, or
P2P_MARKET_API_TOKEN). ASK_ID is the full id, or the start of the id of one of the
node's own asks (at least 8 hex characters, as `asks --mine` shows it).

Exit status: 0 written; 1 no proof to fetch (the ask is not proven yet, or the node
keeps none of it), a proof that does not verify here, or no node there; 2 bad input.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Any

import typer

from p2p_market.cli.common import ApiTokenOpt, api_client, api_errors, fail, who
from p2p_market.cli.control import ApiOpt

MIN_PREFIX = 8
_HEX = re.compile(r"[0-9a-fA-F]+")

proof_app = typer.Typer(help="Proofs bought earlier.", no_args_is_help=True)


@proof_app.command("fetch")
def fetch(
    ask_id: Annotated[
        str,
        typer.Argument(
            help="The ask's id (64 hex), or the start of one of the node's own asks' ids.",
            show_default=False,
        ),
    ],
    api: ApiOpt,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Directory to write the proof files into (created if need be).",
            show_default=False,
        ),
    ],
    input_file: Annotated[
        Path | None,
        typer.Option(
            "--input",
            help="The ask's inputs: verify each proof here too before writing it.",
            show_default=False,
        ),
    ] = None,
    verify_cmd: Annotated[
        str | None,
        typer.Option("--verify-cmd", help="external: verify with this instead of the market's."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
    api_token_file: ApiTokenOpt = None,
) -> None:
    """Fetch the verified proof of an ask this node placed, and write its files."""
    wanted = ask_id.strip().lower()
    if _HEX.fullmatch(wanted) is None or not MIN_PREFIX <= len(wanted) <= 64:
        fail(f"an ask id is 64 hex characters (or its first {MIN_PREFIX} or more), not {ask_id!r}")
    if out.exists() and not out.is_dir():
        fail(f"--out is not a directory: {out}")
    if not out.exists() and not out.parent.is_dir():
        fail(f"--out: no such directory: {out.parent}")
    target = out if out.exists() else out.parent
    if not os.access(target, os.W_OK):
        fail(f"--out: cannot write to {target}")
    inputs = None
    if input_file is not None:
        try:
            inputs = input_file.read_bytes()
        except OSError as exc:
            fail(f"cannot read input file {input_file}: {exc.strerror or exc}")
    client = api_client(api, api_token_file, acting="proof fetch")
    from p2p_market.cli.request import node_market

    with api_errors():
        ask = wanted if len(wanted) == 64 else _by_prefix(client, wanted)
        view = client.ask(ask)
        market = node_market(client, str(view["market"]))
        assert market is not None  # an id: the node's own, or a one-line exit
        proofs = client.proofs(ask)
    if not proofs:
        fail(f"no verified proof of ask {ask[:16]}… on the node (the ask is {view['state']})", 1)
    if inputs is not None:
        _verify(market, view, inputs, proofs, verify_cmd)
    from p2p_market.proving.proof_files import write_proof_files

    prices = dict(zip(view["winners"], view["prices"], strict=False))
    # The replicas in the order they were accepted (the same on every node).
    order = [p for p in view["accepted"] if bytes.fromhex(p) in proofs]
    order += [p.hex() for p in proofs if p.hex() not in order]
    written: list[dict[str, Any]] = []
    try:
        for i, prover in enumerate(order):
            proof = proofs[bytes.fromhex(prover)]
            where = out if i == 0 else out / str(i + 1)
            files = write_proof_files(market, proof, where)
            written.append(
                {
                    "prover": prover,
                    "price": prices.get(prover),
                    "bytes": len(proof),
                    "files": [str(f) for f in files],
                }
            )
    except (OSError, ValueError) as exc:
        fail(f"cannot write the proof files: {exc}", 1)
    if as_json:
        result = {
            "ask": ask,
            "market": view["market"],
            "state": view["state"],
            "paid": view["paid"],
            "verified_here": inputs is not None,
            "proofs": written,
        }
        typer.echo(json.dumps(result))
        return
    typer.echo(f"ask:         {ask} ({view['state']})")
    for entry in written:
        typer.echo(f"prover:      {who(entry['prover'])}  paid {entry['price']}")
        typer.echo(f"proof files: {' '.join(entry['files'])}")


def _by_prefix(client: Any, prefix: str) -> str:
    """The one ask of the node's own whose id starts with `prefix`."""
    ids = [str(a["id"]) for a in client.asks(mine=True) if str(a["id"]).startswith(prefix)]
    if not ids:
        fail(f"no ask of this node's starts with {prefix} (see `p2p-market asks --mine`)")
    if len(ids) > 1:
        fail(f"{prefix} is the start of {len(ids)} of this node's asks: give more of the id")
    return ids[0]


def _verify(
    market: Any,
    view: dict[str, Any],
    inputs: bytes,
    proofs: dict[bytes, bytes],
    verify_cmd: str | None,
) -> None:
    """Each proof checked here with the market's verifier, against `inputs` (which
    must be the ask's: their hash is signed in it)."""
    import trio

    from p2p_market.core.messages import sha256
    from p2p_market.proving.backend import ProvingError
    from p2p_market.roles.wiring import BackendOptions

    if sha256(inputs).hex() != view["inputs_hash"]:
        fail("--input is not the ask's inputs (its hash differs from the ask's inputs_hash)")
    try:
        backend = BackendOptions(verify_cmd=verify_cmd).backend(market)
        for prover, proof in proofs.items():
            if not trio.run(backend.verify, market, inputs, proof):
                fail(f"the proof from {who(prover)} does not verify here", 1)
    except (ValueError, ProvingError) as exc:
        fail(f"cannot verify here: {exc}", 1)


def register(app: typer.Typer) -> None:
    app.add_typer(proof_app, name="proof")
