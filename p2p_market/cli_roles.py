"""The commands people use to trade: `market`, `prover run`, `request`, and the
control-API commands `cancel`, `status`, `book`.

Exit status: 0 done; 1 the market said no (no prover, timeout, expiry, a refused
action); 2 bad input (one line `error: ...`, and nothing published).
Heavy imports (trio, libp2p) happen inside the commands, so `--help` stays fast.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import re
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console, Group

from p2p_market.cli_common import check_log_level, fail, run_node, styled_table
from p2p_market.core.crypto import SigningKey, devnet_key
from p2p_market.core.envelope import market_id
from p2p_market.core.messages import Market, MessageError
from p2p_market.devnet import DEVNET_NAMES
from p2p_market.keyfile import KeyFileError, read_key, read_passphrase
from p2p_market.markets import (
    MARKETS_DIR,
    MarketSpecError,
    is_market_id,
    known_markets,
    resolve_market,
    write_descriptor,
)

if TYPE_CHECKING:
    from p2p_market.node.api_client import ApiClient
    from p2p_market.roles.wiring import RolePlan
    from p2p_market.sdk import Client

market_app = typer.Typer(
    help="Create and list market descriptors.\n\n"
    "A market is announced by handing out its descriptor file: every node that "
    "configures the same file (--market FILE, or \\[\\[markets]] descriptor = FILE in a "
    "node config) follows the same market, whose id is the hash of the descriptor.",
    no_args_is_help=True,
)
prover_app = typer.Typer(help="Sell proofs: run a prover node.", no_args_is_help=True)

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
DEFAULT_LISTEN = "/ip4/127.0.0.1/tcp/0"


def register(app: typer.Typer) -> None:
    app.add_typer(market_app, name="market")
    app.add_typer(prover_app, name="prover")
    app.command("request")(request)
    app.command("cancel")(cancel)
    app.command("status")(status)
    app.command("book")(book)


def _market(spec: str) -> Market:
    try:
        return resolve_market(spec)
    except MarketSpecError as exc:
        fail(str(exc))


def _names() -> dict[bytes, str]:
    return {devnet_key(n).public_key: n for n in DEVNET_NAMES}


def who(public_key: str | bytes, names: dict[bytes, str] | None = None) -> str:
    """A prover or requester for people: `prover-1 (3b6a27bc…)` for devnet keys."""
    raw = bytes.fromhex(public_key) if isinstance(public_key, str) else public_key
    name = (names if names is not None else _names()).get(raw)
    short = raw.hex()[:12] + "…"
    return f"{name} ({short})" if name else short


def short(public_key: str, names: dict[bytes, str]) -> str:
    """A devnet name, or the first hex digits: for crowded tables."""
    return names.get(bytes.fromhex(public_key)) or public_key[:8] + "…"


# -- market ----------------------------------------------------------------------------


@market_app.command("create")
def market_create(
    name: Annotated[str, typer.Option("--name", help="The market's name (1..64 characters).")],
    proof_system: Annotated[
        str,
        typer.Option("--proof-system", help="pow (the built-in DEMO proof of work) or external."),
    ],
    out: Annotated[Path, typer.Option("--out", help="Where to write the descriptor (TOML).")],
    difficulty: Annotated[
        int | None,
        typer.Option("--difficulty", help="pow: leading zero bits (default 16; 0 for external)."),
    ] = None,
    verifier: Annotated[
        str | None,
        typer.Option(
            "--verifier",
            help="external: the verify command template, e.g. 'zkvm verify {inputs} {proof}'.",
        ),
    ] = None,
    commit_window_ms: Annotated[
        int, typer.Option("--commit-window-ms", help="How long provers may commit to an ask.")
    ] = 3_000,
    stage_ms: Annotated[
        int, typer.Option("--stage-ms", help="Delay per rank for fallback provers.")
    ] = 500,
    skew_ms: Annotated[int, typer.Option("--skew-ms", help="Clock-skew tolerance.")] = 2_000,
    max_lifetime_ms: Annotated[
        int, typer.Option("--max-lifetime-ms", help="Longest an ask may live.")
    ] = 24 * 3600 * 1000,
    nonce: Annotated[int, typer.Option("--nonce", help="Tells apart otherwise equal markets.")] = 0,
) -> None:
    """Create a market: write its descriptor file and print its id.

    To announce the market, hand out the file: provers and requesters pass it as
    --market FILE (or copy it into their markets/ directory and use the id)."""
    if proof_system not in ("pow", "external"):
        fail(f"unknown proof system {proof_system!r}: use pow or external")
    if proof_system == "pow":
        verifier = "sha256-leading-zero-bits" if verifier is None else verifier
        difficulty = 16 if difficulty is None else difficulty
    else:
        if not verifier:
            fail("an external market needs --verifier: the command that checks a proof")
        from p2p_market.proving.external import parse_template

        try:
            parse_template(verifier, "verify")
        except ValueError as exc:
            fail(str(exc))
        difficulty = 0 if difficulty is None else difficulty
    try:
        market = Market(
            name=name,
            proof_system=proof_system,
            verifier=verifier,
            difficulty=difficulty,
            commit_window_ms=commit_window_ms,
            stage_ms=stage_ms,
            skew_ms=skew_ms,
            max_lifetime_ms=max_lifetime_ms,
            created_at=time.time_ns() // 1_000_000,
            nonce=nonce,
        )
    except MessageError as exc:
        fail(f"bad market: {exc}")
    try:
        write_descriptor(out, market)
    except MarketSpecError as exc:
        fail(str(exc))
    typer.echo(f"market id:  {market_id(market).hex()}")
    typer.echo(f"descriptor: {out}")
    typer.echo(f"announce it by handing out {out}; nodes use --market {out}")


@market_app.command("list")
def market_list(
    directory: Annotated[
        Path, typer.Option("--dir", help="Directory of descriptor files (*.toml).")
    ] = MARKETS_DIR,
) -> None:
    """List devnet and the descriptor files in DIR, with their ids."""
    table = styled_table()
    for col in ("name", "id", "system", "difficulty", "window / stage / skew", "source"):
        table.add_column(col)
    problems = []
    for known in known_markets([directory]):
        m = known.market
        if m is None:
            problems.append(known.error)
            continue
        table.add_row(
            m.name,
            market_id(m).hex(),
            m.proof_system,
            str(m.difficulty),
            f"{m.commit_window_ms} / {m.stage_ms} / {m.skew_ms} ms",
            known.source,
        )
    Console(highlight=False, width=200).print(table)
    for problem in problems:
        typer.echo(f"warning: skipped {problem}", err=True)


# -- prover run --------------------------------------------------------------------------


def _signing_key(
    key: Path | None, passphrase_file: Path | None, devnet: str | None
) -> tuple[SigningKey, str]:
    """The key, and a name for its data directory."""
    if key is not None and devnet is not None:
        fail("give --key or --devnet-key, not both")
    if devnet is not None:
        if devnet not in DEVNET_NAMES:
            fail(f"unknown devnet key {devnet!r}: one of {', '.join(DEVNET_NAMES)}")
        return devnet_key(devnet), devnet
    if key is None:
        fail(
            "a prover needs a key: --key FILE (p2p-market keys new) or --devnet-key NAME"
            " (public, INSECURE: tests and demos only)"
        )
    try:
        passphrase = None if passphrase_file is None else read_passphrase(passphrase_file)
        return read_key(key, passphrase), key.stem
    except KeyFileError as exc:
        fail(str(exc))


def _check_addrs(values: list[str], flag: str, *, peer: bool) -> tuple[str, ...]:
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


def _prover_banner(plan: RolePlan) -> Any:
    def banner(ready: dict[str, Any]) -> None:
        p = plan.prover
        assert p is not None
        slots = f"{p.capacity} slot{'s' if p.capacity != 1 else ''}"
        api = f"http://127.0.0.1:{ready['api_port']}"
        print(
            f"prover {who(ready['public_key'])} bids {p.price} per proof, {p.proof_time} ms,"
            f" {slots}, in market {p.market.name} ({market_id(p.market).hex()[:16]}…)"
        )
        print(f"requesters: --bootstrap {ready['addr']}")
        print(f"control API: {api}  (p2p-market status ASK_ID --api {api})")
        print("Ctrl-C to stop.")

    return banner


@prover_app.command("run")
def prover_run(
    config: Annotated[
        Path | None,
        typer.Option("--config", help="A node config with a \\[prover] section (no other flags)."),
    ] = None,
    market: Annotated[
        str | None,
        typer.Option("--market", help="devnet, a descriptor file, or a known market id."),
    ] = None,
    price: Annotated[int | None, typer.Option("--price", help="Price per proof.")] = None,
    proof_time: Annotated[
        int | None, typer.Option("--proof-time", help="Milliseconds promised per proof.")
    ] = None,
    capacity: Annotated[
        int | None, typer.Option("--capacity", help="Proofs at once (default 1).")
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option("--backend", help="pow or external (default: the market's system)."),
    ] = None,
    prove_cmd: Annotated[
        str | None, typer.Option("--prove-cmd", help="external: prove command template.")
    ] = None,
    verify_cmd: Annotated[
        str | None, typer.Option("--verify-cmd", help="external: verify command template.")
    ] = None,
    check_cmd: Annotated[
        str | None, typer.Option("--check-cmd", help="external: input check command template.")
    ] = None,
    timeout_s: Annotated[
        float | None, typer.Option("--timeout-s", help="external: longest a command may run.")
    ] = None,
    listen: Annotated[
        list[str] | None,
        typer.Option("--listen", help=f"Listen multiaddr (default {DEFAULT_LISTEN})."),
    ] = None,
    bootstrap: Annotated[
        list[str] | None, typer.Option("--bootstrap", help="A peer's full multiaddr; repeatable.")
    ] = None,
    key: Annotated[Path | None, typer.Option("--key", help="Ed25519 key file.")] = None,
    passphrase_file: Annotated[
        Path | None, typer.Option("--passphrase-file", help="Passphrase of --key.")
    ] = None,
    devnet_key_name: Annotated[
        str | None,
        typer.Option("--devnet-key", help="A devnet identity (PUBLIC, INSECURE), e.g. prover-1."),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Where the node's log lives (data/<key>).")
    ] = None,
    api_port: Annotated[
        int | None, typer.Option("--api-port", help="Control API port on 127.0.0.1 (0: any).")
    ] = None,
    log_level: Annotated[
        str, typer.Option("--log-level", help="debug, info, warning or error.")
    ] = "info",
) -> None:
    """Run a prover until Ctrl-C or SIGTERM: bid, commit, prove, deliver, get paid.

    Prints a JSON ready line, then the address to give requesters."""
    from p2p_market.node.config import ConfigError, NodeConfig, load_config
    from p2p_market.proving.backend import DEFAULT_EXTERNAL_TIMEOUT_S
    from p2p_market.roles.wiring import BackendOptions, RolePlan, plan_from_config, prover_plan

    check_log_level(log_level)
    flags = {
        "--market": market,
        "--price": price,
        "--proof-time": proof_time,
        "--capacity": capacity,
        "--backend": backend,
        "--prove-cmd": prove_cmd,
        "--verify-cmd": verify_cmd,
        "--check-cmd": check_cmd,
        "--timeout-s": timeout_s,
        "--listen": listen,
        "--bootstrap": bootstrap,
        "--key": key,
        "--passphrase-file": passphrase_file,
        "--devnet-key": devnet_key_name,
        "--data-dir": data_dir,
        "--api-port": api_port,
    }
    if config is not None:
        given = [flag for flag, value in flags.items() if value is not None]
        if given:
            fail(f"--config and {given[0]} do not mix: put the setting in the config file")
        try:
            cfg = load_config(config)
            passphrase = (
                None if cfg.passphrase_file is None else read_passphrase(cfg.passphrase_file)
            )
            signing = read_key(cfg.key_file, passphrase)
            cfg, plan = plan_from_config(cfg, config.parent)
        except (ConfigError, KeyFileError) as exc:
            fail(str(exc))
        if plan.prover is None:
            fail(f"{config} has no [prover] section")
    else:
        for flag, value in (("--market", market), ("--price", price), ("--proof-time", proof_time)):
            if value is None:
                fail(f"missing {flag} (or give --config FILE)")
        assert market is not None and price is not None and proof_time is not None
        chosen = _market(market)
        options = BackendOptions(
            prove_cmd=prove_cmd,
            verify_cmd=verify_cmd,
            check_cmd=check_cmd,
            timeout_s=DEFAULT_EXTERNAL_TIMEOUT_S if timeout_s is None else timeout_s,
        )
        if backend is not None and backend not in ("pow", "external"):
            fail(f"unknown backend {backend!r}: use pow or external")
        try:
            prover = prover_plan(
                chosen,
                price=price,
                proof_time=proof_time,
                capacity=1 if capacity is None else capacity,
                backend=backend,
                options=options,
            )
        except ValueError as exc:
            fail(str(exc))
        if api_port is not None and not 0 <= api_port <= 65535:
            fail("--api-port must be between 0 and 65535")
        listen_addrs = _check_addrs(listen or [DEFAULT_LISTEN], "--listen", peer=False)
        boot = _check_addrs(bootstrap or [], "--bootstrap", peer=True)
        signing, key_name = _signing_key(key, passphrase_file, devnet_key_name)
        cfg = NodeConfig(
            key_file=key or Path(f"keys/devnet/{key_name}.pem"),
            data_dir=data_dir if data_dir is not None else Path("data") / key_name,
            passphrase_file=passphrase_file,
            listen=listen_addrs,
            bootstrap=boot,
            api_port=0 if api_port is None else api_port,
            markets=(chosen,),
        )
        plan = RolePlan(prover=prover)
    from p2p_market.node.service import configure_logging
    from p2p_market.roles.wiring import serve

    configure_logging(log_level)
    run_node(functools.partial(serve, banner=_prover_banner(plan)), cfg, signing, plan)


# -- request -----------------------------------------------------------------------------


@dataclasses.dataclass
class _Request:
    market: Market
    inputs: bytes
    max_price: int
    max_proof_time: int
    prefer: str
    replicas: int
    confidential: bool
    ttl_ms: int
    bootstrap: tuple[str, ...]
    key: SigningKey | None
    timeout: float
    discover_timeout: float
    verify_cmd: str | None
    out: Path
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
        str, typer.Option("--market", help="devnet, a descriptor file, or a known market id.")
    ] = "devnet",
    prefer: Annotated[
        str, typer.Option("--prefer", help="cost (cheapest first) or time (fastest first).")
    ] = "cost",
    replicas: Annotated[
        int, typer.Option("--replicas", help="Independent proofs from distinct provers (1..16).")
    ] = 1,
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
    ] = 10.0,
    verify_cmd: Annotated[
        str | None,
        typer.Option("--verify-cmd", help="external: verify with this instead of the market's."),
    ] = None,
    api: Annotated[
        str | None,
        typer.Option(
            "--api",
            help="Buy through a running node's control API (signed with its key; it needs a"
            " \\[requester] section) instead of an ephemeral node.",
            show_default=False,
        ),
    ] = None,
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
    chosen = _market(market)
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
    if api is not None:
        for flag, given in (
            ("--bootstrap", bool(bootstrap)),
            ("--key", key is not None),
            ("--confidential", confidential),
        ):
            if given:
                fail(f"{flag} does not go with --api: the running node has its own")
    elif not bootstrap:
        fail("no bootstrap peer given: pass --bootstrap with the address a prover printed")
    try:
        boot = check_bootstrap(bootstrap or [])
    except ValueError as exc:
        fail(f"--bootstrap: {exc}")
    if out.is_dir():
        fail(f"--out is a directory: {out}")
    if not out.parent.is_dir():
        fail(f"--out: no such directory: {out.parent}")
    if not os.access(out.parent, os.W_OK):
        fail(f"--out: cannot write to {out.parent}")
    _check_inputs(chosen, inputs, verify_cmd)
    params = _Request(
        market=chosen,
        inputs=inputs,
        max_price=max_price,
        max_proof_time=max_proof_time,
        prefer=prefer,
        replicas=replicas,
        confidential=confidential,
        ttl_ms=ttl_ms,
        bootstrap=boot,
        key=signing,
        timeout=timeout,
        discover_timeout=discover_timeout,
        verify_cmd=verify_cmd,
        out=out,
    )
    if api is not None:
        raise typer.Exit(_request_via_api(api, params))
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


def _request_via_api(url: str, p: _Request) -> int:
    import trio

    from p2p_market.cli_request_api import buy_via_api
    from p2p_market.roles.wiring import BackendOptions

    backend = BackendOptions(verify_cmd=p.verify_cmd).backend(p.market)
    names = _names()

    def verify(proof: bytes) -> bool:
        return trio.run(backend.verify, p.market, p.inputs, proof)

    client = _client(url)
    with _api_errors():
        return buy_via_api(
            client,
            p,
            who=lambda key: who(key, names),
            write_proofs=_write_proofs,
            verify=verify,
        )


async def _request_session(p: _Request) -> int:
    import trio

    from p2p_market.sdk import RequestFailed, open_client

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    code = 1
    async with open_client(p.bootstrap, p.market, p.key, verify_cmd=p.verify_cmd) as client:
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
    names = _names()
    m = p.market
    with err.status(f"looking for provers in market {m.name}…"):
        bids = await client.wait_for_provers(
            timeout=p.discover_timeout, max_price=p.max_price, max_proof_time=p.max_proof_time
        )
    best = bids[0].bid
    err.print(
        f"found {len(bids)} prover(s) within your caps; cheapest: {best.price} per proof,"
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
    paths = _write_proofs(p.out, list(result.proofs.values()))
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


def _write_proofs(out: Path, proofs: list[bytes]) -> list[Path]:
    """The first proof to `out`, further replicas to `out.2`, `out.3`...; each
    written to a temporary file first, so a proof file on disk is whole."""
    paths = []
    for i, proof in enumerate(proofs):
        path = out if i == 0 else out.with_name(f"{out.name}.{i + 1}")
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_bytes(proof)
        os.replace(tmp, path)
        paths.append(path)
    return paths


# -- the control API: cancel, status, book -----------------------------------------------

ApiOpt = Annotated[
    str,
    typer.Option(
        "--api",
        help="A running node's control API, http://127.0.0.1:PORT (the port is in its ready line).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="The node's JSON answer as it is.")]


def _client(url: str) -> ApiClient:
    from p2p_market.node.api_client import ApiClient, ApiError

    try:
        return ApiClient(url)
    except ApiError as exc:
        fail(exc.message)


@contextlib.contextmanager
def _api_errors() -> Any:
    """An ApiError as one line: exit 2 when the request was bad (4xx, or no node
    there), 1 when the node failed."""
    from p2p_market.node.api_client import ApiError

    try:
        yield
    except ApiError as exc:
        fail(str(exc), 2 if exc.status == 0 or 400 <= exc.status < 500 else 1)


def _ask_id(value: str) -> str:
    if _HEX64.fullmatch(value) is None:
        fail(f"an ask id is 64 hex characters, not {value!r}")
    return value.lower()


def cancel(
    ask_id: Annotated[str, typer.Argument(help="The ask's id (64 hex).", show_default=False)],
    api: ApiOpt,
) -> None:
    """Cancel an ask placed by that node's key, while nobody has won it."""
    client = _client(api)
    ask = _ask_id(ask_id)
    with _api_errors():
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
) -> None:
    """An ask as that node sees it: state, winners, prices, slot states."""
    client = _client(api)
    ask = _ask_id(ask_id)
    with _api_errors():
        view = client.ask(ask)
    if as_json:
        typer.echo(json.dumps(view))
        return
    names = _names()
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
    names = _names()
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
        for b in sorted(book_["bids"], key=lambda b: (b["price"], b["proof_time"], b["prover"])):
            bids.add_row(
                short(b["prover"], names),
                str(b["price"]),
                f"{b['proof_time']} ms",
                str(b["capacity"]),
                _ago(int(b["expires_at"])),
            )
        parts += [asks, "", bids, ""]
    return Group(*parts)


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
) -> None:
    """The order book as that node sees it: asks by state, bids by price and time."""
    client = _client(api)
    wanted: str | None = None
    if market is not None:
        wanted = market.lower() if is_market_id(market) else market_id(_market(market)).hex()

    def fetch() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        with _api_errors():
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
