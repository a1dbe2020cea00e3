"""The node config file's schema, one pydantic model per section: every key with its
type, bounds, default and description. The parsers (node/config.py, roles/wiring.py,
roles/workload.py) validate each section with it before building their results, and
docs/config.md's key tables are written from it (`p2p-market config reference`), so
a key cannot be accepted without being documented, nor documented with bounds that
are not the ones checked.

What a single key's value cannot tell is checked by the parsers after the schema:
settings that go together (node.reachability and node.relays, an off-loopback
address and node.api_token_everywhere) and those that depend on a market (a bid's
ttl against the market's max lifetime, workload.work on pow markets only).

`validate` (markets/schema.py) turns pydantic's multi-line ValidationError into
ConfigError, one line naming the key and the problem (`node.api_port must be an
integer between 0 and 65535, not 70000`).
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Final, Literal, TypeVar

import multiaddr
from pydantic import AfterValidator

from p2p_market.core import limits as L
from p2p_market.markets import schema
from p2p_market.markets.schema import Section, key, problem
from p2p_market.proving.backend import DEFAULT_EXTERNAL_TIMEOUT_S


class ConfigError(ValueError):
    """One line that names the bad setting."""


DEFAULT_PORT: Final = 4701
"""The listen port when none is given: fixed, so that a node's address (which peers
keep, and operators hand out) survives a restart. Port 0 (any free port) is still
possible, explicitly."""
DEFAULT_LISTEN: Final = f"/ip4/127.0.0.1/tcp/{DEFAULT_PORT}"
ANNOUNCE_EVERY_S: Final = 300.0
"""Default period of market announcements (node.announce_every_s)."""
ANTI_ENTROPY_S: Final = 30.0
"""Default period of the full sync with peers (node.sync_every_s)."""
KEEPALIVE_EVERY_S: Final = 5.0
KEEPALIVE_MISSES: Final = 3
REDIAL_MAX_S: Final = 60.0
DEFAULT_BID_TTL_MS: Final = 600_000
MAX_INPUT_BYTES: Final = 16 * 1024
MAX_INPUT_CHOICES: Final = 64
MAX_WORK: Final = 24
"""Highest pow difficulty a workload names per ask (2^24 hashes: seconds)."""


# -- checks a type alone does not make ------------------------------------------------


def _multiaddrs(values: list[str]) -> list[str]:
    for value in values:
        try:
            multiaddr.Multiaddr(value)
        except Exception as exc:  # the library raises several unrelated types
            raise problem(f": not a multiaddr: {value!r} ({exc})") from None
    return values


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise problem(f" must be an IP address, not {value!r}") from None


def _int_or_range(low: int, high: int) -> Callable[[Any], tuple[int, int]]:
    """An integer, or [low, high] (low <= high), within low..high: the pair."""

    def check(value: Any) -> tuple[int, int]:
        pair = [value, value] if type(value) is int else value
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not all(type(v) is int and low <= v <= high for v in pair)
            or pair[0] > pair[1]
        ):
            raise problem(f" must be an integer or [low, high] between {low} and {high}")
        return (pair[0], pair[1])

    return check


def _replicas(value: Any) -> tuple[tuple[int, float], ...]:
    """An integer, or weights by replica count: the (count, weight) pairs, sorted."""
    if type(value) is int:
        value = {str(value): 1.0}
    bad = problem(
        " must be an integer or weights by count, e.g. { 1 = 0.9, 2 = 0.1 },"
        f" counts 1..{L.MAX_REPLICAS}"
    )
    if not isinstance(value, dict) or not value:
        raise bad
    out = []
    for count, weight in value.items():
        if not count.isdigit() or not 1 <= int(count) <= L.MAX_REPLICAS:
            raise bad
        if type(weight) not in (int, float) or not 0 <= weight < math.inf:
            raise bad
        out.append((int(count), float(weight)))
    if sum(w for _, w in out) <= 0:
        raise bad
    return tuple(sorted(out))


def _inputs(value: Any) -> tuple[bytes, ...]:
    if (
        type(value) is not list
        or not 1 <= len(value) <= MAX_INPUT_CHOICES
        or not all(type(v) is str and 1 <= len(v.encode()) <= MAX_INPUT_BYTES for v in value)
    ):
        raise problem(
            f" must be a list of 1..{MAX_INPUT_CHOICES} non-empty strings"
            f" of at most {MAX_INPUT_BYTES} bytes"
        )
    return tuple(v.encode() for v in value)


def _file_path(value: Any) -> str:
    if type(value) is not str or not value:
        raise problem(" must be a file path")
    return value


def _preset(value: Any) -> str:
    if value != "devnet":
        raise problem(' must be "devnet", the only preset')
    return "devnet"


def _market_id(value: Any) -> bytes:
    from p2p_market.markets.descriptor import is_market_id

    if not isinstance(value, str) or not is_market_id(value.strip()):
        raise problem(" must be a market id (64 hex characters)")
    return bytes.fromhex(value.strip())


Addrs = Annotated[list[str], AfterValidator(_multiaddrs)]
IpAddress = Annotated[str, AfterValidator(_ip)]


class NodeSection(Section):
    """[node]: identity, network and storage."""

    REMOVED: ClassVar[dict[str, str]] = {
        "mdns": "node.mdns was removed: it was never used (py-libp2p's mDNS runs zeroconf"
        " in threads of its own); give peers with bootstrap instead",
    }

    key_file: str = key(
        "the node's Ed25519 key, PKCS#8 PEM (`p2p-market keys new`); the node's identity",
        kind="string (path)",
    )
    passphrase_file: str = key(
        (
            'file holding the passphrase of an encrypted `key_file`; `""` is the same as '
            "leaving it out"
        ),
        "",
        kind="string (path)",
        default_text="none",
    )
    data_dir: str = key(
        (
            "where the node keeps its SQLite log of accepted messages, its control API "
            "token `api.token`, its roles' store `roles.sqlite` (a requester's inputs of "
            "its asks and the proofs it verified, a prover's confidential inputs and large "
            "proofs, sealed with a key derived from the node key, each until its ask's "
            "retention horizon, so a restarted node finishes its work; and a prover's bid "
            "terms as last changed through the control API) (and, with "
            "`[workload]`, its events file); it must be writable. When its disk fills, the "
            "node refuses what it cannot store (the control API answers 507) and takes "
            "messages again once there is room"
        ),
        kind="string (path)",
    )
    listen: Addrs = key(
        "multiaddrs to listen on. The default port is 4701, fixed so that the node's "
        "address survives a restart (peers keep it; operators hand it out); `tcp/0` is "
        "any free port (a new one at each start); `/ip4/0.0.0.0/tcp/4701` to be "
        "reachable from other machines. A port in use stops the start with one line "
        "(`error: cannot start the node: cannot listen on … (Address already in use)…`)",
        [DEFAULT_LISTEN],
    )
    announce: Addrs = key(
        "the addresses told to peers (identify, peer exchange, the banner) instead of "
        "the listen addresses: the public address behind a NAT or port forward, or a "
        "`/dns4/NAME/tcp/PORT`. Left out, a wildcard listen address (0.0.0.0, ::) is "
        "told as each of the machine's interface addresses (loopback only when the "
        "machine has nothing else); loopback and unspecified addresses are never told "
        "to a peer that is not itself on loopback. Peers hand on by peer exchange, and "
        "dial from it, /ip4 and /ip6 addresses only: announce a `/dns4` name together "
        "with an IP address if peers should find the node that way too",
        [],
    )
    bootstrap: Addrs = key(
        "peers to dial, as multiaddrs ending in `/p2p/<peer id>` (`p2p-market keys "
        "show` and a node's ready line print them). `/dns4/NAME/tcp/PORT/p2p/ID` (and "
        "`/dns6`, `/dns`) are resolved at each dial; if no bootstrap peer answers at "
        "start (a name that does not resolve, a port closed), the node logs one error "
        "line naming the first and why, and keeps retrying. The node also remembers "
        "the peers it was connected to in `<data_dir>/peers.json` (at most 64) and "
        "dials them like its bootstrap peers, so a node restarted on another address, "
        "or one with no bootstrap list, finds the network again",
        [],
    )
    api_port: int = key(
        "port of the control API; `0` is any free port (printed in the ready line)",
        0,
        ge=0,
        le=65535,
    )
    api_listen: IpAddress = key(
        (
            "address of the control API. Anything but loopback needs `api_token_everywhere "
            "= true` (else: `error: node.api_listen = '0.0.0.0' is not loopback: set "
            "node.api_token_everywhere = true …`)"
        ),
        "127.0.0.1",
        kind="string (IP address)",
    )
    api_token_everywhere: bool = key(
        "the API token on every call of the control API, reads (`status`, `book`) "
        "included, and on every scrape of the metrics (`Authorization: Bearer`); "
        "required to bind either off loopback. Then any `Host` header is taken (the "
        "token, not the Host check, keeps web pages out), so the API may be named by a "
        "DNS name",
        False,
    )
    metrics_port: int = key(
        "port of the Prometheus metrics (`GET /metrics`; every metric, and a Grafana "
        "dashboard: [metrics.md](metrics.md)); `-1` is off, `0` any free port (the "
        "ready line gives `metrics_port` and `metrics_url`). `prover run "
        "--metrics-port N` without a config",
        -1,
        ge=-1,
        le=65535,
    )
    metrics_listen: IpAddress = key(
        (
            "address of the metrics; anything but loopback needs `api_token_everywhere = "
            "true` (Prometheus: `authorization: {credentials_file: <data_dir>/api.token}`)"
        ),
        "127.0.0.1",
        kind="string (IP address)",
    )
    frames_per_second: float = key(
        "the node's gossip budget: frames it may publish per second; envelopes beyond "
        "it wait and share the next frame; a full frame (64 envelopes or 256 KiB) goes "
        "at once, and a quarter-full one once its oldest has waited 0.25 s "
        "(`net/batcher.py`)",
        2.0,
        ge=0.1,
        le=1000,
    )
    batching: bool = key(
        "`false` turns batching off: every envelope leaves at once in a frame of its "
        "own, with no frame budget (`net/gossip.py` `unbatched`). Only for measuring "
        "what batching gains (`p2p-market bench net`): a busy market then spends a "
        "frame per envelope, and frames are what a network runs out of first",
        True,
    )
    mesh_degree: int = key(
        "peers each market's gossip mesh aims for (GossipSub's D; it keeps between D - "
        "D/3 and 2D). `0` sizes it to the market's peers: 3 up to 16 peers, one more "
        "each time they double, at most 6. Every node receives each frame from about D "
        "peers, so a small network wastes CPU with a large D; a large one is slower with "
        "a small D ([transport.md](transport.md))",
        0,
        ge=0,
        le=12,
    )
    muxer: Literal["yamux", "mplex"] = key(
        "stream multiplexer offered to peers; both ends must share one, so change it "
        "network-wide only ([docs/transport.md](transport.md))",
        "yamux",
    )
    gossip_idontwant: bool = key(
        "offer GossipSub v1.2 (`/meshsub/1.2.0`): a node that receives a frame tells "
        "its mesh peers IDONTWANT, so that they do not send it the same frame again "
        "([docs/transport.md](transport.md))",
        False,
    )
    sync_every_s: float = key(
        "anti-entropy period: this often the node also pulls from its peers what they "
        "hold and it lacks (and at once from every new peer)",
        ANTI_ENTROPY_S,
        ge=0.5,
        le=3600,
    )
    announce_every_s: float = key(
        "how often the node announces the markets it follows on "
        "`/p2p-market/markets/1` (also at start and a moment after a peer connects; "
        "market-v1.md §24)",
        ANNOUNCE_EVERY_S,
        ge=1,
        le=86400,
    )
    keepalive_every_s: float = key(
        "every connected peer is pinged this often (libp2p's `/ipfs/ping/1.0.0`) and "
        "given this long to answer",
        KEEPALIVE_EVERY_S,
        ge=0.5,
        le=60,
    )
    keepalive_misses: int = key(
        "a peer that misses this many pings in a row (a frozen process, a link that "
        "drops packets without closing) is disconnected, leaves the gossip mesh, and "
        "is redialled",
        KEEPALIVE_MISSES,
        ge=1,
        le=100,
    )
    redial_max_s: float = key(
        "a peer dropped as dead is redialled 1 s later, then after 2, 4, 8 … s, at "
        "most this far apart; at once when a new address of it is learnt; not after it "
        "connects again",
        REDIAL_MAX_S,
        ge=1,
        le=3600,
    )
    relay_service: bool = key(
        "serve circuit relay v2 (the hop side): take reservations from nodes that "
        'cannot be dialled (`reachability = "private"`) and relay connections to them, '
        "at most 64 reservations and 64 circuits at once, each circuit an hour and 256 "
        "MiB at most (py-libp2p also caps reservations and circuits per IP address). "
        "For a node others can dial; `docs/reachability.md`",
        False,
    )
    reachability: Literal["public", "private"] = key(
        '`"private"`: the node takes no inbound connection (behind a NAT without a '
        "port forward, or `listen = []`). It keeps a slot on each of `relays`, tells "
        "peers its circuit addresses (`<relay>/p2p-circuit`, in identify and so in "
        "peer exchange; its ready line's `addr` is one when it listens nowhere), and "
        "peers reach it through the relay: gossip, sync, confidential inputs and "
        "proofs delivered directly all run over the relayed connection. Needs `relays`",
        "public",
    )
    relays: Addrs = key(
        "the relay peers a private node reserves a slot on: TCP multiaddrs ending in "
        "`/p2p/<peer id>` of nodes with `relay_service = true`. They are dialled and "
        "redialled like bootstrap peers; a slot is taken again on every new connection "
        "to the relay (a relay that restarted forgot it) and renewed every 10 minutes; "
        "a relay that refuses is tried again after 2, 4, 8 … s, at most a minute "
        "apart; `status` shows each (`reachability.relays`: reserved, failures, the "
        "last error)",
        [],
    )


class MarketEntry(Section):
    """One [[markets]] entry in one of its short forms (the fourth, a descriptor's
    fields inline, is checked by core/messages.py Market)."""

    preset: Annotated[Any, AfterValidator(_preset)] = key(
        (
            '`"devnet"`, the only preset: the built-in devnet market '
            "(`p2p_market/devnet.py`); no other key in the same entry"
        ),
        None,
        kind="string",
        default_text="—",
    )
    descriptor: Annotated[str, AfterValidator(_file_path)] | None = key(
        "a market descriptor file (below); no other key in the same entry",
        None,
        kind="string (path)",
        default_text="—",
    )
    id: Annotated[Any, AfterValidator(_market_id)] = key(
        (
            "a market id alone: its descriptor is found in `markets/` next to the config "
            "or in the data dir's `markets/` (where an earlier fetch wrote it), else "
            "fetched from the `node.bootstrap` peers, with the artifacts a groth16 / plonk "
            "market pins, before the node starts (into `<data_dir>/markets/` and "
            "`<data_dir>/artifacts/`; market-v1.md §25); no other key in the same entry"
        ),
        None,
        kind="string (64 hex)",
        default_text="—",
    )


class CommandKeys(Section):
    """External proof commands, of [prover] and [requester]; "" is no command."""

    verify_cmd: str = key(
        (
            "external markets: the verify command template (as in `[prover]`); set it to "
            "run a command you have read rather than the one the market's creator chose"
        ),
        "",
        default_text="each market's `verifier`",
    )
    check_cmd: str = key(
        "accepted and its template checked, but the requester role does not run it",
        "",
        default_text="none",
    )
    timeout_s: float = key(
        "the longest an external command may run", DEFAULT_EXTERNAL_TIMEOUT_S, gt=0
    )


class RequesterSection(CommandKeys):
    """[requester]: verify and receipt the node's own asks."""

    award_lag_ms: int = key(
        "how long after a commit window ends the node waits for commits signed inside "
        "it before it awards the winners (capped at the market's `skew_ms`). The award "
        "is final wherever it arrives and starts the winners proving, so every proof "
        "starts this much after the window. A commit that reaches this node after its "
        "award loses; the whole skew (e.g. `2000`) takes in provers whose clocks lag "
        "by up to the skew, at that cost in latency (protocols/market-v1.md §12)",
        L.DEFAULT_AWARD_LAG_MS,
        ge=0,
        le=L.MAX_SKEW_MS,
    )


