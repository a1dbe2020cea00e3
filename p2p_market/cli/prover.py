"""`p2p-market prover run`: sell proofs (a node with the prover role).

Heavy imports (trio, libp2p) happen inside the command, so `--help` stays fast.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from p2p_market.cli.common import (
    DEFAULT_LISTEN,
    AnnounceOpt,
    check_addrs,
    check_announce,
    check_log_level,
    fail,
    market_arg,
    run_node,
    who,
)
from p2p_market.core.crypto import SigningKey, devnet_key
from p2p_market.core.envelope import market_id
from p2p_market.markets.devnet import DEVNET_NAMES
from p2p_market.node.keyfile import KeyFileError, read_key, read_passphrase

if TYPE_CHECKING:
    from p2p_market.node.config import NodeConfig
    from p2p_market.roles.wiring import RolePlan

prover_app = typer.Typer(help="Sell proofs: run a prover node.", no_args_is_help=True)


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


def join_if_needed(spec: str, cfg: NodeConfig, base: Path) -> NodeConfig:
    """`cfg`, following the market `spec` names if that is a market id this machine
    has no descriptor for, or a groth16 / plonk market whose artifacts it lacks:
    both are fetched from the bootstrap peers first (cli/joining.py), into the data
    dir, which is put on the artifact search path ($P2P_MARKET_ARTIFACTS) so that
    the prover's back-end finds them. A node's markets are fixed when it starts, so
    this happens before it starts, not while it runs. Anything else: `cfg` as it is
    (the spec is resolved as usual later)."""
    from p2p_market.cli.joining import resolve_or_join
    from p2p_market.roles.wiring import follow

    known = resolve_or_join(
        spec, data_dir=cfg.data_dir, bootstrap=cfg.bootstrap, base=base, also=cfg.markets
    )
    return cfg if known is None else follow(cfg, known)


def _prover_banner(plan: RolePlan) -> Any:
    def banner(ready: dict[str, Any]) -> None:
        p = plan.prover
        assert p is not None
        slots = f"{p.capacity} slot{'s' if p.capacity != 1 else ''}"
        api = ready.get("api_url") or f"http://127.0.0.1:{ready['api_port']}"
        print(
            f"prover {who(ready['public_key'])} bids {p.price} per proof, {p.proof_time} ms,"
            f" {slots}, in market {p.market.name} ({market_id(p.market).hex()[:16]}…)"
        )
        print(f"requesters: --bootstrap {ready['addr']}")
        print(f"control API: {api}  (p2p-market status ASK_ID --api {api})")
        print(f"API token:   {ready['api_token_file']}  (--api-token-file for what changes state)")
        print(f"operate:     p2p-market prover bid show|update|pause|resume --api {api}")
        print(f"             p2p-market prover jobs|earnings --api {api}")
        if ready.get("metrics_url"):
            print(f"metrics:     {ready['metrics_url']}  (Prometheus; docs/metrics.md)")
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
        typer.Option(
            "--market",
            help="devnet, a descriptor file, or a market id: known here, or fetched"
            " (descriptor and artifacts) from the --bootstrap peers.",
        ),
    ] = None,
    price: Annotated[
        int | None,
        typer.Option("--price", help="Price per proof, per unit of work where asks vary in size."),
    ] = None,
    proof_time: Annotated[
        int | None, typer.Option("--proof-time", help="Milliseconds promised per proof.")
    ] = None,
    capacity: Annotated[
        int | None, typer.Option("--capacity", help="Proofs at once (default 1).")
    ] = None,
    max_size: Annotated[
        int | None,
        typer.Option(
            "--max-size",
            help="The largest ask size taken, in units of work (default 1; pow: each"
            " difficulty bit above the market's doubles the size).",
        ),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend",
            help="pow, external, groth16 or plonk (default: the market's system).",
        ),
    ] = None,
    prove_cmd: Annotated[
        str | None, typer.Option("--prove-cmd", help="external: prove command template.")
    ] = None,
    verify_cmd: Annotated[
        str | None, typer.Option("--verify-cmd", help="external: verify command template.")
    ] = None,
    size_cmd: Annotated[
        str | None,
        typer.Option(
            "--size-cmd",
            help="external: prints the work the inputs need (checked against the ask's size).",
        ),
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
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            help="Prometheus metrics (GET /metrics) on this port of 127.0.0.1 (0: any;"
            " default -1: off). docs/metrics.md lists them.",
        ),
    ] = None,
    log_level: Annotated[
        str, typer.Option("--log-level", help="debug, info, warning or error.")
    ] = "info",
    announce: AnnounceOpt = None,
) -> None:
    """Run a prover until Ctrl-C or SIGTERM: bid, commit, prove, deliver, get paid.

    Prints a JSON ready line, then the address to give requesters."""
    from p2p_market.cli.joining import resolve_listed
    from p2p_market.node.config import ConfigError, NodeConfig, load_config
    from p2p_market.proving.backend import DEFAULT_EXTERNAL_TIMEOUT_S
    from p2p_market.roles.wiring import BackendOptions, RolePlan, plan_from_config, prover_plan

    check_log_level(log_level)
    flags = {
        "--market": market,
        "--price": price,
        "--proof-time": proof_time,
        "--capacity": capacity,
        "--max-size": max_size,
        "--backend": backend,
        "--prove-cmd": prove_cmd,
        "--verify-cmd": verify_cmd,
        "--check-cmd": check_cmd,
        "--size-cmd": size_cmd,
        "--timeout-s": timeout_s,
        "--listen": listen,
        "--bootstrap": bootstrap,
        "--key": key,
        "--passphrase-file": passphrase_file,
        "--devnet-key": devnet_key_name,
        "--data-dir": data_dir,
        "--api-port": api_port,
        "--metrics-port": metrics_port,
        "--announce": announce,
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
            cfg = resolve_listed(cfg, config.parent)
            spec = cfg.roles.get("prover", {}).get("market")
            if isinstance(spec, str):
                cfg = join_if_needed(spec, cfg, config.parent)
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
        if api_port is not None and not 0 <= api_port <= 65535:
            fail("--api-port must be between 0 and 65535")
        if metrics_port is not None and not -1 <= metrics_port <= 65535:
            fail(f"--metrics-port {metrics_port}: use a port 1..65535, 0 for any, -1 for off")
        listen_addrs = check_addrs(listen or [DEFAULT_LISTEN], "--listen", peer=False)
        boot = check_addrs(bootstrap or [], "--bootstrap", peer=True)
        signing, key_name = _signing_key(key, passphrase_file, devnet_key_name)
        cfg = NodeConfig(
            key_file=key or Path(f"keys/devnet/{key_name}.pem"),
            data_dir=data_dir if data_dir is not None else Path("data") / key_name,
            passphrase_file=passphrase_file,
            listen=listen_addrs,
            bootstrap=boot,
            announce=check_announce(announce),
            api_port=0 if api_port is None else api_port,
            metrics_port=-1 if metrics_port is None else metrics_port,
            markets=(),
        )
        cfg = join_if_needed(market, cfg, Path())
        chosen = cfg.markets[0] if cfg.markets else market_arg(market)
        cfg = dataclasses.replace(cfg, markets=(chosen,))
        options = BackendOptions(
            prove_cmd=prove_cmd,
            verify_cmd=verify_cmd,
            check_cmd=check_cmd,
            size_cmd=size_cmd,
            timeout_s=DEFAULT_EXTERNAL_TIMEOUT_S if timeout_s is None else timeout_s,
        )
        if backend is not None and backend not in ("pow", "external", "groth16", "plonk"):
            fail(f"unknown backend {backend!r}: use pow, external, groth16 or plonk")
        try:
            prover = prover_plan(
                chosen,
                price=price,
                proof_time=proof_time,
                capacity=1 if capacity is None else capacity,
                max_size=1 if max_size is None else max_size,
                backend=backend,
                options=options,
            )
        except ValueError as exc:
            fail(str(exc))
        plan = RolePlan(prover=prover)
    from p2p_market.node.service import configure_logging
    from p2p_market.roles.wiring import serve

    configure_logging(log_level)
    run_node(functools.partial(serve, banner=_prover_banner(plan)), cfg, signing, plan)


def register(app: typer.Typer) -> None:
    from p2p_market.cli import prover_ops

    prover_ops.register(prover_app)
    app.add_typer(prover_app, name="prover")
