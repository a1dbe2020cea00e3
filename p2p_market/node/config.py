"""Node configuration from TOML: every key checked by the schema
(node/config_schema.py, which also writes docs/config.md's tables), then what keys
say together, so that a bad file gets one line naming the problem instead of a
traceback.

    [node]
    key_file = "keys/node.pem"          # Ed25519 PKCS#8 PEM (p2p-market keys new)
    passphrase_file = ""                # optional, for an encrypted key
    data_dir = "data/node"              # the SQLite log lives here
    listen = ["/ip4/127.0.0.1/tcp/4701"] # /ip4/0.0.0.0/tcp/4701 for a real deployment
    announce = []                       # addresses told to peers instead (NAT, DNS)
    bootstrap = []                      # multiaddrs with /p2p/<peer id>; /dns4, /dns6 too
    api_port = 0                        # control API port; 0 = any free port
    api_listen = "127.0.0.1"            # another address needs api_token_everywhere
    api_token_everywhere = false        # the token on every call, GETs too
    metrics_port = -1                   # Prometheus; -1 = off
    metrics_listen = "127.0.0.1"        # another address needs api_token_everywhere
    frames_per_second = 2.0             # gossip frame budget (see net/batcher.py)
    batching = true                     # false: one envelope per frame, no budget (benchmarks)
    mesh_degree = 0                     # gossip mesh peers per market; 0 = sized to the market
    muxer = "yamux"                     # or "mplex"; the same on every node
    gossip_idontwant = false            # offer GossipSub v1.2 (IDONTWANT)
    sync_every_s = 30.0                 # anti-entropy: a full sync with peers this often
    announce_every_s = 300.0            # announce the markets followed this often
    keepalive_every_s = 5.0             # ping every peer this often (dead-peer detection)
    keepalive_misses = 3                # a peer missing this many pings in a row is dropped
    redial_max_s = 60.0                 # back-off cap when redialling a dropped peer
    relay_service = false               # serve circuit relay v2 to nodes behind NAT
    reachability = "public"             # "private": no inbound connections; use relays
    relays = []                         # relay peers (full multiaddrs) a private node uses

    [[markets]]                         # "devnet" or the fields of a Market descriptor
    preset = "devnet"
    [[markets]]                         # or a descriptor file (p2p-market market create)
    descriptor = "markets/quick-pow.toml"
    [[markets]]                         # or a market id: fetched from the bootstrap peers
    id = "<64 hex>"                     # before the node starts if not held here

    [prover]                            # optional roles, see roles/wiring.py
    [requester]
    [workload]                          # roles/workload.py
"""

from __future__ import annotations

import contextlib
import ipaddress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from p2p_market.core.messages import Market, MessageError
from p2p_market.markets.descriptor import MarketSpecError, read_descriptor, resolve_market
from p2p_market.markets.descriptor_schema import MarketDescriptor
from p2p_market.markets.devnet import default_market
from p2p_market.node.config_schema import (
    ANNOUNCE_EVERY_S as ANNOUNCE_EVERY_S,
)
from p2p_market.node.config_schema import (
    ANTI_ENTROPY_S as ANTI_ENTROPY_S,
)
from p2p_market.node.config_schema import (
    DEFAULT_LISTEN as DEFAULT_LISTEN,
)
from p2p_market.node.config_schema import (
    DEFAULT_PORT as DEFAULT_PORT,
)
from p2p_market.node.config_schema import (
    KEEPALIVE_EVERY_S,
    KEEPALIVE_MISSES,
    REDIAL_MAX_S,
    ROLE_SECTIONS,
    SECTIONS,
    ConfigError,
    MarketEntry,
    NodeSection,
    validate,
)
from p2p_market.node.tomlfile import read_toml

__all__ = ["ROLE_SECTIONS", "SECTIONS", "ConfigError", "NodeConfig", "load_config", "parse_config"]


