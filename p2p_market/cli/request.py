"""`p2p-market request`: buy one proof, through a node of its own or (--api) a
running node's control API (request_api.py).

Exit status: 0 done; 1 the market said no (no prover, timeout, expiry, a refused
action); 2 bad input (one line `error: ...`, and nothing published).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from p2p_market.cli.common import (
    AnnounceOpt,
    ApiTokenOpt,
    api_client,
    api_errors,
    check_addrs,
    check_announce,
    check_log_level,
    devnet_names,
    fail,
    market_arg,
    run_node,
    who,
)
from p2p_market.core.crypto import SigningKey
from p2p_market.core.limits import MAX_SIZE
from p2p_market.core.messages import Market
from p2p_market.core.work import inputs_size
from p2p_market.node.keyfile import KeyFileError, read_key, read_passphrase

if TYPE_CHECKING:
    from p2p_market.node.api_client import ApiClient
    from p2p_market.sdk import Client

EPHEMERAL_LISTEN = "/ip4/127.0.0.1/tcp/0"
"""`request`'s node lives for one ask: any free port, unless --listen says otherwise."""


@dataclasses.dataclass
class _Request:
    market: Market
    inputs: bytes
    max_price: int
    max_proof_time: int
    prefer: str
    replicas: int
    size: int | None
    confidential: bool
    ttl_ms: int
    bootstrap: tuple[str, ...]
    key: SigningKey | None
    timeout: float
    discover_timeout: float
    listen: str
    announce: tuple[str, ...]
    verify_cmd: str | None
    out: Path
    proof_out: Path | None = None
    ask: bytes | None = None
    interrupted: bool = False