class ProverSection(Section):
    """[prover]: sell proofs in one market."""

    market: str = key(
        '`"devnet"`, the path of a descriptor file, or the 64-hex id of a market in '
        "`[[markets]]`, in a descriptor file in `markets/` next to the config, or "
        "fetched earlier into the data dir; an id known nowhere here (or a groth16 / "
        "plonk market whose artifacts are missing) is fetched from the "
        "`node.bootstrap` peers before the node starts (market-v1.md §25)"
    )
    price: int = key(
        "the bid's price: base units per proof, per unit of work (paid as bid: an ask "
        "of size s pays s \N{MULTIPLICATION SIGN} price; market-v1.md §5.3)",
        ge=0,
        le=L.MAX_UINT,
    )
    proof_time: int = key(
        "ms promised per proof, for any ask it takes: the deadline after a win", ge=1, le=L.MAX_UINT
    )
    capacity: int = key("proofs at once (the bid's parallel slots)", 1, ge=1, le=L.MAX_CAPACITY)
    max_size: int = key(
        "the largest ask size taken, in the market's units of work: pow counts "
        "2^(d \N{MINUS SIGN} "
        "D) for inputs naming difficulty d in a market of difficulty D; groth16 / "
        "plonk asks are all size 1. A winner whose confidential inputs need more than "
        "the ask declared attests `misdeclared_size:` instead of proving",
        1,
        ge=1,
        le=L.MAX_SIZE,
    )
    bid_ttl_ms: int | None = key(
        (
            "the bid's lifetime; it is renewed at half of it. Longer than the market's "
            "`max_lifetime_ms` is an error (every node would refuse the bid)"
        ),
        None,
        ge=1000,
        le=L.MAX_UINT,
        kind="integer 1000..the market's `max_lifetime_ms`",
        default_text=f"`{DEFAULT_BID_TTL_MS}`, or the market's `max_lifetime_ms` if shorter",
    )
    backend: Literal["pow", "external", "groth16", "plonk"] | None = key(
        (
            '`"pow"`, `"external"`, `"groth16"` or `"plonk"`; only a check: it must be the '
            "market's `proof_system`"
        ),
        None,
        kind="string",
        default_text="the market's",
    )
    prove_cmd: str = key(
        (
            'external markets (required there): the prove command template, e.g. `"zkvm '
            'prove --input {inputs} --out {proof}"`; placeholders `{inputs}`, `{proof}`, '
            "`{workdir}`; run without a shell (`p2p_market/proving/external.py`)"
        ),
        "",
        default_text="none",
    )
    verify_cmd: str = key(
        "external markets: the verify command template", "", default_text="the market's `verifier`"
    )
    check_cmd: str = key(
        (
            "external markets: input check run before proving (exit 0: valid, 1: invalid "
            "inputs, attested as such)"
        ),
        "",
        default_text="none",
    )
    size_cmd: str = key(
        (
            "external markets: prints the work the inputs need (a decimal integer, in the "
            "market's units, e.g. a zkVM's cycles divided by a segment size), run before "
            "proving; inputs needing more than the ask declares are attested "
            "`misdeclared_size:` instead of proven (market-v1.md §5.3). Without it nobody "
            "checks an external ask's declared size"
        ),
        "",
        default_text="none",
    )
    timeout_s: float = key(
        "the longest an external command may run", DEFAULT_EXTERNAL_TIMEOUT_S, gt=0
    )