@dataclass(frozen=True, slots=True)
class NodeConfig:
    key_file: Path
    data_dir: Path
    passphrase_file: Path | None = None
    listen: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)
    """Any free port for a node built in code (tests, the SDK's client); a config
    file and the CLI default to DEFAULT_LISTEN."""
    bootstrap: tuple[str, ...] = ()
    announce: tuple[str, ...] = ()
    """Addresses told to peers instead of the listen addresses (net/addrs.py)."""
    api_port: int = 0
    api_listen: str = "127.0.0.1"
    metrics_port: int = -1
    metrics_listen: str = "127.0.0.1"
    api_token_everywhere: bool = False
    """The API token on every call of the control API and the metrics, reads too:
    required to bind either to an address other than loopback (node/api_token.py)."""
    frames_per_second: float = 2.0
    batching: bool = True
    """False: every envelope is sent at once in a frame of its own, with no frame
    budget (net/gossip.py `unbatched`). Only to measure what batching gains
    (`p2p-market bench net`); a network of such nodes runs out of frames."""
    mesh_degree: int = 0
    """GossipSub's D for every market's mesh; 0 sizes it to the market's peers
    (net/gossip.py `sized_degree`)."""
    muxer: Literal["yamux", "mplex"] = "yamux"
    gossip_idontwant: bool = False
    sync_every_s: float = ANTI_ENTROPY_S
    """Anti-entropy period: gossip is best effort, so every node also pulls what its
    peers hold and it lacks this often (and at once from every new peer)."""
    announce_every_s: float = ANNOUNCE_EVERY_S
    """How often the node announces the markets it follows (node/discovery.py), besides
    at start and a moment after a peer connects."""
    keepalive_every_s: float = KEEPALIVE_EVERY_S
    """Each connected peer is pinged this often, and given this long to answer
    (net/keepalive.py)."""
    keepalive_misses: int = KEEPALIVE_MISSES
    """A peer that misses this many pings in a row is disconnected as dead."""
    redial_max_s: float = REDIAL_MAX_S
    """A dropped peer is redialled after 1, 2, 4 ... s, at most this far apart."""
    relay_service: bool = False
    """Serve circuit relay v2 (hop): take reservations of nodes that cannot be
    dialled and relay connections to them (net/relay.py, docs/reachability.md)."""
    reachability: str = "public"
    """"private": the node takes no inbound connection (behind NAT, or no listen
    address at all); it keeps a slot on each of `relays` and peers reach it there."""
    relays: tuple[str, ...] = ()
    """Relay peers a private node reserves a slot on, full multiaddrs with /p2p/."""
    markets: tuple[Market, ...] = field(default_factory=lambda: (default_market(),))
    market_ids: tuple[bytes, ...] = ()
    """Markets a config names by id alone (`[[markets]] id = ...`) whose descriptor
    is nowhere on this machine yet: the CLI fetches them from the bootstrap peers
    and moves them to `markets` before the node starts (a node refuses to start
    with any left here: its markets are fixed when it starts)."""
    roles: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Role sections ([prover], [requester]) passed through to the roles."""


def _reachability(node: NodeSection) -> None:
    """node.reachability, node.relays and node.relay_service, checked together
    (docs/reachability.md)."""
    for addr in node.relays:
        if "/p2p-circuit" in addr or "/tcp/" not in addr or "/p2p/" not in addr:
            raise ConfigError(
                f"node.relays: {addr!r} is not a relay's TCP multiaddr with /p2p/<peer id>"
            )
    if node.reachability == "private" and not node.relays:
        raise ConfigError(
            'node.reachability = "private" needs node.relays: the relay peers to reserve'
            " a slot on (nodes with relay_service = true)"
        )
    if node.reachability == "public" and node.relays:
        raise ConfigError('node.relays is only used with node.reachability = "private"')
    if node.reachability == "private" and node.relay_service:
        raise ConfigError(
            'node.relay_service needs a node others can dial, not reachability = "private"'
        )


def check_exposure(cfg: NodeConfig) -> None:
    """ConfigError unless every HTTP server bound off loopback asks for the token on
    every call: the control API's reads (book, asks, status) and the metrics tell
    who trades what, and its writes spend the node's key."""
    if cfg.api_token_everywhere:
        return
    for key, ip, on in (
        ("api_listen", cfg.api_listen, True),
        ("metrics_listen", cfg.metrics_listen, cfg.metrics_port >= 0),
    ):
        if on and not ipaddress.ip_address(ip).is_loopback:
            raise ConfigError(
                f"node.{key} = {ip!r} is not loopback: set node.api_token_everywhere = true"
                " (the API token on every call, reads and metrics too) to expose it"
            )


