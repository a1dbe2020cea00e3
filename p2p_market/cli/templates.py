"""`p2p-market init relay|prover|requester`: a commented node config that
`p2p-market node run --config FILE` runs as is on the devnet market.

Writing a node config by hand means reading docs/config.md key by key; a template
that already runs, with every key it sets explained where it is set, is the shorter
way in, and the place to start editing from.

Identity: each template gets a fresh key file of its own beside it (`keys new`'s
format, mode 0600), never a devnet key. A devnet key is public: anyone can sign as
that node (bid, commit, cancel its asks), and a template is what gets copied to a
real machine. The one thing a shared key would buy, a relay address known in
advance, comes instead from the relay's own template: `init prover` and `init
requester` read `relay.toml` beside them (or `--relay FILE`), derive its peer id
from its key file, and write its address as their bootstrap peer. `--key-file`
takes a key of one's own instead; `--passphrase-file` encrypts the new key (or opens
the given one) and goes into the config as `passphrase_file`. An existing key file
is never replaced, `--force` or not: the relay's peer id is in the others' configs.

Ports are fixed per role (relay 4701, prover 4702, requester 4703; control APIs
4711, 4712, 4713) so that the three templates run side by side on one machine, and
the addresses and API URLs a user types stay the same across restarts.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Final

import typer

from p2p_market.cli.common import check_addrs, fail
from p2p_market.markets.devnet import default_market

ROLES: Final = ("relay", "prover", "requester")
LISTEN_PORTS: Final = {"relay": 4701, "prover": 4702, "requester": 4703}
"""The default listen port of each role: the relay's is the node default (4701);
the others differ so that all three run on one machine."""
API_PORTS: Final = {"relay": 4711, "prover": 4712, "requester": 4713}
"""Fixed control-API ports, so that `--api http://127.0.0.1:4713` in the README and
in the templates' comments is exact."""
PRICE: Final = 10
PROOF_TIME_MS: Final = 5000
CAPACITY: Final = 1
DOC: Final = "docs/config.md"


@dataclass(frozen=True, slots=True)
class MarketRef:
    """How a template names its market: the `[[markets]]` entry's key and value; the
    value is also the spec `[prover] market` and `request --market` take."""

    key: str  # "preset", "descriptor" or "id"
    value: str


@dataclass(frozen=True, slots=True)
class Template:
    """What a template says, already checked; `render` turns it into TOML."""

    role: str
    key_file: str
    passphrase_file: str | None
    key_made: bool
    """Whether init made the key (else it was given, or there already)."""
    data_dir: str
    listen: str
    api_port: int
    bootstrap: tuple[str, ...]
    market: MarketRef
    relay_from: str | None = None
    """The relay config the bootstrap address was read from, for its comment."""