IntRange = tuple[int, int]


class WorkloadSection(Section):
    """[workload]: asks at a seeded random rate (roles/workload.py)."""

    market: str | None = key(
        "as `[prover] market`", None, kind="string", default_text="the first `[[markets]]` entry"
    )
    rate: float = key("asks per second (Poisson arrivals)", gt=0, le=1000)
    seed: int = key("the schedule and the asks' terms follow from it", 0)
    duration_s: float = key(
        "stop placing asks after this long; `0` never stops", 0.0, ge=0, le=7 * 86400
    )
    start_file: Annotated[Any, AfterValidator(_file_path)] = key(
        (
            'wait until this file exists; a JSON `{"start_ms": …}` in it is the '
            "schedule's origin (else: when the node finds the file)"
        ),
        None,
        kind="string (path)",
        default_text="none",
    )
    max_price: Annotated[Any, AfterValidator(_int_or_range(0, L.MAX_UINT))] = key(
        (
            "each ask's price cap per unit of work: an ask of size s (read off its inputs) "
            "offers s times it"
        ),
        (10, 10),
        kind="integer or `[low, high]`, ≥ 0",
        default_text="`10`",
    )
    max_proof_time: Annotated[Any, AfterValidator(_int_or_range(1, L.MAX_UINT))] = key(
        (
            "each ask's proof-time cap, ms (an ask whose cap is above the market's "
            "`max_lifetime_ms` is refused when placed)"
        ),
        (10_000, 10_000),
        kind="integer or `[low, high]`, ≥ 1",
        default_text="`10000`",
    )
    time_share: float = key(
        "share of asks that prefer time (the rest prefer cost)", 0.0, ge=0, le=1
    )
    replicas: Annotated[Any, AfterValidator(_replicas)] = key(
        "proofs wanted per ask, e.g. `{ 1 = 0.9, 2 = 0.1 }`",
        ((1, 1.0),),
        kind=f"integer 1..{L.MAX_REPLICAS}, or a table of weights by count",
        default_text="`1`",
    )
    confidential_share: float = key(
        "share of asks whose inputs go to the winners only", 0.0, ge=0, le=1
    )
    ttl_ms: Annotated[Any, AfterValidator(_int_or_range(1000, L.MAX_UINT))] = key(
        "each ask's lifetime (a `[low, high]` pair is accepted too, and only `low` is used)",
        (30_000, 30_000),
        kind="integer 1000..the market's `max_lifetime_ms`",
        default_text="`30000`",
    )
    work: Annotated[Any, AfterValidator(_int_or_range(0, MAX_WORK))] = key(
        (
            "`pow` markets only: a `difficulty=N` first line in each ask's inputs (else "
            "the market's difficulty applies)"
        ),
        None,
        kind=f"integer or `[low, high]`, 0..{MAX_WORK}",
        default_text="none",
    )
    input_bytes: float = key(
        "random payload bytes per ask (a fraction is dropped)", 64, ge=0, le=MAX_INPUT_BYTES
    )
    inputs: Annotated[Any, AfterValidator(_inputs)] = key(
        (
            "each ask's inputs, drawn from this list instead of `work` and `input_bytes` "
            '(a groth16 / plonk market\'s circuit inputs, e.g. `[\'{"a":"3","b":"11"}\']`)'
        ),
        (),
        kind=f"list of 1..{MAX_INPUT_CHOICES} strings of 1..{MAX_INPUT_BYTES} bytes",
        default_text="none",
    )
    events_file: Annotated[Any, AfterValidator(_file_path)] = key(
        "where every event of the node's own asks is appended, one JSON line each",
        None,
        kind="string (path)",
        default_text="`<data_dir>/workload.jsonl`",
    )


SECTIONS: Final[dict[str, type[Section]]] = {
    "node": NodeSection,
    "markets": MarketEntry,
    "prover": ProverSection,
    "requester": RequesterSection,
    "workload": WorkloadSection,
}
"""Every section of a node config, in the file's order; any other is an error."""
ROLE_SECTIONS: Final = ("prover", "requester", "workload")
"""Sections passed through to roles/wiring.py."""

S = TypeVar("S", bound=Section)


def validate(model: type[S], table: Any, where: str) -> S:
    """`table` checked by `model` (markets/schema.py); ConfigError, one line."""
    return schema.validate(model, table, where, ConfigError)