def _by_id(mid: bytes, base: Path, data_dir: Path) -> Market | bytes:
    """The market of `[[markets]] id = ...` if this machine holds its descriptor (in
    `markets/` beside the config, or fetched earlier into the data dir's markets/),
    else the id, to be fetched from peers before the node starts."""
    fetched = data_dir / "markets" / f"{mid.hex()}.toml"
    also = []
    try:  # a path the system cannot look at (too long, ...) holds nothing
        if fetched.is_file():
            with contextlib.suppress(MarketSpecError):
                also.append(read_descriptor(fetched))
        return resolve_market(mid.hex(), base=base, also=also)
    except (MarketSpecError, OSError):
        return mid


_FORMS = frozenset(MarketEntry.model_fields)


def _market(entry: Any, index: int, base: Path, data_dir: Path) -> Market | bytes:
    """One [[markets]] entry: a short form alone (the schema's MarketEntry), or a
    descriptor's fields inline."""
    where = f"markets[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a table")
    forms = _FORMS & set(entry)
    if not forms:  # a descriptor inline: the schema of a descriptor file, then Market
        try:
            validate(MarketDescriptor, entry, "")
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        try:
            return Market(**entry)
        except (TypeError, MessageError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if len(entry) != 1:
        form = sorted(forms)[0]
        raise ConfigError(f"{where}: {form} must be alone in its entry, with no other keys")
    short = validate(MarketEntry, entry, where)
    if short.id is not None:
        return _by_id(short.id, base, data_dir)
    if short.descriptor is not None:
        try:
            return read_descriptor(base / short.descriptor)
        except MarketSpecError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return default_market()


def parse_config(data: dict[str, Any], base: Path) -> NodeConfig:
    """Build a NodeConfig from parsed TOML; relative paths are relative to `base`.
    Every key is checked by the schema (node/config_schema.py), then what keys
    say together."""
    if "node" not in data:
        raise ConfigError("missing [node] section")
    node = validate(NodeSection, data["node"], "node")
    _reachability(node)
    unknown_sections = sorted(set(data) - set(SECTIONS))
    if unknown_sections:
        raise ConfigError(f"unknown section [{unknown_sections[0]}]")
    markets_raw = data.get("markets", [{"preset": "devnet"}])
    if not isinstance(markets_raw, list) or not markets_raw:
        raise ConfigError("markets must be a non-empty list of tables ([[markets]])")
    roles = {k: v for k, v in data.items() if k in ROLE_SECTIONS}
    for name, section in roles.items():
        if not isinstance(section, dict):
            raise ConfigError(f"[{name}] must be a table")
    data_dir = base / node.data_dir
    listed = [_market(m, i, base, data_dir) for i, m in enumerate(markets_raw)]
    cfg = NodeConfig(
        key_file=base / node.key_file,
        data_dir=data_dir,
        passphrase_file=base / node.passphrase_file if node.passphrase_file else None,
        listen=tuple(node.listen),
        bootstrap=tuple(node.bootstrap),
        announce=tuple(node.announce),
        api_port=node.api_port,
        api_listen=node.api_listen,
        metrics_port=node.metrics_port,
        metrics_listen=node.metrics_listen,
        api_token_everywhere=node.api_token_everywhere,
        frames_per_second=node.frames_per_second,
        batching=node.batching,
        mesh_degree=node.mesh_degree,
        muxer=node.muxer,
        gossip_idontwant=node.gossip_idontwant,
        sync_every_s=node.sync_every_s,
        announce_every_s=node.announce_every_s,
        keepalive_every_s=node.keepalive_every_s,
        keepalive_misses=node.keepalive_misses,
        redial_max_s=node.redial_max_s,
        relay_service=node.relay_service,
        reachability=node.reachability,
        relays=tuple(node.relays),
        markets=tuple(m for m in listed if isinstance(m, Market)),
        market_ids=tuple(m for m in listed if isinstance(m, bytes)),
        roles=roles,
    )
    check_exposure(cfg)
    return cfg


def with_announce(cfg: NodeConfig, announce: tuple[str, ...]) -> NodeConfig:
    """`cfg` with `announce` (from --announce) in place of its own, if given."""
    return replace(cfg, announce=announce) if announce else cfg


def load_config(path: Path) -> NodeConfig:
    data = read_toml(path, "config file", ConfigError)
    return parse_config(data, path.parent)