def request(
    input_file: Annotated[
        Path, typer.Option("--input", help="The inputs to prove (a file).", show_default=False)
    ],
    max_price: Annotated[
        int, typer.Option("--max-price", help="The most you pay per proof.", show_default=False)
    ],
    max_proof_time: Annotated[
        int,
        typer.Option(
            "--max-proof-time", help="Longest proving time you accept, ms.", show_default=False
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Where to write the verified proof.", show_default=False)
    ],
    market: Annotated[
        str,
        typer.Option(
            "--market",
            help="devnet, a descriptor file, or a market id (one this machine does not"
            " know is fetched from the --bootstrap peers, with its artifacts).",
        ),
    ] = "devnet",
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir",
            help="Where a market fetched by id is kept (markets/, artifacts/), for the"
            " next request.",
        ),
    ] = Path("data") / "requester",
    prefer: Annotated[
        str, typer.Option("--prefer", help="cost (cheapest first) or time (fastest first).")
    ] = "cost",
    replicas: Annotated[
        int, typer.Option("--replicas", help="Independent proofs from distinct provers (1..16).")
    ] = 1,
    size: Annotated[
        int | None,
        typer.Option(
            "--size",
            help="The work the ask declares, in the market's units (default: what the"
            " inputs need where the market says, e.g. pow's difficulty line; else 1).",
        ),
    ] = None,
    confidential: Annotated[
        bool,
        typer.Option("--confidential", help="Send the inputs only to the winners, encrypted."),
    ] = False,
    ttl_ms: Annotated[int, typer.Option("--ttl-ms", help="The ask expires after this.")] = 300_000,
    bootstrap: Annotated[
        list[str] | None,
        typer.Option("--bootstrap", help="A node's full multiaddr (a prover prints it)."),
    ] = None,
    key: Annotated[
        Path | None, typer.Option("--key", help="Sign with this key file (default: a fresh key).")
    ] = None,
    passphrase_file: Annotated[
        Path | None, typer.Option("--passphrase-file", help="Passphrase of --key.")
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for a verified proof.")
    ] = 300.0,
    discover_timeout: Annotated[
        float, typer.Option("--discover-timeout", help="Seconds to wait for a prover's bid.")
    ] = 30.0,
    listen: Annotated[
        str | None,
        typer.Option(
            "--listen",
            help="The ephemeral node's listen multiaddr (default /ip4/127.0.0.1/tcp/0: any"
            " free port, reached by provers over the connection it opens).",
            show_default=False,
        ),
    ] = None,
    announce: AnnounceOpt = None,
    proof_out: Annotated[
        Path | None,
        typer.Option(
            "--proof-out",
            help="Also write the proof into this directory as files other tools read:"
            " groth16, plonk: snarkjs's proof.json and public.json (and the market's"
            " verification_key.json), for `snarkjs groth16 verify`; others: proof.bin.",
            show_default=False,
        ),
    ] = None,
    verify_cmd: Annotated[
        str | None,
        typer.Option("--verify-cmd", help="external: verify with this instead of the market's."),
    ] = None,
    api: Annotated[
        str | None,
        typer.Option(
            "--api",
            help="Buy through a running node's control API (signed with its key; it needs a"
            " \\[requester] section, and its --api-token-file) instead of an ephemeral node.",
            show_default=False,
        ),
    ] = None,
    api_token_file: ApiTokenOpt = None,
    log_level: Annotated[
        str, typer.Option("--log-level", help="debug, info, warning or error.")
    ] = "warning",
) -> None:
    """Buy one proof: place an ask from an ephemeral node (or a running node, --api),
    wait for a verified proof.

    Exit status 0 only with a verified proof written to --out; 1 if the market
    could not deliver one (no provers, timeout, expiry, invalid inputs, cancelled);
    2 for bad input, before anything is published."""
    from p2p_market.sdk import check_ask, check_bootstrap, check_inputs_size

    check_log_level(log_level)
    if not 0 < timeout < 1e9:
        fail(f"--timeout must be a positive number of seconds, not {timeout:g}")
    if not 0 < discover_timeout < 1e9:
        fail(f"--discover-timeout must be a positive number of seconds, not {discover_timeout:g}")
    try:
        inputs = input_file.read_bytes()
    except FileNotFoundError:
        fail(f"input file not found: {input_file}")
    except IsADirectoryError:
        fail(f"input file is a directory: {input_file}")
    except OSError as exc:
        fail(f"cannot read input file {input_file}: {exc.strerror}")
    try:
        check_inputs_size(inputs)
    except ValueError as exc:
        fail(str(exc))
    signing = None
    if key is not None:
        try:
            passphrase = None if passphrase_file is None else read_passphrase(passphrase_file)
            signing = read_key(key, passphrase)
        except KeyFileError as exc:
            fail(str(exc))
    elif passphrase_file is not None:
        fail("--passphrase-file needs --key")
    client = None
    if api is not None:
        for flag, given in (
            ("--bootstrap", bool(bootstrap)),
            ("--key", key is not None),
            ("--confidential", confidential),
            ("--listen", listen is not None),
            ("--announce", bool(announce)),
        ):
            if given:
                fail(f"{flag} does not go with --api: the running node has its own")
        client = api_client(api, api_token_file, acting="request --api")
    elif api_token_file is not None:
        fail("--api-token-file goes with --api")
    elif not bootstrap:
        fail("no bootstrap peer given: pass --bootstrap with the address a prover printed")
    try:
        boot = check_bootstrap(bootstrap or [])
    except ValueError as exc:
        fail(f"--bootstrap: {exc}")
    from p2p_market.cli.joining import resolve_or_join
    from p2p_market.node.join import REQUESTER_ARTIFACTS

    from_node = None if client is None else _followed_by_node(client, market)
    chosen = (
        from_node
        or resolve_or_join(market, data_dir=data_dir, bootstrap=boot, kinds=REQUESTER_ARTIFACTS)
        or market_arg(market)
    )
    try:
        check_ask(
            chosen,
            max_price=max_price,
            max_proof_time=max_proof_time,
            prefer=prefer,
            replicas=replicas,
            ttl_ms=ttl_ms,
        )
    except ValueError as exc:
        fail(str(exc))
    if out.is_dir():
        fail(f"--out is a directory: {out}")
    if not out.parent.is_dir():
        fail(f"--out: no such directory: {out.parent}")
    if not os.access(out.parent, os.W_OK):
        fail(f"--out: cannot write to {out.parent}")
    if proof_out is not None:
        if proof_out.exists() and not proof_out.is_dir():
            fail(f"--proof-out is not a directory: {proof_out}")
        if not proof_out.exists() and not proof_out.parent.is_dir():
            fail(f"--proof-out: no such directory: {proof_out.parent}")
    _check_inputs(chosen, inputs, verify_cmd)
    need = inputs_size(chosen, inputs)
    if size is not None and not 1 <= size <= MAX_SIZE:
        fail(f"--size must be between 1 and {MAX_SIZE}, not {size}")
    if size is not None and need is not None and size != need:
        fail(f"--size {size} does not match the inputs, which need {need} (market-v1.md §5.3)")
    params = _Request(
        market=chosen,
        inputs=inputs,
        max_price=max_price,
        max_proof_time=max_proof_time,
        prefer=prefer,
        replicas=replicas,
        size=size,
        confidential=confidential,
        ttl_ms=ttl_ms,
        bootstrap=boot,
        key=signing,
        timeout=timeout,
        discover_timeout=discover_timeout,
        listen=check_addrs([listen or EPHEMERAL_LISTEN], "--listen", peer=False)[0],
        announce=check_announce(announce),
        verify_cmd=verify_cmd,
        out=out,
        proof_out=proof_out,
    )
    if client is not None:
        raise typer.Exit(_request_via_api(client, params))
    from p2p_market.node.service import configure_logging

    configure_logging(log_level)
    if log_level.lower() != "debug":  # failed dials are expected here, and py-libp2p
        logging.getLogger("libp2p").setLevel(logging.CRITICAL)  # prints them bare
    raise typer.Exit(run_node(_request_session, params))


