"""`p2p-market request`: buy one proof, through a node of its own or (--api) a
running node's control API (request_api.py); or a split proof (--split N,
--segment FILE...: one ask per segment, then the aggregation ask over their proofs,
roles/split.py) through a node of its own. --allow/--deny name the provers the ask
lets win (prover_specs.py); --json makes stdout one JSON document
(request_report.py says its shape).

Exit status: 0 done; 1 the market said no (no prover, timeout, expiry, a refused
action), or no node at --api; 2 bad input (one line `error: ...`, and nothing
published).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

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
from p2p_market.cli.prover_specs import BadSpec, ProverSpecs, parse_specs
from p2p_market.cli.request_report import Report
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
    """The inputs of a single ask (empty for a split request)."""
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
    segments: tuple[bytes, ...] = ()
    """A split request's segment inputs, in order (empty: one ask)."""
    specs: ProverSpecs = dataclasses.field(default_factory=ProverSpecs)
    report: Report = dataclasses.field(default_factory=lambda: Report(as_json=False))
    ask: bytes | None = None
    interrupted: bool = False


def request(
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
    input_file: Annotated[
        Path | None,
        typer.Option("--input", help="The inputs to prove (a file).", show_default=False),
    ] = None,
    split: Annotated[
        int | None,
        typer.Option(
            "--split",
            help="Cut --input into N byte ranges of (nearly) equal length, prove each under"
            " an ask of its own at once, then one aggregation ask over their proofs: its"
            " proof goes to --out (max price applies to each ask).",
            show_default=False,
        ),
    ] = None,
    segment: Annotated[
        list[Path] | None,
        typer.Option(
            "--segment",
            help="A split request's segment inputs (a file; repeat, in order) instead of"
            " --input: as --split, one ask each, then the aggregation.",
            show_default=False,
        ),
    ] = None,
    allow: Annotated[
        list[str] | None,
        typer.Option(
            "--allow",
            help="Only this prover may win (its public key, the start of it, or a devnet"
            " name); repeat for more. Signed in the ask: every node holds it to it.",
            show_default=False,
        ),
    ] = None,
    deny: Annotated[
        list[str] | None,
        typer.Option(
            "--deny",
            help="This prover may not win (its public key, the start of it, or a devnet"
            " name), whatever its price; repeat for more.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="stdout: one JSON document at the end (ask, winners, prices, proof paths,"
            " timings, events); progress stays on stderr.",
        ),
    ] = False,
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
    inputs, segments = _read_inputs(input_file, split, segment or [])
    try:
        for one in (inputs, *segments):
            check_inputs_size(one)
    except ValueError as exc:
        fail(str(exc))
    specs = parse_specs(allow, deny)
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
            ("--split", split is not None),
            ("--segment", bool(segment)),
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

    from_node = None if client is None else node_market(client, market)
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
    if segments and size is not None:
        fail("--size does not go with a split request: each segment declares what it needs")
    if segments:
        for i, one in enumerate(segments):
            _check_inputs(chosen, one, verify_cmd, f"segment {i + 1} of {len(segments)}: ")
    else:
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
        segments=segments,
        specs=specs,
        report=Report(as_json=as_json),
    )
    if client is not None:
        raise typer.Exit(_request_via_api(client, params))
    from p2p_market.node.service import configure_logging

    configure_logging(log_level)
    if log_level.lower() != "debug":  # failed dials are expected here, and py-libp2p
        logging.getLogger("libp2p").setLevel(logging.CRITICAL)  # prints them bare
    raise typer.Exit(run_node(_request_session, params))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        fail(f"input file not found: {path}")
    except IsADirectoryError:
        fail(f"input file is a directory: {path}")
    except OSError as exc:
        fail(f"cannot read input file {path}: {exc.strerror}")


def _read_inputs(
    input_file: Path | None, split: int | None, segment: list[Path]
) -> tuple[bytes, tuple[bytes, ...]]:
    """(inputs of one ask, segments of a split request): one of the two is empty."""
    from p2p_market.roles.split import MAX_SEGMENTS

    if segment and (input_file is not None or split is not None):
        fail("--segment replaces --input and --split: give the segments, or --input to cut")
    if segment:
        if not 2 <= len(segment) <= MAX_SEGMENTS:
            fail(f"a split request has 2 to {MAX_SEGMENTS} segments, not {len(segment)}")
        return b"", tuple(_read(p) for p in segment)
    if input_file is None:
        fail("no inputs: pass --input FILE (or --segment FILE for each segment)")
    inputs = _read(input_file)
    if split is None:
        return inputs, ()
    if not 2 <= split <= MAX_SEGMENTS:
        fail(f"--split must be between 2 and {MAX_SEGMENTS}, not {split}")
    if len(inputs) < split:
        fail(f"--split {split}: the inputs have only {len(inputs)} bytes")
    bounds = [len(inputs) * i // split for i in range(split + 1)]
    return b"", tuple(inputs[a:b] for a, b in itertools.pairwise(bounds))


def _check_inputs(market: Market, inputs: bytes, verify_cmd: str | None, what: str = "") -> None:
    """The market's own input check, run here so bad inputs are never published."""
    import trio

    from p2p_market.proving.backend import ProvingError
    from p2p_market.roles.wiring import BackendOptions

    try:
        backend = BackendOptions(verify_cmd=verify_cmd).backend(market)
        ok = trio.run(backend.check_inputs, market, inputs)
    except (ValueError, ProvingError) as exc:
        fail(f"{what}{exc}")
    if not ok:
        fail(f"{what}the inputs are not valid for market {market.name} (its input check says no)")


def node_market(client: ApiClient, spec: str) -> Market | None:
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
        code = buy_via_api(
            client,
            p,
            who=lambda key: who(key, names),
            write_proofs=functools.partial(_write_proofs, p),
            verify=verify,
        )
    return p.report.finish(code)


async def _request_session(p: _Request) -> int:
    import trio

    from p2p_market.sdk import RequestFailed, open_client

    report = p.report
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
                        buy = _buy_split if p.segments else _buy
                        code = await buy(client, p, nursery)
                    except BadSpec as exc:  # bad input found late: nothing placed
                        report.note(f"error: {exc}")
                        code = 2
                    except RequestFailed as exc:
                        report.fail(str(exc), exc.reason)
                        if exc.ask is not None:
                            report.result["ask"] = exc.ask.hex()
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
            report.fail(f"interrupted{note}", "interrupted")
            code = 1
        elif code == 0 and not await client.flush():
            report.note("warning: no peer confirmed the receipt yet; the prover may see it late")
    return report.finish(code)


async def _discover(client: Client, p: _Request, work: int) -> tuple[list[bytes], list[bytes]]:
    """Wait for a prover within the caps that the ask would let win; then resolve
    --allow/--deny against the provers seen (BadSpec if a start of a key is
    unclear) and tell who was found. The ask's allow and deny lists."""
    import trio

    m = p.market
    admits = (lambda key: p.specs.admits(key.hex())) if p.specs else None
    deadline = trio.current_time() + p.discover_timeout
    with p.report.err.status(f"looking for provers in market {m.name}…"):
        bids = await client.wait_for_provers(
            timeout=p.discover_timeout,
            max_price=p.max_price,
            max_proof_time=p.max_proof_time,
            size=work,
            provers=admits,
        )
        # A prover found says nothing of whether the bid of one named by the start of
        # its key has come yet: wait for those too, else `resolve` would refuse them.
        with trio.move_on_at(deadline):
            while p.specs.unmatched(s.prover.hex() for s in client.bids()):
                await trio.sleep(0.05)
    allow, deny = p.specs.resolve(s.prover.hex() for s in client.bids())
    best = bids[0].bid
    unit = "per proof" if work == 1 else f"per unit, {best.price * work} for {work} units"
    p.report.note(
        f"found {len(bids)} prover(s) within your caps; cheapest: {best.price} {unit},"
        f" {best.proof_time} ms"
    )
    p.report.result["found"] = {"provers": len(bids), "cheapest_price": best.price}
    return [bytes.fromhex(k) for k in allow], [bytes.fromhex(k) for k in deny]


def _progress(
    client: Client, p: _Request, labels: dict[bytes, str], status: Any
) -> Callable[[], Awaitable[None]]:
    """The task that turns the role's events about our asks into progress lines
    (and --json events); `labels` names each ask in a split request."""
    names = devnet_names()
    report = p.report

    async def show_events() -> None:
        async for event in client.events():
            if event.ask not in labels:
                if not p.segments or event.kind != "placed":
                    continue
                n = len(p.segments)
                labels[event.ask] = (
                    f"segment {len(labels) + 1}/{n}" if len(labels) < n else "aggregate"
                )
            d = event.detail
            tag = f"[{labels[event.ask]}] " if labels[event.ask] else ""
            ask = event.ask.hex()
            if event.kind == "placed":
                report.placed(ask)
                report.line(
                    "placed",
                    f"{tag}ask {ask[:16]}…  max price {p.max_price}, max proof time"
                    f" {p.max_proof_time} ms, prefer {p.prefer}"
                    + (f", {p.replicas} replicas" if p.replicas > 1 else ""),
                    ask=ask,
                )
                status.update("waiting for provers to commit…")
            elif event.kind == "assigned":
                report.line(
                    "assigned",
                    f"{tag}to {who(d['prover'], names)} at price {d['price']}",
                    ask=ask,
                    prover=d["prover"],
                    price=d["price"],
                )
                status.update("proving…")
            elif event.kind == "delivered":
                report.line(
                    "delivered",
                    f"{tag}proof from {who(d['prover'], names)}",
                    ask=ask,
                    prover=d["prover"],
                )
                status.update("verifying…")
            elif event.kind == "verified":
                report.line(
                    "verified",
                    f"{tag}{d['size']}-byte proof from {who(d['prover'], names)}",
                    ask=ask,
                    prover=d["prover"],
                    bytes=d["size"],
                    **({"verify_ms": d["verify_ms"]} if "verify_ms" in d else {}),
                )
            elif event.kind == "rejected":
                report.line(
                    "rejected",
                    f"{tag}INVALID proof from {who(d['prover'], names)}: next round",
                    ask=ask,
                    prover=d["prover"],
                )
            elif event.kind == "timed_out":
                report.line(
                    "timed out",
                    f"{tag}{who(d['prover'], names)} missed its deadline: next round",
                    ask=ask,
                    prover=d["prover"],
                )
            elif event.kind == "state" and d.get("state") in ("cancelled", "expired"):
                report.line(d["state"], tag, ask=ask)

    return show_events


async def _buy(client: Client, p: _Request, nursery: Any) -> int:
    work = p.size or inputs_size(p.market, p.inputs) or 1
    allow, deny = await _discover(client, p, work)
    report = p.report
    status = report.err.status("waiting for provers to commit…")
    labels: dict[bytes, str] = {}
    ask = await client.place_ask(
        p.inputs,
        max_price=p.max_price,
        max_proof_time=p.max_proof_time,
        prefer=p.prefer,
        replicas=p.replicas,
        confidential=p.confidential,
        ttl_ms=p.ttl_ms,
        size=p.size,
        allow=allow,
        deny=deny,
    )
    p.ask = ask
    labels[ask] = ""
    report.placed(ask.hex())
    status.start()
    nursery.start_soon(_progress(client, p, labels, status))
    try:
        result = await client.wait(ask, timeout=p.timeout)
    finally:
        status.stop()
    written = _write_proofs(p, p.out, list(result.proofs.values()))
    import trio

    await trio.sleep(0.05)  # let the last progress line print
    prices = dict(zip(result.winners, client.status(ask)["prices"], strict=False))
    report.proven(
        market=client.market_id.hex(),
        market_name=p.market.name,
        prices={k.hex(): v for k, v in prices.items()},
        paid=result.paid,
        proofs=[
            (prover.hex(), str(path), len(proof), files)
            for prover, proof, (path, files) in zip(
                result.proofs, result.proofs.values(), written, strict=True
            )
        ],
    )
    if report.as_json:
        return 0
    names = devnet_names()
    print(f"ask:        {ask.hex()}")
    for prover in result.proofs:
        print(f"prover:     {who(prover, names)}  paid {prices.get(prover, '?')}")
    print(f"price paid: {result.paid}")
    for (path, _), proof in zip(written, result.proofs.values(), strict=True):
        print(f"proof:      {path} ({len(proof)} bytes, verified)")
    return 0


async def _buy_split(client: Client, p: _Request, nursery: Any) -> int:
    """A split proof through the SDK (roles/split.py): the segment asks at once, then
    the aggregation; its proof is the one written to --out."""
    allow, deny = await _discover(client, p, 1)
    report = p.report
    status = report.err.status("waiting for provers to commit…")
    labels: dict[bytes, str] = {}
    status.start()
    nursery.start_soon(_progress(client, p, labels, status))
    try:
        result = await client.request_segmented(
            p.segments,
            max_price=p.max_price,
            max_proof_time=p.max_proof_time,
            prefer=p.prefer,
            replicas=p.replicas,
            confidential=p.confidential,
            ttl_ms=p.ttl_ms,
            timeout=p.timeout,
            discover_timeout=p.discover_timeout,
            allow=allow,
            deny=deny,
        )
    finally:
        status.stop()
    import trio

    await trio.sleep(0.05)  # let the last progress line print
    agg = result.aggregation_ask
    p.ask = agg
    view = client.status(agg)
    written = _write_proofs(p, p.out, [result.proof])
    asks = [*result.segment_asks, agg]
    paid = sum(int(client.status(a)["paid"]) for a in asks)
    winner = next((w for w in view["accepted"]), view["winners"][0])
    prices = dict(zip(view["winners"], view["prices"], strict=False))
    report.proven(
        market=client.market_id.hex(),
        market_name=p.market.name,
        prices=prices,
        paid=paid,
        proofs=[(winner, str(written[0][0]), len(result.proof), written[0][1])],
    )
    report.result["ask"] = agg.hex()
    report.result["split"] = {
        "segment_asks": [a.hex() for a in result.segment_asks],
        "aggregation_ask": agg.hex(),
        "segment_paid": [int(client.status(a)["paid"]) for a in result.segment_asks],
    }
    if report.as_json:
        return 0
    names = devnet_names()
    for i, a in enumerate(result.segment_asks):
        print(f"segment {i + 1}:  {a.hex()}  paid {client.status(a)['paid']}")
    print(f"ask:        {agg.hex()} (aggregation)")
    print(f"prover:     {who(winner, names)}  paid {prices.get(winner, '?')}")
    print(f"price paid: {paid} (all {len(asks)} asks)")
    print(f"proof:      {written[0][0]} ({len(result.proof)} bytes, verified)")
    return 0


def _write_proofs(p: _Request, out: Path, proofs: list[bytes]) -> list[tuple[Path, list[str]]]:
    """The first proof to `out`, further replicas to `out.2`, `out.3`...; each
    written to a temporary file first, so a proof file on disk is whole. With
    --proof-out, each also as files other tools read (proving/proof_files.py): the
    first in that directory, further replicas in its subdirectories 2/, 3/...
    Each path with the files written for it."""
    from p2p_market.proving.proof_files import write_proof_files

    written = []
    for i, proof in enumerate(proofs):
        path = out if i == 0 else out.with_name(f"{out.name}.{i + 1}")
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_bytes(proof)
        os.replace(tmp, path)
        files: list[str] = []
        if p.proof_out is not None:
            where = p.proof_out if i == 0 else p.proof_out / str(i + 1)
            files = [str(f) for f in write_proof_files(p.market, proof, where)]
            if not p.report.as_json:
                print(f"proof files: {' '.join(files)}")
        written.append((path, files))
    return written


def register(app: typer.Typer) -> None:
    app.command("request")(request)