def _q(value: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(value, ensure_ascii=False)


def _list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(_q(v) for v in values) + "]"


def _market_comment(market: MarketRef) -> str:
    if market.key == "preset":
        devnet = default_market()
        return (
            f'# preset = "devnet": the built-in {devnet.name} market (the `pow` demo proof\n'
            "# system, not zero-knowledge: nothing else to install; difficulty"
            f" {devnet.difficulty},\n# {devnet.commit_window_ms / 1000:g} s commit window)."
            " Another market: descriptor = FILE or id = MARKET_ID."
        )
    if market.key == "descriptor":
        return (
            "# descriptor: the market descriptor file (`p2p-market market create`),\n"
            "# relative to this file; every node of the market holds the same file."
        )
    return (
        "# id: the market's id alone; a descriptor not held here is fetched from the\n"
        "# bootstrap peers before the node starts."
    )


def render(t: Template) -> str:
    """The commented TOML of `t`. Every key it sets has a comment above it, and every
    section header names its section of docs/config.md (tests check both)."""
    port = t.listen.rsplit("/", 1)[-1]
    lines = [
        f"# p2p-market node config: a {t.role}, written by `p2p-market init {t.role}`.",
        "# Run it: p2p-market node run --config THIS_FILE",
        f'# Every key: {DOC}, "Node config". Relative paths are relative to the',
        "# directory of this file.",
        "#",
    ]
    if t.role == "relay":
        lines += [
            "# A relay runs no role: it follows the market, keeps its signed messages and",
            "# hands them on, so the provers and requesters that bootstrap from it find",
            "# each other (and sync from it what they missed). Start it first.",
        ]
    elif t.role == "prover":
        lines += [
            "# A prover sells proofs: it keeps a bid in the market, commits to the asks",
            "# it wins, proves them and delivers the proofs.",
        ]
    else:
        lines += [
            "# A requester buys proofs through this long-lived node: asks placed through",
            "# its control API are signed with its key, and it verifies and receipts the",
            "# proofs itself.",
        ]
    lines += [
        "",
        f"# [node] ({DOC}, Node config, [node]): identity, network, storage.",
        "[node]",
        "# key_file: this node's identity, an Ed25519 key (PKCS#8 PEM)"
        + (", made for it by init." if t.key_made else "."),
        "# Keep it, and keep it secret: peers know the node by it, and whoever holds",
        "# it signs as the node. "
        + (
            "Encrypted: its passphrase is in passphrase_file."
            if t.passphrase_file
            else "NOT encrypted (init --passphrase-file F encrypts one)."
        ),
        f"key_file = {_q(t.key_file)}",
        *(
            [
                "# passphrase_file: the file holding the passphrase of key_file.",
                f"passphrase_file = {_q(t.passphrase_file)}",
            ]
            if t.passphrase_file
            else []
        ),
        "# data_dir: the node's SQLite log of signed messages, and its control-API",
        "# token (api.token, written at the first start).",
        f"data_dir = {_q(t.data_dir)}",
        "# listen: a fixed port, so that the node's address survives a restart."
        + (" This machine" if "/127.0.0.1/" in t.listen else ""),
        *(
            [f"# only; to be reached from others: /ip4/0.0.0.0/tcp/{port} (open TCP {port})."]
            if "/127.0.0.1/" in t.listen
            else []
        ),
        f"listen = [{_q(t.listen)}]",
    ]
    if t.bootstrap:
        source = f": the relay's address (from {t.relay_from})" if t.relay_from else ""
        lines += [
            f"# bootstrap: the peers dialled at start{source}.",
            "# Peers learnt later are remembered in data_dir/peers.json.",
        ]
    else:
        lines += [
            "# bootstrap: none: this is the first node. The others bootstrap from its",
            "# address, /ip4/…/tcp/PORT/p2p/PEER_ID: `p2p-market keys show --file",
            f"# {t.key_file} --port {port}` or the node's ready line prints it.",
        ]
    lines += [
        f"bootstrap = {_list(t.bootstrap)}",
        "# api_port: the control API, on 127.0.0.1 only (`status`, `book`, `cancel`,",
        "# `request --api`); 0 is any free port (the ready line prints it).",
        f"api_port = {t.api_port}",
        "",
        f"# [[markets]] ({DOC}, Node config, [[markets]]): the markets this node follows.",
        "[[markets]]",
        _market_comment(t.market),
        f"{t.market.key} = {_q(t.market.value)}",
    ]
    if t.role == "prover":
        lines += [
            "",
            f"# [prover] ({DOC}, Node config, [prover]): sell proofs in one market.",
            "[prover]",
            "# market: the market this prover bids in (devnet, a descriptor file, a market id).",
            f"market = {_q(t.market.value)}",
            "# price: base units asked per proof (per unit of work); asks whose max price is",
            "# lower are not taken.",
            f"price = {PRICE}",
            "# proof_time: ms promised per proof, the deadline after a win; asks whose max",
            "# proof time is shorter are not taken.",
            f"proof_time = {PROOF_TIME_MS}",
            "# capacity: proofs at once (the bid's parallel slots).",
            f"capacity = {CAPACITY}",
        ]
    elif t.role == "requester":
        api = f"http://127.0.0.1:{t.api_port if t.api_port else 'PORT'}"
        market = "" if t.market.value == "devnet" else f" --market {t.market.value}"
        lines += [
            "",
            f"# [requester] ({DOC}, Node config, [requester]): buy proofs through this node.",
            "# Empty is enough for a pow market. Buy one proof, from this file's directory",
            "# (the paths are relative to it; the token file is in data_dir):",
            f"#   p2p-market request --api {api}{market} \\",
            f"#       --api-token-file {t.data_dir}/api.token --input inputs.txt \\",
            "#       --max-price 20 --max-proof-time 10000 --out proof.bin",
            "# It exits 0 with the proof verified (by this node, and again before it is",
            f"# written); `p2p-market status ASK_ID --api {api}` shows an ask.",
            "[requester]",
            "# Optional keys, left at their defaults here:",
            "# award_lag_ms = 250   (wait this long after a commit window for late commits)",
            '# verify_cmd = ""      (external markets: run your own verify command)',
        ]
    return "\n".join(lines) + "\n"


# -- the command ---------------------------------------------------------------------


def _relative(path: Path, base: Path) -> str:
    """`path` as the config writes it: relative to the config's directory."""
    return os.path.relpath(path.resolve(), base.resolve())


def _market_ref(spec: str, base: Path) -> MarketRef:
    from p2p_market.markets.descriptor import MarketSpecError, is_market_id, read_descriptor

    spec = spec.strip()
    if spec == "devnet":
        return MarketRef("preset", "devnet")
    if is_market_id(spec):
        return MarketRef("id", spec.lower())
    path = Path(spec)
    try:
        read_descriptor(path)
    except MarketSpecError as exc:
        fail(f"--market: {exc} (devnet, a descriptor file or a market id)")
    return MarketRef("descriptor", _relative(path, base))


def relay_address(path: Path) -> str:
    """The address to bootstrap from a relay whose config is `path`: its first
    announce or listen address (a wildcard read as this machine's loopback), and the
    peer id of its key file. One line and exit 2 if there is none."""
    from p2p_market.net.host import peer_id_of
    from p2p_market.node.config import ConfigError, load_config
    from p2p_market.node.keyfile import KeyFileError, read_key, read_passphrase

    try:
        cfg = load_config(path)
        passphrase = None if cfg.passphrase_file is None else read_passphrase(cfg.passphrase_file)
        key = read_key(cfg.key_file, passphrase)
    except (ConfigError, KeyFileError, OSError) as exc:
        fail(f"--relay {path}: {exc}")
    addr = (cfg.announce or cfg.listen)[0]
    parts = addr.split("/")
    if len(parts) != 5 or parts[3] != "tcp":
        fail(f"--relay {path}: {addr} is not HOST/tcp/PORT: give --bootstrap ADDR instead")
    wildcard = {"0.0.0.0": "127.0.0.1", "::": "::1"}
    host = wildcard.get(parts[2], parts[2])
    if parts[4] == "0":
        fail(
            f"--relay {path} listens on tcp/0, a new port at each start: give --bootstrap"
            " with the address its ready line prints"
        )
    return f"/{parts[1]}/{host}/tcp/{parts[4]}/p2p/{peer_id_of(key.public_key).to_base58()}"


def init(
    role: Annotated[str, typer.Argument(help="relay, prover or requester.", show_default=False)],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="The config file to write (default: ROLE.toml).", show_default=False
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing config (its key file is kept).")
    ] = False,
    market: Annotated[
        str, typer.Option("--market", help="devnet, a descriptor file, or a market id.")
    ] = "devnet",
    key_file: Annotated[
        Path | None,
        typer.Option(
            "--key-file",
            help="Use this key file (p2p-market keys new) instead of a new one beside the"
            " config (OUT with .pem).",
            show_default=False,
        ),
    ] = None,
    listen: Annotated[
        str | None,
        typer.Option(
            "--listen",
            help="The listen multiaddr (default /ip4/127.0.0.1/tcp/PORT: relay 4701, prover"
            " 4702, requester 4703).",
            show_default=False,
        ),
    ] = None,
    api_port: Annotated[
        int | None,
        typer.Option(
            "--api-port",
            help="Control API port (default: relay 4711, prover 4712, requester 4713; 0 any).",
            show_default=False,
        ),
    ] = None,
    bootstrap: Annotated[
        list[str] | None,
        typer.Option(
            "--bootstrap",
            help="A peer's full multiaddr (repeatable), instead of the relay's address.",
            show_default=False,
        ),
    ] = None,
    passphrase_file: Annotated[
        Path | None,
        typer.Option(
            "--passphrase-file",
            help="The passphrase of --key-file, or to encrypt the new key with (its final"
            " line break is dropped); written to the config as passphrase_file.",
            show_default=False,
        ),
    ] = None,
    relay: Annotated[
        Path | None,
        typer.Option(
            "--relay",
            help="prover, requester: bootstrap from the relay this config describes"
            " (default: relay.toml beside OUT).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Write a commented node config for ROLE that `p2p-market node run --config OUT`
    runs as is on the devnet market, with a new key file beside it."""
    if role not in ROLES:
        fail(f"unknown role {role!r}: use relay, prover or requester")
    out = out if out is not None else Path(f"{role}.toml")
    base = out.parent
    if out.suffix == ".pem":
        fail(f"--out {out}: a .pem name is for the key file beside the config")
    if out.is_dir():
        fail(f"--out is a directory: {out}")
    if out.exists() and not force:
        fail(f"{out} exists: not overwriting it (--force replaces it)")
    if not base.is_dir():
        fail(f"--out: no such directory: {base}")
    if api_port is None:
        api_port = API_PORTS[role]
    if not 0 <= api_port <= 65535:
        fail(f"--api-port must be between 0 and 65535, not {api_port}")
    if listen is None:
        listen = f"/ip4/127.0.0.1/tcp/{LISTEN_PORTS[role]}"
    check_addrs([listen], "--listen", peer=False)
    ref = _market_ref(market, base)
    peers = check_addrs(bootstrap or [], "--bootstrap", peer=True)
    relay_from = None
    if peers and relay is not None:
        fail("give --bootstrap or --relay, not both")
    if role == "relay" and relay is not None:
        fail("--relay is for a prover or a requester: a relay may take --bootstrap")
    if role != "relay" and not peers:
        relay = relay if relay is not None else base / "relay.toml"
        if not relay.is_file():
            fail(
                f"no relay config {relay} to bootstrap from: write it first (p2p-market init"
                " relay), or give --relay FILE or --bootstrap ADDR"
            )
        peers = (relay_address(relay),)
        relay_from = _relative(relay, base)
    key_path = key_file if key_file is not None else out.with_suffix(".pem")
    key_note = _key(key_path, made=key_file is None, passphrase_file=passphrase_file)
    template = Template(
        role=role,
        key_file=_relative(key_path, base),
        passphrase_file=None if passphrase_file is None else _relative(passphrase_file, base),
        key_made=key_note.startswith("new"),
        data_dir=f"data/{out.stem}",
        listen=listen,
        api_port=api_port,
        bootstrap=peers,
        market=ref,
        relay_from=relay_from,
    )
    try:
        with out.open("w" if force else "x", encoding="utf-8") as f:
            f.write(render(template))
    except FileExistsError:
        fail(f"{out} exists: not overwriting it (--force replaces it)")
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror}")
    typer.echo(f"wrote {out}: a {role} on {listen}, control API port {api_port}")
    typer.echo(f"key file: {key_path} ({key_note})")
    if role == "relay" and not listen.endswith("/tcp/0"):
        typer.echo(f"others bootstrap from: {relay_address(out)}")
    typer.echo(f"run it:  p2p-market node run --config {out}")


def _key(path: Path, *, made: bool, passphrase_file: Path | None) -> str:
    """Make sure the config's key file is there and opens with the passphrase: the
    default one beside OUT is made if missing and kept if there (a relay's peer id
    is in the others' bootstrap: replacing its key would cut them off); a given one
    must be. Says which."""
    from p2p_market.node.keyfile import (
        KeyFileError,
        new_key,
        read_key,
        read_passphrase,
        write_key,
    )

    try:
        passphrase = None if passphrase_file is None else read_passphrase(passphrase_file)
        if made and not path.exists():
            write_key(path, new_key(), passphrase)
            return f"new, {'encrypted' if passphrase else 'NOT encrypted'}, mode 0600"
        read_key(path, passphrase)
    except KeyFileError as exc:
        hint = " (--passphrase-file FILE)" if "passphrase is needed" in str(exc) else ""
        fail(f"{'--key-file' if not made else 'key file'}: {exc}{hint}")
    return "kept: it was there" if made else "given"


def register(app: typer.Typer) -> None:
    app.command("init")(init)