def _check_inputs(market: Market, inputs: bytes, verify_cmd: str | None) -> None:
    """The market's own input check, run here so bad inputs are never published."""
    import trio

    from p2p_market.proving.backend import ProvingError
    from p2p_market.roles.wiring import BackendOptions

    try:
        backend = BackendOptions(verify_cmd=verify_cmd).backend(market)
        ok = trio.run(backend.check_inputs, market, inputs)
    except (ValueError, ProvingError) as exc:
        fail(str(exc))
    if not ok:
        fail(f"the inputs are not valid for market {market.name} (its input check says no)")


def _followed_by_node(client: ApiClient, spec: str) -> Market | None:
    """With --api, a market given by id is the running node's (it follows it: its
    descriptor comes from GET /v1/markets, checked against the id). None if `spec`
    is not an id; one line, exit 2, if the node does not follow that market."""
    from p2p_market.core.envelope import market_id
    from p2p_market.core.messages import MessageError
    from p2p_market.markets.descriptor import is_market_id

    spec = spec.strip()
    if not is_market_id(spec):
        return None
    with api_errors():
        followed = client.markets()
    for entry in followed:
        if entry.get("id") != spec:
            continue
        try:
            found = Market.from_map({k: entry.get(k) for k in Market.FIELD_NAMES})
        except (MessageError, ValueError, TypeError) as exc:
            fail(f"the node's descriptor of market {spec[:16]}… does not parse: {exc}")
        if market_id(found).hex() != spec:
            fail(f"the node's descriptor of market {spec[:16]}… does not hash to that id")
        return found
    fail(f"the node does not follow market {spec[:16]}… (GET /v1/markets)")


def _request_via_api(client: ApiClient, p: _Request) -> int:
    import trio

    from p2p_market.cli.request_api import buy_via_api
    from p2p_market.roles.wiring import BackendOptions

    backend = BackendOptions(verify_cmd=p.verify_cmd).backend(p.market)
    names = devnet_names()

    def verify(proof: bytes) -> bool:
        return trio.run(backend.verify, p.market, p.inputs, proof)

    with api_errors():
        return buy_via_api(
            client,
            p,
            who=lambda key: who(key, names),
            write_proofs=functools.partial(_write_proofs, p),
            verify=verify,
        )


async def _request_session(p: _Request) -> int:
    import trio

    from p2p_market.sdk import RequestFailed, open_client

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    code = 1
    async with open_client(
        p.bootstrap,
        p.market,
        p.key,
        verify_cmd=p.verify_cmd,
        listen=p.listen,
        announce=p.announce,
    ) as client:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                work = trio.CancelScope()

                async def watch() -> None:
                    async for _ in signals:
                        p.interrupted = True
                        work.cancel()
                        return

                nursery.start_soon(watch)
                with work:
                    try:
                        code = await _buy(client, p, err, nursery)
                    except RequestFailed as exc:
                        err.print(f"error: {exc}", markup=False)
                        code = 1
                nursery.cancel_scope.cancel()
        if p.interrupted:
            note = ""
            if p.ask is not None:
                view = client.status(p.ask)
                if view["state"] == "open" and not view["winners"]:
                    done = await client.cancel(p.ask)
                    note = "; the ask is cancelled" if done == "ok" else f"; cancel refused: {done}"
                else:
                    note = f"; the ask stays {view['state']}"
            err.print(f"error: interrupted{note}", markup=False)
            code = 1
        elif code == 0 and not await client.flush():
            err.print(
                "warning: no peer confirmed the receipt yet; the prover may see it late",
                markup=False,
            )
    return code


