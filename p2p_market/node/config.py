"""Node configuration from TOML, checked field by field so that a bad file gets one
line naming the problem instead of a traceback.

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
from typing import Any

import multiaddr

from p2p_market.core.messages import Market, MessageError
from p2p_market.markets.descriptor import (
    MarketSpecError,
    is_market_id,
    read_descriptor,
    resolve_market,
)
from p2p_market.markets.devnet import default_market
from p2p_market.node.tomlfile import read_toml

ROLE_SECTIONS = ("prover", "requester", "workload")
"""Sections passed through to roles/wiring.py."""
SECTIONS = ("node", "markets", *ROLE_SECTIONS)
"""Every section a config may have; any other is an error."""


class ConfigError(ValueError):
    """One line that names the bad setting."""


DEFAULT_PORT = 4701
"""The listen port when none is given: fixed, so that a node's address (which peers
keep, and operators hand out) survives a restart. Port 0 (any free port) is still
possible, explicitly."""
DEFAULT_LISTEN = f"/ip4/127.0.0.1/tcp/{DEFAULT_PORT}"

REMOVED_KEYS = {
    "mdns": "node.mdns was removed: it was never used (py-libp2p's mDNS runs zeroconf"
    " in threads of its own); give peers with bootstrap instead",
}
"""Keys that once existed, with what to do instead: a config that still has one gets
that line rather than a bare "unknown setting"."""


ANNOUNCE_EVERY_S = 300.0
"""Default period of market announcements (node.announce_every_s)."""
ANTI_ENTROPY_S = 30.0
"""Default period of the full sync with peers (node.sync_every_s)."""
KEEPALIVE_EVERY_S = 5.0
KEEPALIVE_MISSES = 3
REDIAL_MAX_S = 60.0


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


_NODE_KEYS = {
    "key_file", "passphrase_file", "data_dir", "listen", "bootstrap", "announce",
    "api_port", "api_listen", "api_token_everywhere", "metrics_port", "metrics_listen",
    "frames_per_second", "batching", "sync_every_s", "announce_every_s", "keepalive_every_s",
    "keepalive_misses", "redial_max_s", "relay_service", "reachability", "relays",
}  # fmt: skip
REACHABILITY = ("public", "private")


def typed(table: dict[str, Any], key: str, kind: type, where: str) -> Any:
    """`table[key]` if it is a `kind` (an int does for a float), else ConfigError."""
    value = table[key]
    if kind is float and type(value) is int:
        try:
            value = float(value)
        except OverflowError:  # tomllib reads integers of any size, not only 64-bit ones
            raise ConfigError(f"{where}.{key} is too large a number") from None
    if type(value) is not kind:
        raise ConfigError(f"{where}.{key} must be {kind.__name__}, not {type(value).__name__}")
    return value


def _addrs(values: Any, where: str) -> tuple[str, ...]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ConfigError(f"{where} must be a list of multiaddr strings")
    for v in values:
        try:
            multiaddr.Multiaddr(v)
        except Exception as exc:  # the library raises several unrelated types
            raise ConfigError(f"{where}: not a multiaddr: {v!r} ({exc})") from None
    return tuple(values)


def _reachability(node: dict[str, Any], relay_service: bool) -> tuple[str, tuple[str, ...]]:
    """node.reachability and node.relays, checked together (docs/reachability.md)."""
    reachability = typed(node, "reachability", str, "node") if "reachability" in node else "public"
    if reachability not in REACHABILITY:
        raise ConfigError(f'node.reachability must be "public" or "private", not {reachability!r}')
    relays = _addrs(node.get("relays", []), "node.relays")
    for addr in relays:
        if "/p2p-circuit" in addr or "/tcp/" not in addr or "/p2p/" not in addr:
            raise ConfigError(
                f"node.relays: {addr!r} is not a relay's TCP multiaddr with /p2p/<peer id>"
            )
    if reachability == "private" and not relays:
        raise ConfigError(
            'node.reachability = "private" needs node.relays: the relay peers to reserve'
            " a slot on (nodes with relay_service = true)"
        )
    if reachability == "public" and relays:
        raise ConfigError('node.relays is only used with node.reachability = "private"')
    if reachability == "private" and relay_service:
        raise ConfigError(
            'node.relay_service needs a node others can dial, not reachability = "private"'
        )
    return reachability, relays


def _bind_ip(table: dict[str, Any], key: str) -> str:
    """An IP address to bind a local HTTP server to (default loopback)."""
    if key not in table:
        return "127.0.0.1"
    value = typed(table, key, str, "node")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ConfigError(f"node.{key} must be an IP address, not {value!r}") from None


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


def _ranged(
    table: dict[str, Any], key: str, kind: type, default: float, low: float, high: float
) -> Any:
    """`table[key]` (or `default`), a `kind` between `low` and `high`."""
    if key not in table:
        return default
    value = typed(table, key, kind, "node")
    if not low <= value <= high:
        raise ConfigError(f"node.{key} must be between {low:g} and {high:g}")
    return value


def _port(table: dict[str, Any], key: str, default: int, lowest: int) -> int:
    if key not in table:
        return default
    value = typed(table, key, int, "node")
    if not lowest <= value <= 65535:
        raise ConfigError(f"node.{key} must be between {lowest} and 65535")
    return int(value)


def _by_id(value: Any, where: str, base: Path, data_dir: Path) -> Market | bytes:
    """The market of `[[markets]] id = ...` if this machine holds its descriptor (in
    `markets/` beside the config, or fetched earlier into the data dir's markets/),
    else the id, to be fetched from peers before the node starts."""
    if not isinstance(value, str) or not is_market_id(value.strip()):
        raise ConfigError(f"{where}: id must be a market id (64 hex characters)")
    mid = bytes.fromhex(value.strip())
    fetched = data_dir / "markets" / f"{mid.hex()}.toml"
    also = []
    try:  # a path the system cannot look at (too long, ...) holds nothing
        if fetched.is_file():
            with contextlib.suppress(MarketSpecError):
                also.append(read_descriptor(fetched))
        return resolve_market(mid.hex(), base=base, also=also)
    except (MarketSpecError, OSError):
        return mid


def _market(entry: Any, index: int, base: Path, data_dir: Path) -> Market | bytes:
    where = f"markets[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a table")
    if "id" in entry:
        if len(entry) != 1:
            raise ConfigError(f"{where}: id must be alone in its entry, with no other keys")
        return _by_id(entry["id"], where, base, data_dir)
    if "descriptor" in entry:
        if len(entry) != 1 or not isinstance(entry["descriptor"], str):
            raise ConfigError(f"{where}: descriptor must be a file path, with no other keys")
        try:
            return read_descriptor(base / entry["descriptor"])
        except MarketSpecError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    preset = entry.get("preset")
    if preset is not None:
        if preset != "devnet" or len(entry) != 1:
            raise ConfigError(f'{where}: the only preset is "devnet", with no other keys')
        return default_market()
    try:
        return Market(**entry)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except MessageError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def parse_config(data: dict[str, Any], base: Path) -> NodeConfig:
    """Build a NodeConfig from parsed TOML; relative paths are relative to `base`."""
    node = data.get("node")
    if not isinstance(node, dict):
        raise ConfigError("missing [node] section")
    unknown = sorted(set(node) - _NODE_KEYS)
    for key in unknown:
        if key in REMOVED_KEYS:
            raise ConfigError(REMOVED_KEYS[key])
    if unknown:
        raise ConfigError(f"unknown setting node.{unknown[0]}")
    for required in ("key_file", "data_dir"):
        if required not in node:
            raise ConfigError(f"missing node.{required}")
    key_file = base / typed(node, "key_file", str, "node")
    data_dir = base / typed(node, "data_dir", str, "node")
    passphrase = None
    if node.get("passphrase_file"):
        passphrase = base / typed(node, "passphrase_file", str, "node")
    fps = typed(node, "frames_per_second", float, "node") if "frames_per_second" in node else 2.0
    if not 0.1 <= fps <= 1000:
        raise ConfigError("node.frames_per_second must be between 0.1 and 1000")
    batching = typed(node, "batching", bool, "node") if "batching" in node else True
    sync_every = ANTI_ENTROPY_S
    if "sync_every_s" in node:
        sync_every = typed(node, "sync_every_s", float, "node")
    if not 0.5 <= sync_every <= 3600:
        raise ConfigError("node.sync_every_s must be between 0.5 and 3600")
    announce_every = ANNOUNCE_EVERY_S
    if "announce_every_s" in node:
        announce_every = typed(node, "announce_every_s", float, "node")
    if not 1.0 <= announce_every <= 86400:
        raise ConfigError("node.announce_every_s must be between 1 and 86400")
    keepalive_every = _ranged(node, "keepalive_every_s", float, KEEPALIVE_EVERY_S, 0.5, 60)
    keepalive_misses = _ranged(node, "keepalive_misses", int, KEEPALIVE_MISSES, 1, 100)
    redial_max = _ranged(node, "redial_max_s", float, REDIAL_MAX_S, 1, 3600)
    relay_service = typed(node, "relay_service", bool, "node") if "relay_service" in node else False
    reachability, relays = _reachability(node, relay_service)
    markets_raw = data.get("markets", [{"preset": "devnet"}])
    if not isinstance(markets_raw, list) or not markets_raw:
        raise ConfigError("markets must be a non-empty list of tables ([[markets]])")
    unknown_sections = sorted(set(data) - set(SECTIONS))
    if unknown_sections:
        raise ConfigError(f"unknown section [{unknown_sections[0]}]")
    roles = {k: v for k, v in data.items() if k in ROLE_SECTIONS}
    for name, section in roles.items():
        if not isinstance(section, dict):
            raise ConfigError(f"[{name}] must be a table")
    everywhere = "api_token_everywhere" in node
    listed = [_market(m, i, base, data_dir) for i, m in enumerate(markets_raw)]
    cfg = NodeConfig(
        key_file=key_file,
        data_dir=data_dir,
        passphrase_file=passphrase,
        listen=_addrs(node.get("listen", [DEFAULT_LISTEN]), "node.listen"),
        bootstrap=_addrs(node.get("bootstrap", []), "node.bootstrap"),
        announce=_addrs(node.get("announce", []), "node.announce"),
        api_port=_port(node, "api_port", 0, 0),
        api_listen=_bind_ip(node, "api_listen"),
        metrics_port=_port(node, "metrics_port", -1, -1),
        metrics_listen=_bind_ip(node, "metrics_listen"),
        api_token_everywhere=typed(node, "api_token_everywhere", bool, "node")
        if everywhere
        else False,
        frames_per_second=fps,
        batching=batching,
        sync_every_s=sync_every,
        announce_every_s=announce_every,
        keepalive_every_s=keepalive_every,
        keepalive_misses=keepalive_misses,
        redial_max_s=redial_max,
        relay_service=relay_service,
        reachability=reachability,
        relays=relays,
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