async def _buy(client: Client, p: _Request, err: Console, nursery: Any) -> int:
    names = devnet_names()
    m = p.market
    work = p.size or inputs_size(m, p.inputs) or 1
    with err.status(f"looking for provers in market {m.name}…"):
        bids = await client.wait_for_provers(
            timeout=p.discover_timeout,
            max_price=p.max_price,
            max_proof_time=p.max_proof_time,
            size=work,
        )
    best = bids[0].bid
    unit = "per proof" if work == 1 else f"per unit, {best.price * work} for {work} units"
    err.print(
        f"found {len(bids)} prover(s) within your caps; cheapest: {best.price} {unit},"
        f" {best.proof_time} ms",
        markup=False,
    )
    ask = await client.place_ask(
        p.inputs,
        max_price=p.max_price,
        max_proof_time=p.max_proof_time,
        prefer=p.prefer,
        replicas=p.replicas,
        confidential=p.confidential,
        ttl_ms=p.ttl_ms,
        size=p.size,
    )
    p.ask = ask
    started = time.monotonic()
    status = err.status("waiting for provers to commit…")
    status.start()

    def line(kind: str, text: str) -> None:
        err.print(f"{time.monotonic() - started:6.1f}s  {kind:<10} {text}", markup=False)

    async def show_events() -> None:
        async for event in client.events():
            if event.ask != ask:
                continue
            d = event.detail
            if event.kind == "placed":
                line(
                    "placed",
                    f"ask {ask.hex()[:16]}…  max price {p.max_price}, max proof time"
                    f" {p.max_proof_time} ms, prefer {p.prefer}"
                    + (f", {p.replicas} replicas" if p.replicas > 1 else ""),
                )
                status.update("waiting for provers to commit…")
            elif event.kind == "assigned":
                line("assigned", f"to {who(d['prover'], names)} at price {d['price']}")
                status.update("proving…")
            elif event.kind == "delivered":
                line("delivered", f"proof from {who(d['prover'], names)}")
                status.update("verifying…")
            elif event.kind == "verified":
                line("verified", f"{d['size']}-byte proof from {who(d['prover'], names)}")
            elif event.kind == "rejected":
                line("rejected", f"INVALID proof from {who(d['prover'], names)}: next round")
            elif event.kind == "timed_out":
                line("timed out", f"{who(d['prover'], names)} missed its deadline: next round")
            elif event.kind == "state" and d.get("state") in ("cancelled", "expired"):
                line(d["state"], "")

    nursery.start_soon(show_events)
    try:
        result = await client.wait(ask, timeout=p.timeout)
    finally:
        status.stop()
    paths = _write_proofs(p, p.out, list(result.proofs.values()))
    import trio

    await trio.sleep(0.05)  # let the last progress line print
    print(f"ask:        {ask.hex()}")
    prices = dict(zip(result.winners, client.status(ask)["prices"], strict=False))
    for prover in result.proofs:
        print(f"prover:     {who(prover, names)}  paid {prices.get(prover, '?')}")
    print(f"price paid: {result.paid}")
    for path, proof in zip(paths, result.proofs.values(), strict=True):
        print(f"proof:      {path} ({len(proof)} bytes, verified)")
    return 0


def _write_proofs(p: _Request, out: Path, proofs: list[bytes]) -> list[Path]:
    """The first proof to `out`, further replicas to `out.2`, `out.3`...; each
    written to a temporary file first, so a proof file on disk is whole. With
    --proof-out, each also as files other tools read (proving/proof_files.py): the
    first in that directory, further replicas in its subdirectories 2/, 3/..."""
    from p2p_market.proving.proof_files import write_proof_files

    paths = []
    for i, proof in enumerate(proofs):
        path = out if i == 0 else out.with_name(f"{out.name}.{i + 1}")
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_bytes(proof)
        os.replace(tmp, path)
        paths.append(path)
        if p.proof_out is not None:
            where = p.proof_out if i == 0 else p.proof_out / str(i + 1)
            files = write_proof_files(p.market, proof, where)
            print(f"proof files: {' '.join(map(str, files))}")
    return paths


def register(app: typer.Typer) -> None:
    app.command("request")(request)
